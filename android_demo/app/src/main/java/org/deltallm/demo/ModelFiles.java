package org.deltallm.demo;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Programs a user has put on the phone: every {@code X.pte} with a {@code tokenizer.json} beside it
 * (and, from {@code python -m export}, its manifest {@code X.json}), in the app's files directory or
 * /data/local/tmp/deltallm (one level of sub-folders too). Programs exported from the same weights
 * and quantization with dense and delta attention are partners for the chat screen's switch.
 */
public final class ModelFiles {
    /** One program on the device. */
    public static final class Program {
        public final File pte;
        public final File tokenizer;
        public final String name;
        public final String attention;      // "dense", "delta" or "?" without a manifest
        public final String architecture;   // "llama", "bitnet" or "?"
        public final String quantization;
        final String weights;               // source sha256 (pairs dense/delta programs)
        /** The attention state (KV cache or delta state) at max context, from the manifest; 0 unknown. */
        public final long stateBytes;
        /** The system turn the model's chat template adds when there is none (null: none). */
        public final String defaultSystem;
        /** Why the manifest beside it could not be read (the app refuses to load it), or null. */
        public final String problem;

        Program(File pte, File tokenizer, Object manifest, String problem) {
            this.problem = problem;
            this.pte = pte;
            this.tokenizer = tokenizer;
            this.name = str(MiniJson.get(manifest, "name"), pte.getName().replaceAll("\\.pte$", ""));
            this.attention = str(MiniJson.get(manifest, "attention.kind"), "?");
            this.architecture = str(MiniJson.get(manifest, "architecture.architecture"), "?");
            this.quantization = str(MiniJson.get(manifest, "quantization.linear"), "?");
            this.weights = str(MiniJson.get(manifest, "source.sha256"), pte.getAbsolutePath());
            Object state = MiniJson.get(manifest, "attention_state.bytes");
            this.stateBytes = state instanceof Double && (Double) state >= 0 ? ((Double) state).longValue() : 0;
            this.defaultSystem = ChatTemplate.defaultSystem(str(MiniJson.get(manifest, "chat_template"), null));
        }

        public String label() {
            return name + " · " + quantization + " · " + attention + " (" + pte.getParentFile().getName() + ")"
                    + (problem == null ? "" : " · manifest unreadable");
        }
    }

    private ModelFiles() {}

    public static List<Program> find(File... roots) {
        List<Program> out = new ArrayList<>();
        for (File root : roots) {
            scan(root, 1, out);
        }
        return out;
    }

    /** The same weights and quantization with the other attention kind, or null. */
    public static Program partner(List<Program> programs, Program p) {
        for (Program q : programs) {
            if (q != p && q.weights.equals(p.weights) && q.quantization.equals(p.quantization)
                    && !q.attention.equals(p.attention)) {
                return q;
            }
        }
        return null;
    }

    private static void scan(File dir, int depth, List<Program> out) {
        File[] files = dir == null ? null : dir.listFiles();
        if (files == null) {
            return;
        }
        Arrays.sort(files);
        File tokenizer = new File(dir, "tokenizer.json");
        for (File f : files) {
            if (f.isDirectory() && depth > 0) {
                scan(f, depth - 1, out);
            } else if (f.getName().endsWith(".pte") && tokenizer.isFile()) {
                File m = new File(dir, f.getName().replaceAll("\\.pte$", ".json"));
                try {
                    out.add(new Program(f, tokenizer, readManifest(m), null));
                } catch (IllegalArgumentException e) {
                    out.add(new Program(f, tokenizer, null, e.getMessage()));
                }
            }
        }
    }

    /** The fields the app reads, with the type each must have when present. */
    private static final String[][] FIELDS = {{"name", "string"}, {"attention.kind", "string"},
            {"architecture.architecture", "string"}, {"quantization.linear", "string"}, {"source.sha256", "string"},
            {"chat_template", "string"}, {"attention_state.bytes", "number"}};

    /**
     * A program's manifest (null when there is none). Anything wrong with it — unreadable, not JSON
     * (a half-pushed file ends inside a string or an escape), not an object, a field of the wrong
     * type — is one IllegalArgumentException whose message starts with the file's path.
     */
    public static Object readManifest(File f) {
        if (!f.isFile()) {
            return null;
        }
        Object m;
        try {
            m = MiniJson.parse(new String(Files.readAllBytes(f.toPath()), StandardCharsets.UTF_8));
        } catch (IOException | IllegalArgumentException e) {
            throw new IllegalArgumentException(f.getPath() + ": " + e.getMessage(), e);
        }
        if (!(m instanceof java.util.Map)) {
            throw new IllegalArgumentException(f.getPath() + ": not a JSON object");
        }
        for (String[] field : FIELDS) {
            Object v = MiniJson.get(m, field[0]);
            boolean ok = v == null || (field[1].equals("string") ? v instanceof String : v instanceof Double);
            if (!ok) {
                throw new IllegalArgumentException(f.getPath() + ": " + field[0] + " must be a " + field[1]);
            }
        }
        return m;
    }

    private static String str(Object v, String dflt) {
        return v instanceof String ? (String) v : dflt;
    }
}
