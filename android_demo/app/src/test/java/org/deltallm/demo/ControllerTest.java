package org.deltallm.demo;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertSame;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/**
 * What the app does around the engine, on the host JVM: the controller that outlives a screen (a
 * configuration change keeps the engine and the transcript), stop racing close, malformed manifests,
 * the memory check's arithmetic, persisted settings.
 */
public class ControllerTest {
    @Rule
    public TemporaryFolder tmp = new TemporaryFolder();

    /** A screen: records what the controller shows it. */
    static final class Screen implements ChatController.View {
        final List<String> states = new ArrayList<>();
        final StringBuilder text = new StringBuilder();
        volatile boolean loaded;

        @Override
        public synchronized void onState(String status, String transcript, boolean busy, boolean ok, boolean gen) {
            states.add(status);
            text.setLength(0);
            text.append(transcript);
            loaded = ok;
        }

        @Override
        public synchronized void onText(String fresh) {
            text.append(fresh);
        }

        synchronized String shown() {
            return text.toString();
        }
    }

    private static ModelFiles.Program tinyProgram() throws Exception {
        File pte = NativeTestSupport.pte("tiny_dense");
        return ModelFiles.find(pte.getParentFile()).get(0);
    }

    @Test
    public void aConfigurationChangeKeepsTheEngineAndTheTranscript() throws Exception {
        AtomicInteger loads = new AtomicInteger();
        ChatController.Opener real = (p, threads) -> {
            loads.incrementAndGet();
            LlmEngine e = LlmEngine.load(p.pte.getPath(), threads);
            Tokenizer t = Tokenizer.load(p.tokenizer.getPath());
            return new ChatController.Loaded(e, t, new ChatSession(e, t, ChatTemplate.detect(p.architecture, t)));
        };
        ChatController c = new ChatController(real);
        Screen first = new Screen();
        c.attach(first, Runnable::run);
        c.load(tinyProgram(), 1);
        assertTrue(c.awaitIdle(60000));
        LlmEngine engine = c.engine();
        assertNotNull(engine);
        c.send("hello there", GenerationSettings.defaults().withMaxNewTokens(6));
        assertTrue(c.awaitIdle(60000));
        String shown = first.shown();
        assertTrue(shown, shown.contains("You: hello there") && shown.contains("tok/s"));
        c.detach(first);                                   // the activity is destroyed by a rotation ...
        Screen second = new Screen();
        c.attach(second, Runnable::run);                   // ... and created again
        assertEquals(shown, second.shown());
        assertTrue(second.loaded);
        assertSame(engine, c.engine());
        assertEquals(1, loads.get());
        c.send("more", GenerationSettings.defaults().withMaxNewTokens(4));
        assertTrue(c.awaitIdle(60000));
        assertTrue(second.shown().startsWith(shown) && second.shown().contains("You: more"));
        assertEquals(shown, first.shown());                 // the old screen hears nothing more
        c.shutdown();
        assertTrue(c.awaitShutdown(60000));
        assertNull(c.engine());
    }

    @Test
    public void aLoadThatFailsLeavesNothingLoadedAndSaysWhy() throws Exception {
        ChatController c = new ChatController((p, threads) -> {
            throw new IllegalStateException("boom");   // any RuntimeException, not only LlmException
        });
        Screen s = new Screen();
        c.attach(s, Runnable::run);
        c.load(tinyProgram(), 1);
        assertTrue(c.awaitIdle(60000));
        assertNull(c.engine());
        assertTrue(s.states.toString(), s.states.get(s.states.size() - 1).contains("boom"));
        c.shutdown();
    }

    @Test
    public void stopRacingCloseNeverCrashes() throws Exception {
        File pte = NativeTestSupport.pte("tiny_dense");
        for (int i = 0; i < 200; i++) {
            LlmEngine engine = LlmEngine.load(pte.getPath(), 1);
            Thread stopper = new Thread(() -> {
                for (int k = 0; k < 50; k++) {
                    engine.stop();
                }
            });
            Thread generator = new Thread(() -> {
                try {
                    engine.generate(new int[] {1, 5, 9, 12}, 20, 0f, 0, null);
                } catch (LlmException e) {
                    assertTrue(e.getMessage(), e.getMessage().contains("closed"));
                }
            });
            generator.start();
            generator.join();
            stopper.start();
            engine.close();
            stopper.join();
            engine.stop();                                   // on a closed engine: nothing
            try {
                engine.generate(new int[] {1, 2}, 2, 0f, 0, null);
                fail("generated on a closed engine");
            } catch (LlmException e) {
                assertTrue(e.getMessage().contains("closed"));
            }
        }
    }

    @Test
    public void malformedManifestsThrowOnlyIllegalArgument() throws Exception {
        String[] bad = {"{\"a\": \"x\\", "{\"a\": \"\\u12", "{\"a\": \"\\uZZZZ\"}", "{\"a\": 1e}", "{\"a\": [1, }",
                "{\"a\"", "", "[", "{\"a\": tru}", "{\"a\": \"b\"} x"};
        for (String text : bad) {
            try {
                MiniJson.parse(text);
                fail("parsed " + text);
            } catch (IllegalArgumentException e) {
                assertNotNull(e.getMessage());
            }
        }
        File dir = tmp.newFolder("progs");
        File good = NativeTestSupport.pte("tiny_dense");
        Files.copy(good.toPath(), new File(dir, "m.pte").toPath());
        Files.copy(new File(good.getParentFile(), "tokenizer.json").toPath(), new File(dir, "tokenizer.json").toPath());
        File manifest = new File(dir, "m.json");
        String[][] cases = {
            {"{\"name\": \"half\\", "JSON: unterminated string"},                 // a half-pushed manifest
            {"{\"name\": \"x\\u00", "JSON: truncated \\u escape"},
            {"[1, 2]", "not a JSON object"},
            {"{\"name\": 7}", "name must be a string"},
            {"{\"attention_state\": {\"bytes\": \"lots\"}}", "attention_state.bytes must be a number"},
        };
        for (String[] c : cases) {
            Files.write(manifest.toPath(), c[0].getBytes(StandardCharsets.UTF_8));
            try {
                ModelFiles.readManifest(manifest);
                fail("read " + c[0]);
            } catch (IllegalArgumentException e) {
                assertTrue(e.getMessage(), e.getMessage().startsWith(manifest.getPath() + ": ")
                        && e.getMessage().contains(c[1]));
            }
            List<ModelFiles.Program> found = ModelFiles.find(dir);    // listed, marked, refused: no crash
            assertEquals(1, found.size());
            ModelFiles.Program p = found.get(0);
            assertTrue(p.problem, p.problem.startsWith(manifest.getPath()));
            assertTrue(p.label().endsWith("manifest unreadable"));
            ChatController c2 = new ChatController((q, t) -> {
                throw new AssertionError("opened a program whose manifest is unreadable");
            });
            Screen s = new Screen();
            c2.attach(s, Runnable::run);
            c2.load(p, 1);
            assertTrue(s.states.get(s.states.size() - 1).contains(manifest.getPath()));
            c2.shutdown();
        }
        Files.write(manifest.toPath(), "{\"name\": \"fine\", \"attention_state\": {\"bytes\": 1048576}}"
                .getBytes(StandardCharsets.UTF_8));
        ModelFiles.Program p = ModelFiles.find(dir).get(0);
        assertNull(p.problem);
        assertEquals("fine", p.name);
        assertEquals(1048576, p.stateBytes);
    }

    @Test
    public void memoryCheckCountsStateAndWhatTheReplacedProgramFrees() {
        long mb = 1L << 20;
        assertEquals(500 * mb + 100 * mb + 64 * mb, MemoryBudget.need(500 * mb, 100 * mb));
        assertNull(MemoryBudget.problem(500 * mb, 100 * mb, 0, 664 * mb));
        String msg = MemoryBudget.problem(500 * mb, 100 * mb, 0, 663 * mb);
        assertTrue(msg, msg != null && msg.contains("664 MB") && msg.contains("663 MB") && msg.contains("100 MB"));
        assertNull(MemoryBudget.problem(500 * mb, 100 * mb, 300 * mb, 400 * mb));   // the old program goes first
    }

    @Test
    public void settingsSurviveARoundTripAndStaleValuesFallBack() {
        GenerationSettings s = new GenerationSettings(0.7f, 99, 3, "Be brief.\nTwo lines.", 42);
        GenerationSettings back = GenerationSettings.fromMap(s.toMap());
        assertEquals(s.toMap(), back.toMap());
        Map<String, Object> stale = new HashMap<>(s.toMap());
        stale.put("threads", "-4");
        assertEquals(GenerationSettings.defaults().toMap(), GenerationSettings.fromMap(stale).toMap());
        assertEquals(GenerationSettings.defaults().toMap(), GenerationSettings.fromMap(new HashMap<>()).toMap());
    }
}
