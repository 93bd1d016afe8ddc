package org.deltallm.demo;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.HashMap;
import java.util.Map;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/** The benchmark mode's files: result JSON then "ok" marker, or only an "error: ..." marker. */
public class BenchProtocolTest {
    @Rule
    public TemporaryFolder tmp = new TemporaryFolder();

    private Map<String, String> extras(String pte, File dir) throws Exception {
        File ids = new File(dir, "ids.bin");
        ByteBuffer b = ByteBuffer.allocate(4 * 40).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < 40; i++) {
            b.putInt(3 + (i * 11) % 200);
        }
        Files.write(ids.toPath(), b.array());
        Map<String, String> x = new HashMap<>();
        x.put("run_id", "p12_d3_1");
        x.put("pte", pte);
        x.put("tokenizer", "unused");
        x.put("prompt_lengths", "12,40");
        x.put("decode_lengths", "3");
        x.put("warmup", "1");
        x.put("reps", "2");
        x.put("threads", "1");
        x.put("prompt_ids", ids.getPath());
        return x;
    }

    private String read(File f) throws Exception {
        return new String(Files.readAllBytes(f.toPath()), StandardCharsets.UTF_8);
    }

    @Test
    public void writesResultThenMarker() throws Exception {
        File files = tmp.newFolder("files");
        assertTrue(BenchRunner.run(files, extras(NativeTestSupport.pte("tiny_delta").getPath(), files)));
        File bench = new File(files, "bench");
        assertEquals("ok\n", read(new File(bench, "p12_d3_1.done")));
        Object r = MiniJson.parse(read(new File(bench, "p12_d3_1.json")));
        assertEquals("deltallm-bench/2", MiniJson.get(r, "protocol"));
        assertEquals("android", MiniJson.get(r, "runner"));
        assertEquals(2, ((java.util.List<?>) MiniJson.get(r, "configs")).size());
        assertEquals(2, bench.list().length);                 // no temp file left behind
    }

    @Test
    public void failuresEndWithAnErrorMarkerOnly() throws Exception {
        String good = NativeTestSupport.pte("tiny_delta").getPath();
        String[][] cases = {{"prompt_ids", null, "extra 'prompt_ids' is missing"},
                            {"pte", "/nonexistent.pte", "cannot open the program file"},
                            {"prompt_lengths", "12,x", "extra 'prompt_lengths': 'x' is not an integer"},
                            {"prompt_lengths", "500", "the prompt file has 40"}};
        for (String[] c : cases) {
            File files = tmp.newFolder();
            Map<String, String> x = extras(good, files);
            if (c[1] == null) {
                x.remove(c[0]);
            } else {
                x.put(c[0], c[1]);
            }
            assertFalse(BenchRunner.run(files, x));
            File bench = new File(files, "bench");
            String marker = read(new File(bench, "p12_d3_1.done"));
            assertTrue(marker, marker.startsWith("error: ") && marker.contains(c[2]));
            assertFalse(new File(bench, "p12_d3_1.json").exists());
        }
    }
}
