package org.deltallm.demo;

import static org.junit.Assume.assumeTrue;

import java.io.File;

/**
 * Where the host JVM tests find the native library and programs: system properties set by
 * tests/test_android_jvm.py (deltallm.jni, deltallm.smollm2 = a folder with the SmolLM2 8da8w
 * program, deltallm.tiny_delta / deltallm.tiny_dense = tiny programs). A Gradle `test` run without
 * them skips the native tests; the pytest driver fails when any test was skipped.
 */
final class NativeTestSupport {
    private NativeTestSupport() {}

    static File dir(String property) {
        String v = System.getProperty("deltallm." + property);
        String jni = System.getProperty("deltallm.jni");
        assumeTrue("deltallm." + property + " is not set", v != null && jni != null && !jni.isEmpty());
        return new File(v);
    }

    static File pte(String property) {
        File[] ptes = dir(property).listFiles((d, n) -> n.endsWith(".pte"));
        if (ptes == null || ptes.length != 1) {
            throw new IllegalStateException("expected one .pte in " + dir(property));
        }
        return ptes[0];
    }
}
