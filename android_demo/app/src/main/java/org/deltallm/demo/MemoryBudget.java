package org.deltallm.demo;

import java.util.Locale;

/**
 * Whether a program fits the memory the phone can give, before loading it: the weights XNNPACK
 * repacks into its own layout at load (about the program file's size; the mapped file itself is
 * page cache the system can reclaim), the attention state at max context (the manifest's
 * attention_state.bytes: the KV cache or the delta state the program allocates whole), and 64 MB for
 * activations and the runtime. A program being replaced is closed before the new one loads, so
 * what it holds counts as available.
 */
final class MemoryBudget {
    static final long MARGIN_BYTES = 64L << 20;

    private MemoryBudget() {}

    static long need(long pteBytes, long stateBytes) {
        return pteBytes + stateBytes + MARGIN_BYTES;
    }

    static long need(ModelFiles.Program p) {
        return need(p.pte.length(), p.stateBytes);
    }

    /** Null when `next` fits in availBytes plus what `replaced` (null: none) frees; else a message. */
    static String problem(ModelFiles.Program next, ModelFiles.Program replaced, long availBytes) {
        return problem(next.pte.length(), next.stateBytes, replaced == null ? 0 : need(replaced), availBytes);
    }

    static String problem(long pteBytes, long stateBytes, long freedBytes, long availBytes) {
        long need = need(pteBytes, stateBytes);
        long avail = availBytes + freedBytes;
        if (need <= avail) {
            return null;
        }
        return String.format(Locale.ROOT, "Not enough memory: the program needs %d MB (weights %d MB + attention "
                + "state at max context %d MB + 64 MB), the phone can give %d MB", need >> 20, pteBytes >> 20,
                stateBytes >> 20, avail >> 20);
    }
}
