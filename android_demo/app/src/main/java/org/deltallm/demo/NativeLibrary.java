package org.deltallm.demo;

/**
 * Loads libdeltallm_jni once. On Android it is packaged with the app (System.loadLibrary); the host
 * JVM tests point the system property {@code deltallm.jni} at the x86-64 build.
 */
final class NativeLibrary {
    private static boolean loaded;

    private NativeLibrary() {}

    static synchronized void load() {
        if (loaded) {
            return;
        }
        String path = System.getProperty("deltallm.jni");
        if (path != null && !path.isEmpty()) {
            System.load(path);
        } else {
            System.loadLibrary("deltallm_jni");
        }
        loaded = true;
    }
}
