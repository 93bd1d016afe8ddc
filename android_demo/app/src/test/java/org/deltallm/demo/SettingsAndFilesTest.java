package org.deltallm.demo;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertSame;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.List;
import java.util.Map;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/** Settings validation, the manifest reader, and program discovery with dense/delta partners. */
public class SettingsAndFilesTest {
    @Rule
    public TemporaryFolder tmp = new TemporaryFolder();

    @Test
    public void badSettingsNameThemselves() {
        GenerationSettings ok = GenerationSettings.defaults().withTemperature(0.7f).withMaxNewTokens(64).withThreads(4);
        assertEquals(64, ok.maxNewTokens);
        String[][] cases = {{"temperature", "-1"}, {"max new tokens", "0"}, {"threads", "99"}};
        for (String[] c : cases) {
            try {
                if (c[0].equals("temperature")) {
                    ok.withTemperature(Float.parseFloat(c[1]));
                } else if (c[0].equals("threads")) {
                    ok.withThreads(Integer.parseInt(c[1]));
                } else {
                    ok.withMaxNewTokens(Integer.parseInt(c[1]));
                }
                fail(c[0]);
            } catch (IllegalArgumentException e) {
                assertTrue(e.getMessage(), e.getMessage().startsWith(c[0]));
            }
        }
    }

    @Test
    @SuppressWarnings("unchecked")
    public void miniJsonReadsManifests() {
        Object m = MiniJson.parse("{\"name\": \"smol\", \"attention\": {\"kind\": \"delta\", \"theta\": 0.6},"
                + " \"eos\": [2, 3], \"ok\": true, \"none\": null, \"s\": \"a\\\"b\\n\\u00e9\"}");
        assertEquals("delta", MiniJson.get(m, "attention.kind"));
        assertEquals(0.6, (Double) MiniJson.get(m, "attention.theta"), 0);
        assertEquals(2, ((List<Object>) MiniJson.get(m, "eos")).size());
        assertEquals("a\"b\né", ((Map<String, Object>) m).get("s"));
        assertNull(MiniJson.get(m, "attention.missing.deeper"));
        try {
            MiniJson.parse("{\"a\": ");
            fail();
        } catch (IllegalArgumentException e) {
            assertTrue(e.getMessage().startsWith("JSON: "));
        }
    }

    private File program(String folder, String kind, String sha) throws Exception {
        File dir = tmp.newFolder(folder);
        Files.write(new File(dir, "smol.pte").toPath(), new byte[] {1});
        Files.write(new File(dir, "tokenizer.json").toPath(), "{}".getBytes(StandardCharsets.UTF_8));
        String manifest = "{\"name\": \"smol\", \"attention\": {\"kind\": \"" + kind + "\"}, \"quantization\": "
                + "{\"linear\": \"8da8w\"}, \"architecture\": {\"architecture\": \"llama\"}, \"source\": {\"sha256\": \""
                + sha + "\"}}";
        Files.write(new File(dir, "smol.json").toPath(), manifest.getBytes(StandardCharsets.UTF_8));
        return dir;
    }

    @Test
    public void findsProgramsAndPairsDenseWithDelta() throws Exception {
        program("dense", "dense", "abc");
        program("delta", "delta", "abc");
        program("other", "delta", "xyz");
        new File(tmp.newFolder("no_tokenizer"), "m.pte").createNewFile();
        List<ModelFiles.Program> found = ModelFiles.find(tmp.getRoot(), new File(tmp.getRoot(), "missing"));
        assertEquals(3, found.size());
        ModelFiles.Program delta = found.get(0);
        assertEquals("delta", delta.attention);
        assertSame(found.get(1), ModelFiles.partner(found, delta));
        assertNull(ModelFiles.partner(found, found.get(2)));
        assertTrue(delta.label(), delta.label().contains("8da8w · delta"));
    }
}
