package org.deltallm.demo;

import java.util.Locale;

/** What one answer cost: the figures under every chat answer, and the JVM tests' checks. */
public final class Figures {
    public final int promptTokens;
    public final int generatedTokens;
    public final double ttftMs;
    public final double prefillTps;
    public final double decodeTps;
    public final double peakRssMb;
    /** S_m / S_c of the delta kernel, NaN for dense attention. */
    public final double prefillSm;
    public final double prefillSc;
    public final double decodeSm;
    public final double decodeSc;
    public final boolean stopped;
    /** Prompt tokens whose keys and values came from the cache (earlier turns), and the ones run. */
    public final int reusedTokens;
    public final int prefilledTokens;

    Figures(double[] v) {
        promptTokens = (int) v[0];
        generatedTokens = (int) v[1];
        ttftMs = v[2];
        prefillTps = v[3];
        decodeTps = v[4];
        peakRssMb = v[5];
        prefillSm = v[6];
        prefillSc = v[7];
        decodeSm = v[8];
        decodeSc = v[9];
        stopped = v[10] != 0;
        reusedTokens = v.length > 12 ? (int) v[11] : 0;
        prefilledTokens = v.length > 12 ? (int) v[12] : promptTokens;
    }

    static Figures fromNative(double[] v) {
        return new Figures(v);
    }

    public boolean hasSparsity() {
        return !Double.isNaN(prefillSc);
    }

    /** One line, e.g. "TTFT 210 ms · prefill 152.3 tok/s · decode 31.0 tok/s · S_c 57% / 41%". */
    public String format() {
        StringBuilder s = new StringBuilder(String.format(Locale.ROOT,
                "%d+%d tokens · TTFT %.0f ms · prefill %.1f tok/s · decode %.1f tok/s", promptTokens,
                generatedTokens, ttftMs, prefillTps, decodeTps));
        if (reusedTokens > 0) {
            s.append(String.format(Locale.ROOT, " · %d reused", reusedTokens));
        }
        if (hasSparsity()) {
            s.append(String.format(Locale.ROOT, " · S_c %.0f%%", 100 * prefillSc));
            if (!Double.isNaN(decodeSc)) {
                s.append(String.format(Locale.ROOT, " / %.0f%%", 100 * decodeSc));
            }
        }
        if (stopped) {
            s.append(" · stopped");
        }
        return s.toString();
    }
}
