package org.deltallm.demo;

/**
 * The app's bridge to the native runner core (libdeltallm_jni): one loaded program. {@link #generate}
 * blocks on the calling (background) thread and streams tokens; {@link #stop} may be called from any
 * thread. Each generate call is a fresh sequence from position 0, so an old answer never leaks into
 * the next turn. Not thread-safe apart from stop().
 */
public final class LlmEngine implements AutoCloseable {
    /** Receives each generated token; return false to stop. */
    public interface TokenListener {
        boolean onToken(int tokenId);
    }

    private long handle;
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
        if (promptIds.length == 0) {
            throw new LlmException("the prompt is empty");
        }
        if (maxNewTokens < 0 || !(temperature >= 0f)) {
            throw new LlmException("max new tokens must be >= 0 and temperature >= 0");
        }
        return Figures.fromNative(nativeGenerate(live(), promptIds, maxNewTokens, temperature, seed, true, listener));
    }

    /** Benchmark mode: the result JSON (protocol deltallm-bench/2, runner "android"). */
    public String bench(int[] promptIds, int[] promptLengths, int[] decodeLengths, int warmup, int reps,
                        double startupMs) throws LlmException {
        return nativeBench(live(), promptIds, promptLengths, decodeLengths, warmup, reps, startupMs);
    }

    public void stop() {
        long h = handle;
        if (h != 0) {
            nativeStop(h);
        }
    }

    @Override
    public synchronized void close() {
        if (handle != 0) {
            nativeClose(handle);
            handle = 0;
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
    private static native double[] nativeGenerate(long handle, int[] prompt, int maxNew, float temperature, long seed,
                                                  boolean stopAtEos, TokenListener listener) throws LlmException;
    private static native void nativeStop(long handle);
    private static native String nativeBench(long handle, int[] prompt, int[] promptLengths, int[] decodeLengths,
                                             int warmup, int reps, double startupMs) throws LlmException;
    private static native void nativeClose(long handle);
}
