package org.deltallm.demo;

import java.io.File;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The benchmark mode without Android: {@code java org.deltallm.demo.BenchMain FILES_DIR key=value...}
 * runs exactly what BenchmarkActivity runs (the virtual device's `am` starts it, as a phone starts
 * the activity). Exit code 0 when the result was written, 1 when the marker reports an error.
 */
public final class BenchMain {
    private BenchMain() {}

    public static void main(String[] args) {
        if (args.length < 1) {
            System.err.println("usage: BenchMain FILES_DIR key=value...");
            System.exit(2);
        }
        Map<String, String> extras = new LinkedHashMap<>();
        for (int i = 1; i < args.length; i++) {
            int eq = args[i].indexOf('=');
            if (eq > 0) {
                extras.put(args[i].substring(0, eq), args[i].substring(eq + 1));
            }
        }
        System.exit(BenchRunner.run(new File(args[0]), extras) ? 0 : 1);
    }
}
