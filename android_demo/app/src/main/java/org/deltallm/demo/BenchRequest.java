package org.deltallm.demo;

import java.util.Map;

/**
 * The benchmark mode's intent extras (device/android_protocol.py defines them): run_id, pte,
 * tokenizer, prompt_lengths "32,128", decode_lengths "16", warmup, reps, threads, prompt_ids (a
 * file of little-endian int32 ids the host made from real text). Bad extras name themselves.
 */
public final class BenchRequest {
    public final String runId;
    public final String pte;
    public final String tokenizer;
    public final int[] promptLengths;
    public final int[] decodeLengths;
    public final int warmup;
    public final int reps;
    public final int threads;
    public final String promptIds;

    private BenchRequest(Map<String, String> x) {
        runId = runId(x);
        pte = required(x, "pte");
        tokenizer = x.getOrDefault("tokenizer", "");
        promptLengths = ints(x, "prompt_lengths", "32", 1);
        decodeLengths = ints(x, "decode_lengths", "16", 0);
        warmup = ints(x, "warmup", "1", 0)[0];
        reps = ints(x, "reps", "3", 1)[0];
        threads = ints(x, "threads", "0", 0)[0];
        promptIds = required(x, "prompt_ids");
    }

    public static BenchRequest from(Map<String, String> extras) {
        return new BenchRequest(extras);
    }

    /** The run id (file names), checked on its own so a failure can still be reported under it. */
    public static String runId(Map<String, String> x) {
        String id = required(x, "run_id");
        if (!id.matches("[A-Za-z0-9_.-]{1,128}")) {
            throw new IllegalArgumentException("run_id '" + id + "': letters, digits, _ . - only");
        }
        return id;
    }

    private static String required(Map<String, String> x, String key) {
        String v = x.get(key);
        if (v == null || v.isEmpty()) {
            throw new IllegalArgumentException("extra '" + key + "' is missing");
        }
        return v;
    }

    private static int[] ints(Map<String, String> x, String key, String dflt, int min) {
        String[] parts = x.getOrDefault(key, dflt).split(",");
        int[] out = new int[parts.length];
        for (int i = 0; i < parts.length; i++) {
            try {
                out[i] = Integer.parseInt(parts[i].trim());
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("extra '" + key + "': '" + parts[i] + "' is not an integer");
            }
            if (out[i] < min) {
                throw new IllegalArgumentException("extra '" + key + "': " + out[i] + " < " + min);
            }
        }
        return out;
    }
}
