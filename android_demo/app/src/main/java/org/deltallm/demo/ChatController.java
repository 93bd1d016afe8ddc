package org.deltallm.demo;

import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Executor;
import java.util.concurrent.TimeUnit;

/**
 * What outlives a screen: the loaded program (engine, tokenizer, chat), the transcript, the busy
 * state and the one worker thread that loads and generates. The activity attaches a {@link View}
 * when it is created and detaches it when it is destroyed; a rotation or any other configuration
 * change therefore keeps the model loaded and the conversation shown, and a load never starts while
 * another runs (one worker, in order). Only {@link #shutdown} (the activity finishing for good)
 * frees the program. No android.* here: the host JVM tests drive it as the activity would.
 */
public final class ChatController {
    /** The screen's side; every call arrives on the executor given to {@link #attach}. */
    public interface View {
        /** busy: loading or generating (no new load or message); generating: an answer streams (Stop). */
        void onState(String status, String transcript, boolean busy, boolean loaded, boolean generating);

        void onText(String fresh);
    }

    /** Opens a program (the real one loads through JNI; tests may count or fail loads). */
    public interface Opener {
        Loaded open(ModelFiles.Program p, int threads) throws LlmException;
    }

    /** A loaded program and what belongs to it. */
    public static final class Loaded {
        final LlmEngine engine;
        final Tokenizer tokenizer;
        final ChatSession chat;

        public Loaded(LlmEngine engine, Tokenizer tokenizer, ChatSession chat) {
            this.engine = engine;
            this.tokenizer = tokenizer;
            this.chat = chat;
        }
    }

    private static ChatController instance;

    private final ExecutorService worker = Executors.newSingleThreadExecutor(r -> new Thread(r, "deltallm-worker"));
    private final Opener opener;
    private final StringBuilder transcript = new StringBuilder();
    private volatile Loaded loaded;
    private volatile ModelFiles.Program current;
    private volatile boolean busy;
    private volatile boolean generating;
    private volatile String status = "";
    private View view;
    private Executor ui = Runnable::run;

    public ChatController(Opener opener) {
        this.opener = opener;
    }

    /** The process-wide controller (created with the JNI opener on first use). */
    public static synchronized ChatController get() {
        if (instance == null) {
            instance = new ChatController((p, threads) -> {
                LlmEngine engine = LlmEngine.load(p.pte.getPath(), threads);
                try {
                    Tokenizer tok = Tokenizer.load(p.tokenizer.getPath());
                    return new Loaded(engine, tok, new ChatSession(engine, tok, ChatTemplate.detect(p.architecture, tok),
                            p.defaultSystem));
                } catch (LlmException | RuntimeException e) {
                    engine.close();
                    throw e;
                }
            });
        }
        return instance;
    }

    public synchronized void attach(View v, Executor uiThread) {
        view = v;
        ui = uiThread;
        publish();
    }

    /** The screen is going away (rotation included): nothing is freed. */
    public synchronized void detach(View v) {
        if (view == v) {
            view = null;
        }
    }

    public ModelFiles.Program current() {
        return current;
    }

    public boolean busy() {
        return busy;
    }

    public LlmEngine engine() {
        Loaded l = loaded;
        return l == null ? null : l.engine;
    }

    public synchronized String transcript() {
        return transcript.toString();
    }

    /** Loads `p` on the worker, after the program loaded before is closed (never two at once). */
    public void load(ModelFiles.Program p, int threads) {
        if (p.problem != null) {
            setBusy(false, "Could not load: " + p.problem + " (push the program's files again)");
            return;
        }
        setBusy(true, "Loading " + p.label() + "…");
        worker.execute(() -> {
            closeLoaded();
            String message;
            try {
                Loaded l = opener.open(p, threads);
                loaded = l;
                current = p;
                synchronized (this) {
                    transcript.setLength(0);
                }
                message = String.format(java.util.Locale.ROOT, "Loaded %s in %.0f ms, %d threads", p.label(),
                        l.engine.loadMs(), l.engine.threads());
            } catch (LlmException | RuntimeException | OutOfMemoryError | UnsatisfiedLinkError e) {
                message = "Could not load: " + e.getMessage();
            }
            setBusy(false, message);
        });
    }

    /** Answers `text` on the worker, streaming to the view. */
    public void send(String text, GenerationSettings s) {
        final Loaded l = loaded;
        if (l == null || busy || text.trim().isEmpty()) {
            return;
        }
        append("\nYou: " + text + "\nAssistant: ");
        generating = true;
        setBusy(true, status);
        worker.execute(() -> {
            String tail;
            try {
                Figures f = l.chat.send(text, s, this::append);
                tail = "\n[" + f.format() + "]\n";
            } catch (LlmException | RuntimeException | OutOfMemoryError e) {
                tail = "\n[failed: " + e.getMessage() + "]\n";
            }
            append(tail);
            generating = false;
            setBusy(false, status);
        });
    }

    /** Stops the answer being generated (any thread; harmless when none is). */
    public void stop() {
        Loaded l = loaded;
        if (l != null) {
            l.chat.stop();
        }
    }

    /** A new chat: the history and the engine's cache are forgotten. */
    public void newChat() {
        worker.execute(() -> {
            Loaded l = loaded;
            try {
                if (l != null) {
                    l.chat.clear();
                }
                synchronized (this) {
                    transcript.setLength(0);
                }
                setBusy(false, status);
            } catch (LlmException | RuntimeException e) {
                setBusy(false, "Could not reset: " + e.getMessage());
            }
        });
    }

    /** The activity finishes for good: stop, free the program on the worker, end the worker. */
    public void shutdown() {
        stop();
        worker.execute(this::closeLoaded);
        worker.shutdown();
        synchronized (ChatController.class) {
            if (instance == this) {
                instance = null;
            }
        }
    }

    /** Waits for queued work (tests). */
    boolean awaitIdle(long ms) throws InterruptedException {
        final Object done = new Object();
        final boolean[] ran = {false};
        worker.execute(() -> {
            synchronized (done) {
                ran[0] = true;
                done.notifyAll();
            }
        });
        synchronized (done) {
            long end = System.currentTimeMillis() + ms;
            while (!ran[0] && System.currentTimeMillis() < end) {
                done.wait(Math.max(1, end - System.currentTimeMillis()));
            }
        }
        return ran[0];
    }

    boolean awaitShutdown(long ms) throws InterruptedException {
        return worker.awaitTermination(ms, TimeUnit.MILLISECONDS);
    }

    private void closeLoaded() {
        Loaded l = loaded;
        loaded = null;
        current = null;
        if (l != null) {
            l.engine.close();
            l.tokenizer.close();
        }
    }

    // The view's calls are queued under the lock, so a view attached mid-answer gets the transcript
    // so far and then exactly the text that follows it.
    private synchronized void append(String fresh) {
        transcript.append(fresh);
        final View v = view;
        if (v != null) {
            ui.execute(() -> v.onText(fresh));
        }
    }

    private void setBusy(boolean b, String s) {
        busy = b;
        status = s;
        publish();
    }

    private synchronized void publish() {
        final View v = view;
        if (v != null) {
            final String st = status;
            final String t = transcript.toString();
            final boolean b = busy;
            final boolean ok = loaded != null;
            final boolean g = generating;
            ui.execute(() -> v.onState(st, t, b, ok, g));
        }
    }
}
