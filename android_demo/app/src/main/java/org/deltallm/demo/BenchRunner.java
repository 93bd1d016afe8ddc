package org.deltallm.demo;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.Map;

/**
 * The benchmark mode: runs the native bench for a request and writes {@code <files>/bench/<run_id>.json}
 * (temp file, then rename) and then {@code <run_id>.done} with "ok", or only the marker with
 * "error: <message>". Every run ends with a marker, whatever fails.
 */
public final class BenchRunner {
    private BenchRunner() {}

    /** Returns true when the result was written. */
    public static boolean run(File filesDir, Map<String, String> extras) {
        long t0 = System.nanoTime();
        File dir = new File(filesDir, "bench");
        String runId;
        try {
            runId = BenchRequest.runId(extras);
        } catch (IllegalArgumentException e) {
            runId = "invalid-run-id";
        }
        File result = new File(dir, runId + ".json");
        File done = new File(dir, runId + ".done");
        try {
            if (!dir.isDirectory() && !dir.mkdirs()) {
                throw new IOException("cannot create " + dir);
            }
            BenchRequest req = BenchRequest.from(extras);
            int[] ids = readIds(new File(req.promptIds));
            String json;
            try (LlmEngine engine = LlmEngine.load(req.pte, req.threads)) {
                json = engine.bench(ids, req.promptLengths, req.decodeLengths, req.warmup, req.reps,
                        (System.nanoTime() - t0) / 1e6);
            }
            writeAtomic(result, json);
            writeAtomic(done, "ok\n");
            return true;
        } catch (Exception | LinkageError | OutOfMemoryError e) {
            String msg = e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage();
            try {
                writeAtomic(done, "error: " + msg.replace('\n', ' ') + "\n");
            } catch (IOException ignored) {
                // nowhere to report: the host's timeout says so
            }
            return false;
        }
    }

    /** Little-endian int32 token ids. */
    static int[] readIds(File f) throws IOException, LlmException {
        byte[] raw = Files.readAllBytes(f.toPath());
        if (raw.length == 0 || raw.length % 4 != 0) {
            throw new LlmException(f + ": expected little-endian int32 token ids");
        }
        int[] ids = new int[raw.length / 4];
        ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN).asIntBuffer().get(ids);
        return ids;
    }

    static void writeAtomic(File target, String text) throws IOException {
        File tmp = new File(target.getParentFile(), "." + target.getName() + ".tmp");
        try (FileOutputStream out = new FileOutputStream(tmp)) {
            out.write(text.getBytes(StandardCharsets.UTF_8));
            out.getFD().sync();
        }
        if (!tmp.renameTo(target)) {
            tmp.delete();
            throw new IOException("cannot rename " + tmp + " to " + target);
        }
    }
}
