package org.deltallm.demo;

import android.app.Activity;
import android.app.ActivityManager;
import android.app.AlertDialog;
import android.content.Context;
import android.os.Bundle;
import android.text.InputType;
import android.view.View;
import android.widget.AdapterView;
import android.widget.ArrayAdapter;
import android.widget.Button;
import android.widget.EditText;
import android.widget.LinearLayout;
import android.widget.ScrollView;
import android.widget.Spinner;
import android.widget.Switch;
import android.widget.TextView;
import android.widget.Toast;
import java.io.File;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * The chat screen: pick a program, load it in the background, chat with streamed answers, Stop,
 * figures under every answer (TTFT, prefill/decode tok/s, S_c for delta programs), settings, and a
 * dense/delta switch when both programs of the same model are on the phone.
 */
public class MainActivity extends Activity {
    private final ExecutorService worker = Executors.newSingleThreadExecutor();
    private List<ModelFiles.Program> programs = new ArrayList<>();
    private ModelFiles.Program current;
    private LlmEngine engine;
    private Tokenizer tokenizer;
    private ChatSession chat;
    private GenerationSettings settings = GenerationSettings.defaults();

    private Spinner programSpinner;
    private Switch deltaSwitch;
    private TextView status;
    private TextView transcript;
    private ScrollView scroll;
    private EditText input;
    private Button send;
    private Button stop;

    @Override
    protected void onCreate(Bundle savedInstanceState) {
        super.onCreate(savedInstanceState);
        setContentView(R.layout.activity_main);
        programSpinner = findViewById(R.id.program);
        deltaSwitch = findViewById(R.id.delta_switch);
        status = findViewById(R.id.status);
        transcript = findViewById(R.id.transcript);
        scroll = findViewById(R.id.scroll);
        input = findViewById(R.id.input);
        send = findViewById(R.id.send);
        stop = findViewById(R.id.stop);
        findViewById(R.id.load).setOnClickListener(v -> loadSelected());
        findViewById(R.id.settings).setOnClickListener(v -> showSettings());
        send.setOnClickListener(v -> sendMessage());
        stop.setOnClickListener(v -> {
            if (chat != null) {
                chat.stop();
            }
        });
        deltaSwitch.setOnCheckedChangeListener((b, checked) -> switchAttention(checked));
        programSpinner.setOnItemSelectedListener(new AdapterView.OnItemSelectedListener() {
            @Override
            public void onItemSelected(AdapterView<?> parent, View view, int position, long id) {
                updateSwitch(programs.get(position));
            }

            @Override
            public void onNothingSelected(AdapterView<?> parent) {}
        });
        refreshPrograms();
        setBusy(false);
    }

    @Override
    protected void onDestroy() {
        super.onDestroy();
        if (chat != null) {
            chat.stop();
        }
        worker.execute(this::closeProgram);
        worker.shutdown();
    }

    private void refreshPrograms() {
        programs = ModelFiles.find(getExternalFilesDir(null), new File("/data/local/tmp/deltallm"));
        List<String> labels = new ArrayList<>();
        for (ModelFiles.Program p : programs) {
            labels.add(p.label());
        }
        programSpinner.setAdapter(new ArrayAdapter<>(this, android.R.layout.simple_spinner_dropdown_item, labels));
        status.setText(programs.isEmpty() ? getString(R.string.no_programs, getExternalFilesDir(null).getPath())
                : getString(R.string.pick_program));
    }

    private void updateSwitch(ModelFiles.Program p) {
        ModelFiles.Program partner = ModelFiles.partner(programs, p);
        deltaSwitch.setEnabled(partner != null);
        deltaSwitch.setOnCheckedChangeListener(null);
        deltaSwitch.setChecked("delta".equals(p.attention));
        deltaSwitch.setOnCheckedChangeListener((b, checked) -> switchAttention(checked));
    }

    private void switchAttention(boolean delta) {
        if (current == null) {
            return;
        }
        ModelFiles.Program partner = ModelFiles.partner(programs, current);
        if (partner != null && "delta".equals(partner.attention) == delta) {
            load(partner);
        }
    }

    private void loadSelected() {
        int i = programSpinner.getSelectedItemPosition();
        if (i >= 0 && i < programs.size()) {
            load(programs.get(i));
        }
    }

    /** Refuses a program larger than the memory the phone can give, with a message (no crash). */
    private String memoryProblem(ModelFiles.Program p) {
        ActivityManager am = (ActivityManager) getSystemService(Context.ACTIVITY_SERVICE);
        ActivityManager.MemoryInfo mi = new ActivityManager.MemoryInfo();
        am.getMemoryInfo(mi);
        long need = p.pte.length() + 64L * 1024 * 1024;
        if (need > mi.availMem) {
            return getString(R.string.too_big, need >> 20, mi.availMem >> 20);
        }
        return null;
    }

    private void load(ModelFiles.Program p) {
        String problem = memoryProblem(p);
        if (problem != null) {
            status.setText(problem);
            return;
        }
        setBusy(true);
        status.setText(getString(R.string.loading, p.label()));
        worker.execute(() -> {
            closeProgram();
            String message;
            try {
                engine = LlmEngine.load(p.pte.getPath(), settings.threads);
                tokenizer = Tokenizer.load(p.tokenizer.getPath());
                chat = new ChatSession(engine, tokenizer, ChatTemplate.detect(p.architecture, tokenizer));
                current = p;
                message = getString(R.string.loaded, p.label(), engine.loadMs(), engine.threads());
            } catch (LlmException | OutOfMemoryError | UnsatisfiedLinkError e) {
                closeProgram();
                message = getString(R.string.load_failed, String.valueOf(e.getMessage()));
            }
            final String m = message;
            runOnUiThread(() -> {
                status.setText(m);
                transcript.setText("");
                setBusy(false);
            });
        });
    }

    private void closeProgram() {
        if (engine != null) {
            engine.close();
        }
        if (tokenizer != null) {
            tokenizer.close();
        }
        engine = null;
        tokenizer = null;
        chat = null;
        current = null;
    }

    private void sendMessage() {
        final String text = input.getText().toString().trim();
        if (chat == null || text.isEmpty()) {
            return;
        }
        input.setText("");
        transcript.append(getString(R.string.you, text));
        setBusy(true);
        final ChatSession session = chat;
        final GenerationSettings s = settings;
        worker.execute(() -> {
            String tail;
            try {
                Figures f = session.send(text, s, fresh -> runOnUiThread(() -> {
                    transcript.append(fresh);
                    scroll.fullScroll(View.FOCUS_DOWN);
                }));
                tail = "\n[" + f.format() + "]\n\n";
            } catch (LlmException | OutOfMemoryError e) {
                tail = "\n[" + getString(R.string.failed, String.valueOf(e.getMessage())) + "]\n\n";
            }
            final String t = tail;
            runOnUiThread(() -> {
                transcript.append(t);
                setBusy(false);
            });
        });
        transcript.append(getString(R.string.assistant));
    }

    private void setBusy(boolean busy) {
        send.setEnabled(!busy && chat != null);
        stop.setEnabled(busy && chat != null);
    }

    private void showSettings() {
        LinearLayout form = new LinearLayout(this);
        form.setOrientation(LinearLayout.VERTICAL);
        EditText temperature = field(form, R.string.temperature, String.valueOf(settings.temperature),
                InputType.TYPE_CLASS_NUMBER | InputType.TYPE_NUMBER_FLAG_DECIMAL);
        EditText maxTokens = field(form, R.string.max_new_tokens, String.valueOf(settings.maxNewTokens),
                InputType.TYPE_CLASS_NUMBER);
        EditText threads = field(form, R.string.threads, String.valueOf(settings.threads), InputType.TYPE_CLASS_NUMBER);
        EditText system = field(form, R.string.system_prompt, settings.systemPrompt,
                InputType.TYPE_CLASS_TEXT | InputType.TYPE_TEXT_FLAG_MULTI_LINE);
        new AlertDialog.Builder(this).setTitle(R.string.settings).setView(form)
                .setPositiveButton(android.R.string.ok, (d, w) -> {
                    try {
                        int newThreads = Integer.parseInt(threads.getText().toString().trim());
                        boolean reload = newThreads != settings.threads && current != null;
                        settings = new GenerationSettings(Float.parseFloat(temperature.getText().toString().trim()),
                                Integer.parseInt(maxTokens.getText().toString().trim()), newThreads,
                                system.getText().toString(), settings.seed);
                        if (reload) {
                            load(current);      // the thread count is the engine's: reload
                        }
                    } catch (IllegalArgumentException e) {
                        Toast.makeText(this, e.getMessage(), Toast.LENGTH_LONG).show();
                    }
                })
                .setNegativeButton(android.R.string.cancel, null).show();
    }

    private EditText field(LinearLayout form, int label, String value, int type) {
        TextView l = new TextView(this);
        l.setText(label);
        form.addView(l);
        EditText e = new EditText(this);
        e.setInputType(type);
        e.setText(value);
        form.addView(e);
        return e;
    }
}
