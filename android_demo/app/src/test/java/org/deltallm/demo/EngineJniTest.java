package org.deltallm.demo;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.nio.file.Files;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/** The app's bridge classes and native library on the host JVM, with real programs. */
public class EngineJniTest {
    @Rule
    public TemporaryFolder tmp = new TemporaryFolder();

    private ChatSession smolChat(LlmEngine engine, Tokenizer tok) {
        ChatTemplate template = ChatTemplate.detect("llama", tok);
        assertEquals(ChatTemplate.CHATML, template);
        return new ChatSession(engine, tok, template);
    }

    @Test
    public void answersParisWithFigures() throws Exception {
        File pte = NativeTestSupport.pte("smollm2");
        try (LlmEngine engine = LlmEngine.load(pte.getPath(), 2);
             Tokenizer tok = Tokenizer.load(new File(pte.getParentFile(), "tokenizer.json").getPath())) {
            assertEquals(49152, engine.vocabSize());
            assertFalse(engine.deltaAttention());
            StringBuilder streamed = new StringBuilder();
            Figures f = smolChat(engine, tok).send("What is the capital of France?",
                    GenerationSettings.defaults().withMaxNewTokens(24), streamed::append);
            assertTrue(streamed.toString(), streamed.toString().contains("Paris"));
            assertTrue(f.ttftMs > 0 && f.prefillTps > 0 && f.decodeTps > 0 && f.peakRssMb > 50);
            assertTrue(f.promptTokens > 10 && f.generatedTokens >= 3 && !f.stopped);
            assertFalse(f.hasSparsity());
            assertTrue(f.format(), f.format().contains("tok/s"));
        }
    }

    @Test
    public void stopEndsTheAnswerAndTheNextTurnStartsClean() throws Exception {
        File pte = NativeTestSupport.pte("smollm2");
        try (LlmEngine engine = LlmEngine.load(pte.getPath(), 2);
             Tokenizer tok = Tokenizer.load(new File(pte.getParentFile(), "tokenizer.json").getPath())) {
            ChatSession chat = smolChat(engine, tok);
            AtomicInteger pieces = new AtomicInteger();
            java.util.concurrent.atomic.AtomicBoolean finished = new java.util.concurrent.atomic.AtomicBoolean();
            GenerationSettings s = GenerationSettings.defaults().withMaxNewTokens(200).withTemperature(0.8f);
            Thread stopper = new Thread(() -> {
                while (pieces.get() < 3 && !finished.get()) {
                    Thread.onSpinWait();
                }
                chat.stop();                          // from another thread, as the Stop button does
            });
            stopper.start();
            Figures stopped;
            try {
                stopped = chat.send("Write a long story about a lighthouse keeper.", s, t -> pieces.incrementAndGet());
            } finally {
                finished.set(true);
                stopper.join();
            }
            assertTrue(stopped.stopped);
            assertTrue("generated " + stopped.generatedTokens, stopped.generatedTokens < 60);
            String partial = chat.history().get(1).text;
            StringBuilder next = new StringBuilder();
            Figures f = chat.send("What is the capital of France?", s.withTemperature(0f).withMaxNewTokens(24), next::append);
            assertFalse(f.stopped);
            assertFalse(next.toString().startsWith(partial));
            assertTrue(next.toString(), next.toString().contains("Paris"));
            assertEquals(4, chat.history().size());
        }
    }

    @Test
    public void laterTurnsReuseTheCacheAndAnswerAsWithout() throws Exception {
        File pte = NativeTestSupport.pte("smollm2");
        try (LlmEngine engine = LlmEngine.load(pte.getPath(), 2);
             Tokenizer tok = Tokenizer.load(new File(pte.getParentFile(), "tokenizer.json").getPath())) {
            ChatSession chat = smolChat(engine, tok);
            GenerationSettings s = GenerationSettings.defaults().withMaxNewTokens(16).withSystemPrompt("Be brief.");
            Figures first = chat.send("What is the capital of France?", s, null);
            Figures second = chat.send("And of Italy?", s, null);
            assertEquals(0, first.reusedTokens);
            assertTrue("reused " + second.reusedTokens, second.reusedTokens >= first.promptTokens);
            assertEquals(second.promptTokens, second.reusedTokens + second.prefilledTokens);
            assertTrue(second.format(), second.format().contains(" reused"));
            String withReuse = chat.history().get(3).text;
            chat.clear();                                      // New chat: the cache is forgotten too
            assertEquals(0, chat.send("What is the capital of France?", s, null).reusedTokens);
            engine.reset();                                    // the second turn from position 0
            Figures plain = chat.send("And of Italy?", s, null);
            assertEquals(0, plain.reusedTokens);
            assertEquals(withReuse, chat.history().get(3).text);
        }
    }

    @Test
    public void threadsBackToZeroRestoresTheRuntimesDefault() throws Exception {
        File pte = NativeTestSupport.pte("tiny_dense");
        int dflt;
        try (LlmEngine e = LlmEngine.load(pte.getPath(), 0)) {
            dflt = e.threads();
        }
        int other = dflt == 1 ? 2 : 1;
        try (LlmEngine e = LlmEngine.load(pte.getPath(), other)) {
            assertEquals(other, e.threads());
        }
        try (LlmEngine e = LlmEngine.load(pte.getPath(), 0)) {
            assertEquals(dflt, e.threads());
        }
    }

    @Test
    public void deltaProgramReportsSparsity() throws Exception {
        try (LlmEngine delta = LlmEngine.load(NativeTestSupport.pte("tiny_delta").getPath(), 1);
             LlmEngine dense = LlmEngine.load(NativeTestSupport.pte("tiny_dense").getPath(), 1)) {
            assertTrue(delta.deltaAttention());
            int[] ids = new int[60];
            for (int i = 0; i < ids.length; i++) {
                ids[i] = 3 + (i * 37) % 250;
            }
            Figures f = delta.generate(ids, 8, 0f, 0, null);
            assertTrue(f.hasSparsity());
            assertTrue(f.prefillSc > 0 && f.prefillSc < 1 && f.prefillSm >= f.prefillSc && f.decodeSc > 0);
            assertTrue(f.format(), f.format().contains("S_c"));
            assertFalse(dense.generate(ids, 8, 0f, 0, null).hasSparsity());
        }
    }

    @Test
    public void corruptProgramFailsCleanly() throws Exception {
        File good = NativeTestSupport.pte("tiny_dense");
        File bad = tmp.newFile("corrupt.pte");
        Files.write(bad.toPath(), Arrays.copyOf(Files.readAllBytes(good.toPath()), 3000));
        for (File f : new File[] {bad, new File(tmp.getRoot(), "missing.pte")}) {
            try {
                LlmEngine.load(f.getPath(), 1).close();
                fail("loaded " + f);
            } catch (LlmException e) {
                assertTrue(e.getMessage(), e.getMessage().startsWith(f.getPath() + ": "));
            }
        }
        try (LlmEngine engine = LlmEngine.load(good.getPath(), 1)) {   // the library is still usable
            try {
                engine.generate(new int[] {1, 100000}, 4, 0f, 0, null);
                fail("accepted an id outside the vocabulary");
            } catch (LlmException e) {
                assertTrue(e.getMessage(), e.getMessage().contains("outside the vocabulary"));
            }
            int n = engine.generate(new int[] {1, 5, 9}, 4, 0f, 0, null).generatedTokens;
            assertTrue("generated " + n, n >= 1 && n <= 5);      // the first token + up to 4 (EOS stops)
        }
    }

    @Test
    public void tokenizerStreamsWholeCharacters() throws Exception {
        File pte = NativeTestSupport.pte("smollm2");
        try (Tokenizer tok = Tokenizer.load(new File(pte.getParentFile(), "tokenizer.json").getPath())) {
            String text = "Zürich 👍🏽 東京";
            int[] ids = tok.encode(text);
            Tokenizer.Stream stream = tok.new Stream(true);
            StringBuilder seen = new StringBuilder();
            for (int id : ids) {
                String fresh = stream.push(id);
                assertFalse(fresh.contains("\uFFFD"));
                seen.append(fresh);
            }
            assertEquals(text, seen.toString());
            assertEquals(text, tok.decode(ids, false));
            assertEquals(1, tok.encode("<|im_start|>").length);
            assertEquals(tok.tokenId("<|im_start|>"), tok.encode("<|im_start|>")[0]);
        }
    }
}
