package org.deltallm.demo;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * A multi-turn conversation with one program: renders the history with the model's chat template,
 * drops the oldest turns when the prompt would not fit the context, streams the answer, stops at
 * the end-of-turn token or on {@link #stop()}, and records the answer (what was shown) in the history.
 */
public final class ChatSession {
    /** Streaming text of the answer, as it becomes complete. */
    public interface Listener {
        void onText(String fresh);
    }

    private final LlmEngine engine;
    private final Tokenizer tokenizer;
    private final ChatTemplate template;
    private final List<ChatTemplate.Turn> turns = new ArrayList<>();
    private volatile boolean stopRequested;

    private final String defaultSystem;

    public ChatSession(LlmEngine engine, Tokenizer tokenizer, ChatTemplate template) {
        this(engine, tokenizer, template, null);
    }

    /** defaultSystem: the system prompt used when the settings' is empty (the model template's own). */
    public ChatSession(LlmEngine engine, Tokenizer tokenizer, ChatTemplate template, String defaultSystem) {
        this.engine = engine;
        this.tokenizer = tokenizer;
        this.template = template;
        this.defaultSystem = defaultSystem;
    }

    private String system(GenerationSettings s) {
        return s.systemPrompt.trim().isEmpty() && defaultSystem != null ? defaultSystem : s.systemPrompt;
    }

    public List<ChatTemplate.Turn> history() {
        return Collections.unmodifiableList(turns);
    }

    /** A new chat: forgets the history and what the engine's cache holds. */
    public void clear() throws LlmException {
        turns.clear();
        engine.reset();
    }

    public void stop() {
        stopRequested = true;
        engine.stop();
    }

    /** Prompt ids for the history plus `user`, oldest turns dropped to leave room for the answer. */
    int[] promptFor(String user, GenerationSettings s) throws LlmException {
        List<ChatTemplate.Turn> window = new ArrayList<>(turns);
        window.add(new ChatTemplate.Turn("user", user));
        while (true) {
            int[] ids = withBos(tokenizer.encode(template.render(system(s), window)));
            if (ids.length + s.maxNewTokens <= engine.maxContextLen()) {
                return ids;
            }
            if (window.size() <= 1) {
                throw new LlmException("the message is too long: " + ids.length + " prompt tokens + "
                        + s.maxNewTokens + " new tokens exceed the program's context of " + engine.maxContextLen());
            }
            window.remove(0);
            if (!window.isEmpty() && window.get(0).role.equals("assistant")) {
                window.remove(0);
            }
        }
    }

    private int[] withBos(int[] ids) {
        int bos = engine.bosId();
        if (template != ChatTemplate.PLAIN || bos < 0 || (ids.length > 0 && ids[0] == bos)) {
            return ids;
        }
        int[] out = new int[ids.length + 1];
        out[0] = bos;
        System.arraycopy(ids, 0, out, 1, ids.length);
        return out;
    }

    /** Answers `user` (blocking; call from a background thread). */
    public Figures send(String user, GenerationSettings s, Listener listener) throws LlmException {
        stopRequested = false;
        int[] prompt = promptFor(user, s);
        final int end = template.endOfTurn == null ? -1 : tokenizer.tokenId(template.endOfTurn);
        final int[] eos = engine.eosIds();
        final Tokenizer.Stream stream = tokenizer.new Stream(true);
        Figures f = engine.generate(prompt, systemLength(prompt, s), s.maxNewTokens, s.temperature, s.seed, id -> {
            if (id == end || contains(eos, id) || stopRequested) {
                return false;
            }
            String fresh = stream.push(id);
            if (!fresh.isEmpty() && listener != null) {
                listener.onText(fresh);
            }
            return !stopRequested;
        });
        turns.add(new ChatTemplate.Turn("user", user));
        turns.add(new ChatTemplate.Turn("assistant", stream.text()));
        return f;
    }

    /** The ids of the system part (kept when older turns are dropped), when they start the prompt. */
    private int systemLength(int[] prompt, GenerationSettings s) {
        if (template == ChatTemplate.PLAIN) {
            return 0;
        }
        String text = template.systemPrefix(system(s));
        if (text.isEmpty()) {
            return 0;
        }
        int[] head = tokenizer.encode(text);
        if (head.length > prompt.length) {
            return 0;
        }
        for (int i = 0; i < head.length; i++) {
            if (head[i] != prompt[i]) {
                return 0;
            }
        }
        return head.length;
    }

    private static boolean contains(int[] xs, int x) {
        for (int v : xs) {
            if (v == x) {
                return true;
            }
        }
        return false;
    }
}
