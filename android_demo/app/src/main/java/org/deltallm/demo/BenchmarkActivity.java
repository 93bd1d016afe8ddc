package org.deltallm.demo;

import android.app.Activity;
import android.content.Intent;
import android.os.Bundle;
import java.io.File;
import java.util.HashMap;
import java.util.Map;

/**
 * Benchmark mode, started by `python -m device bench --runner android` (am start with extras, see
 * device/android_protocol.py): runs BenchRunner on a background thread, then finishes. The result
 * and marker go to the app's external files directory, where the host pulls them. A configuration
 * change while it runs recreates the activity with a saved state: the run is not started again.
 */
public class BenchmarkActivity extends Activity {
    private static final String[] STRING_EXTRAS = {"run_id", "pte", "tokenizer", "prompt_lengths", "decode_lengths",
            "prompt_ids"};
    private static final String[] INT_EXTRAS = {"warmup", "reps", "threads"};

    @Override
    protected void onCreate(Bundle savedInstanceState) {
        super.onCreate(savedInstanceState);
        if (savedInstanceState != null) {
            return;     // recreated (rotation): the run started by the first onCreate goes on
        }
        Intent intent = getIntent();
        final Map<String, String> extras = new HashMap<>();
        for (String k : STRING_EXTRAS) {
            String v = intent.getStringExtra(k);
            if (v != null) {
                extras.put(k, v);
            }
        }
        for (String k : INT_EXTRAS) {
            if (intent.hasExtra(k)) {
                extras.put(k, Integer.toString(intent.getIntExtra(k, 0)));
            }
        }
        final File files = getExternalFilesDir(null);
        new Thread(() -> {
            BenchRunner.run(files, extras);
            runOnUiThread(this::finish);
        }, "deltallm-bench").start();
    }
}
