package org.deltallm.demo;

/**
 * The app's bridge to the native runner core (libdeltallm_jni): one loaded program. {@link #generate}
 * blocks on the calling (background) thread and streams tokens; {@link #stop} and {@link #close} may
 * be called from any thread (a stop racing a close is harmless: both hold the engine's lock, and a
 * closed engine ignores stop). The native session keeps what its cache holds: a request that
 * repeats the previous one's ids (a chat's history) prefills only the new part; {@link #reset}
 * forgets it (a new chat).
 */
public final class LlmEngine implements AutoCloseable {
    /** Receives each generated token; return false to stop. */
    public interface TokenListener {
        boolean onToken(int tokenId);
    }

    private volatile long handle;
    private final long[] info;

    private LlmEngine(long handle) {
        this.handle = handle;
        this.info = nativeInfo(handle);
    }

    /** Loads a program; threads 0 keeps the runtime's default (the performance cores). */
    public static LlmEngine load(String ptePath, int threads) throws LlmException {
        NativeLibrary.load();
        if (threads < 0) {
            throw new LlmException("threads must be >= 0, got " + threads);
        }
        return new LlmEngine(nativeLoad(ptePath, threads));
    }

    public int vocabSize() { return (int) info[0]; }
    public int maxSeqLen() { return (int) info[1]; }
    public int maxContextLen() { return (int) info[2]; }
    public int layers() { return (int) info[3]; }
    public int bosId() { return (int) info[4]; }
    public boolean deltaAttention() { return info[5] != 0; }
    public int threads() { return (int) info[6]; }
    public double loadMs() { return info[7] / 1000.0; }

    public int[] eosIds() {
        int[] eos = new int[info.length - 8];
        for (int i = 0; i < eos.length; i++) {
            eos[i] = (int) info[8 + i];
        }
        return eos;
    }

    /** Generates up to maxNewTokens after the prompt; temperature 0 is greedy. */
    public Figures generate(int[] promptIds, int maxNewTokens, float temperature, long seed, TokenListener listener)
            throws LlmException {
        return generate(promptIds, 0, maxNewTokens, temperature, seed, listener);
    }

    /**
     * As above, for a chat: promptIds is the whole conversation, whose first `keep` ids (the system
     * prompt) the session keeps a restore point at (a delta program rewinds there when older turns
     * are dropped).
     */
    public Figures generate(int[] promptIds, int keep, int maxNewTokens, float temperature, long seed,
                            TokenListener listener) throws LlmException {
        if (promptIds.length == 0) {
            throw new LlmException("the prompt is empty");
        }
        if (maxNewTokens < 0 || !(temperature >= 0f)) {
            throw new LlmException("max new tokens must be >= 0 and temperature >= 0");
        }
        if (keep < 0 || keep > promptIds.length) {
            throw new LlmException("keep must be in [0, prompt length], got " + keep);
        }
        return Figures.fromNative(nativeGenerate(live(), promptIds, new int[0], keep, maxNewTokens, temperature, seed,
                true, listener));
    }

    /** Forgets what the cache holds: the next request prefills from position 0. */
    public synchronized void reset() throws LlmException {
        nativeReset(live());
    }

    /** Benchmark mode: the result JSON (protocol deltallm-bench/2, runner "android"). */
    public String bench(int[] promptIds, int[] promptLengths, int[] decodeLengths, int warmup, int reps,
                        double startupMs) throws LlmException {
        return nativeBench(live(), promptIds, promptLengths, decodeLengths, warmup, reps, startupMs);
    }

    public synchronized void stop() {
        if (handle != 0) {
            nativeStop(handle);
        }
    }

    /**
     * Frees the program. Call it when no generate or bench runs (the app's worker does it on its own
     * thread); a stop from another thread meanwhile waits for the lock and then finds it closed.
     */
    @Override
    public synchronized void close() {
        if (handle != 0) {
            long h = handle;
            handle = 0;
            nativeClose(h);
        }
    }

    private long live() throws LlmException {
        if (handle == 0) {
            throw new LlmException("the engine is closed");
        }
        return handle;
    }

    private static native long nativeLoad(String pte, int threads) throws LlmException;
    private static native long[] nativeInfo(long handle);
    private static native double[] nativeGenerate(long handle, int[] prompt, int[] turnStarts, int keep, int maxNew,
                                                  float temperature, long seed, boolean stopAtEos,
                                                  TokenListener listener) throws LlmException;
    private static native void nativeReset(long handle);
    private static native void nativeStop(long handle);
    private static native String nativeBench(long handle, int[] prompt, int[] promptLengths, int[] decodeLengths,
                                             int warmup, int reps, double startupMs) throws LlmException;
    private static native void nativeClose(long handle);
}
