package org.deltallm.demo;

/** The chat screen's settings, validated: each bad value names itself. */
public final class GenerationSettings {
    public final float temperature;
    public final int maxNewTokens;
    public final int threads;
    public final String systemPrompt;
    public final long seed;

    public GenerationSettings(float temperature, int maxNewTokens, int threads, String systemPrompt, long seed) {
        if (!(temperature >= 0f && temperature <= 2f)) {
            throw new IllegalArgumentException("temperature must be in [0, 2], got " + temperature);
        }
        if (maxNewTokens < 1 || maxNewTokens > 4096) {
            throw new IllegalArgumentException("max new tokens must be in [1, 4096], got " + maxNewTokens);
        }
        if (threads < 0 || threads > 16) {
            throw new IllegalArgumentException("threads must be in [0, 16] (0: the runtime's default), got " + threads);
        }
        this.temperature = temperature;
        this.maxNewTokens = maxNewTokens;
        this.threads = threads;
        this.systemPrompt = systemPrompt == null ? "" : systemPrompt;
        this.seed = seed;
    }

    /** The settings as strings (the app persists them in SharedPreferences). */
    public java.util.Map<String, String> toMap() {
        java.util.Map<String, String> m = new java.util.LinkedHashMap<>();
        m.put("temperature", Float.toString(temperature));
        m.put("max_new_tokens", Integer.toString(maxNewTokens));
        m.put("threads", Integer.toString(threads));
        m.put("system_prompt", systemPrompt);
        m.put("seed", Long.toString(seed));
        return m;
    }

    /** Settings read back; a missing or bad value falls back to the default (a stale file never stops the app). */
    public static GenerationSettings fromMap(java.util.Map<String, ?> m) {
        GenerationSettings d = defaults();
        try {
            return new GenerationSettings(Float.parseFloat(str(m, "temperature", Float.toString(d.temperature))),
                    Integer.parseInt(str(m, "max_new_tokens", Integer.toString(d.maxNewTokens))),
                    Integer.parseInt(str(m, "threads", Integer.toString(d.threads))),
                    str(m, "system_prompt", d.systemPrompt), Long.parseLong(str(m, "seed", Long.toString(d.seed))));
        } catch (IllegalArgumentException e) {
            return d;
        }
    }

    private static String str(java.util.Map<String, ?> m, String k, String dflt) {
        Object v = m.get(k);
        return v == null ? dflt : v.toString();
    }

    public static GenerationSettings defaults() {
        return new GenerationSettings(0f, 256, 0, "", 0);
    }

    public GenerationSettings withTemperature(float t) {
        return new GenerationSettings(t, maxNewTokens, threads, systemPrompt, seed);
    }

    public GenerationSettings withMaxNewTokens(int n) {
        return new GenerationSettings(temperature, n, threads, systemPrompt, seed);
    }

    public GenerationSettings withThreads(int n) {
        return new GenerationSettings(temperature, maxNewTokens, n, systemPrompt, seed);
    }

    public GenerationSettings withSystemPrompt(String s) {
        return new GenerationSettings(temperature, maxNewTokens, threads, s, seed);
    }
}
