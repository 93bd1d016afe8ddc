package org.deltallm.demo;

import android.app.Activity;
import android.app.ActivityManager;
import android.app.AlertDialog;
import android.content.ClipData;
import android.content.Context;
import android.content.Intent;
import android.content.SharedPreferences;
import android.database.Cursor;
import android.net.Uri;
import android.os.Build;
import android.os.Bundle;
import android.provider.OpenableColumns;
import android.text.InputType;
import android.view.View;
import android.view.WindowInsets;
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
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * The chat screen, a view over {@link ChatController} (which keeps the program, the conversation
 * and the worker across rotations): pick or import a program, load it, chat with streamed answers,
 * Stop, New chat, figures under every answer, settings that persist, and a dense/delta switch when
 * both programs of the same model are on the phone.
 */
public class MainActivity extends Activity implements ChatController.View {
    private static final int REQUEST_IMPORT = 1;

    private ChatController controller;
    private List<ModelFiles.Program> programs = new ArrayList<>();
    private GenerationSettings settings;

    private Spinner programSpinner;
    private Switch deltaSwitch;
    private TextView status;
    private TextView transcript;
    private ScrollView scroll;
    private EditText input;
    private Button load;
    private Button send;
    private Button stop;
    private Button newChat;

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
        load = findViewById(R.id.load);
        send = findViewById(R.id.send);
        stop = findViewById(R.id.stop);
        newChat = findViewById(R.id.new_chat);
        handleInsets(findViewById(R.id.root));
        settings = GenerationSettings.fromMap(prefs().getAll());
        controller = ChatController.get();
        load.setOnClickListener(v -> loadSelected());
        findViewById(R.id.settings).setOnClickListener(v -> showSettings());
        findViewById(R.id.import_program).setOnClickListener(v -> pickFiles());
        send.setOnClickListener(v -> sendMessage());
        stop.setOnClickListener(v -> controller.stop());
        newChat.setOnClickListener(v -> controller.newChat());
        programSpinner.setOnItemSelectedListener(new AdapterView.OnItemSelectedListener() {
            @Override
            public void onItemSelected(AdapterView<?> parent, View view, int position, long id) {
                updateSwitch(programs.get(position));
            }

            @Override
            public void onNothingSelected(AdapterView<?> parent) {}
        });
        refreshPrograms();
        controller.attach(this, this::runOnUiThread);   // shows the state it kept (a rotation loses nothing)
    }

    @Override
    protected void onDestroy() {
        super.onDestroy();
        controller.detach(this);
        if (isFinishing()) {
            controller.shutdown();                      // leaving for good: free the program
        }
    }

    /** Edge-to-edge (targetSdk 35): keep the controls clear of the system bars and the keyboard. */
    @SuppressWarnings("deprecation")
    private void handleInsets(View root) {
        final int pad = root.getPaddingLeft();
        root.setOnApplyWindowInsetsListener((v, insets) -> {
            int l, t, r, b;
            if (Build.VERSION.SDK_INT >= 30) {
                android.graphics.Insets i = insets.getInsets(WindowInsets.Type.systemBars() | WindowInsets.Type.ime());
                l = i.left;
                t = i.top;
                r = i.right;
                b = i.bottom;
            } else {
                l = insets.getSystemWindowInsetLeft();
                t = insets.getSystemWindowInsetTop();
                r = insets.getSystemWindowInsetRight();
                b = insets.getSystemWindowInsetBottom();
            }
            v.setPadding(pad + l, pad + t, pad + r, pad + b);
            return insets;
        });
        root.requestApplyInsets();
    }

    // ------------------------------------------------------------------ ChatController.View
    @Override
    public void onState(String s, String text, boolean busy, boolean loaded, boolean generating) {
        status.setText(s.isEmpty() ? (programs.isEmpty()
                ? getString(R.string.no_programs, getExternalFilesDir(null).getPath()) : getString(R.string.pick_program))
                : s);
        transcript.setText(text);
        load.setEnabled(!busy);
        programSpinner.setEnabled(!busy);
        deltaSwitch.setEnabled(!busy && partnerOfCurrent() != null);
        send.setEnabled(!busy && loaded);
        newChat.setEnabled(!busy && loaded);
        stop.setEnabled(generating);
        scroll.post(() -> scroll.fullScroll(View.FOCUS_DOWN));
    }

    @Override
    public void onText(String fresh) {
        transcript.append(fresh);
        scroll.post(() -> scroll.fullScroll(View.FOCUS_DOWN));
    }

    // ------------------------------------------------------------------ programs
    private void refreshPrograms() {
        programs = ModelFiles.find(getExternalFilesDir(null), new File("/data/local/tmp/deltallm"));
        List<String> labels = new ArrayList<>();
        for (ModelFiles.Program p : programs) {
            labels.add(p.label());
        }
        programSpinner.setAdapter(new ArrayAdapter<>(this, android.R.layout.simple_spinner_dropdown_item, labels));
    }

    private ModelFiles.Program partnerOfCurrent() {
        ModelFiles.Program cur = controller == null ? null : controller.current();
        return cur == null ? null : ModelFiles.partner(programs, cur);
    }

    private void updateSwitch(ModelFiles.Program p) {
        deltaSwitch.setOnCheckedChangeListener(null);
        deltaSwitch.setChecked("delta".equals(p.attention));
        deltaSwitch.setEnabled(!controller.busy() && ModelFiles.partner(programs, p) != null);
        deltaSwitch.setOnCheckedChangeListener((b, checked) -> switchAttention(checked));
    }

    private void switchAttention(boolean delta) {
        ModelFiles.Program partner = partnerOfCurrent();
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

    private void load(ModelFiles.Program p) {
        ActivityManager am = (ActivityManager) getSystemService(Context.ACTIVITY_SERVICE);
        ActivityManager.MemoryInfo mi = new ActivityManager.MemoryInfo();
        am.getMemoryInfo(mi);
        String problem = MemoryBudget.problem(p, controller.current(), mi.availMem);
        if (problem != null) {
            status.setText(problem);
            return;
        }
        controller.load(p, settings.threads);
    }

    private void sendMessage() {
        String text = input.getText().toString().trim();
        if (!text.isEmpty()) {
            input.setText("");
            controller.send(text, settings);
        }
    }

    // ------------------------------------------------------------------ import (Storage Access Framework)
    private void pickFiles() {
        Intent i = new Intent(Intent.ACTION_OPEN_DOCUMENT).addCategory(Intent.CATEGORY_OPENABLE).setType("*/*")
                .putExtra(Intent.EXTRA_ALLOW_MULTIPLE, true);
        startActivityForResult(i, REQUEST_IMPORT);
        Toast.makeText(this, R.string.import_hint, Toast.LENGTH_LONG).show();
    }

    @Override
    protected void onActivityResult(int requestCode, int resultCode, Intent data) {
        super.onActivityResult(requestCode, resultCode, data);
        if (requestCode != REQUEST_IMPORT || resultCode != RESULT_OK || data == null) {
            return;
        }
        final List<Uri> uris = new ArrayList<>();
        ClipData clip = data.getClipData();
        if (clip != null) {
            for (int k = 0; k < clip.getItemCount(); k++) {
                uris.add(clip.getItemAt(k).getUri());
            }
        } else if (data.getData() != null) {
            uris.add(data.getData());
        }
        final File dest = new File(getExternalFilesDir(null), "imported");
        status.setText(R.string.importing);
        new Thread(() -> {
            String message;
            try {
                message = getString(R.string.imported, copyAll(uris, dest), dest.getPath());
            } catch (IOException | RuntimeException e) {
                message = getString(R.string.import_failed, String.valueOf(e.getMessage()));
            }
            final String m = message;
            runOnUiThread(() -> {
                status.setText(m);
                refreshPrograms();
            });
        }, "deltallm-import").start();
    }

    /** Copies each picked file into dest under its display name (through a temp file: no half copies). */
    private int copyAll(List<Uri> uris, File dest) throws IOException {
        if (!dest.isDirectory() && !dest.mkdirs()) {
            throw new IOException("cannot create " + dest);
        }
        int n = 0;
        for (Uri uri : uris) {
            String name = displayName(uri);
            if (name == null || name.contains("/") || name.startsWith(".")) {
                throw new IOException("a picked file has no usable name: " + uri);
            }
            File tmp = new File(dest, "." + name + ".part");
            try (InputStream in = getContentResolver().openInputStream(uri);
                 OutputStream out = new FileOutputStream(tmp)) {
                if (in == null) {
                    throw new IOException("cannot read " + name);
                }
                byte[] buf = new byte[1 << 20];
                for (int r; (r = in.read(buf)) > 0; ) {
                    out.write(buf, 0, r);
                }
            } catch (IOException | RuntimeException e) {
                tmp.delete();
                throw e;
            }
            if (!tmp.renameTo(new File(dest, name))) {
                tmp.delete();
                throw new IOException("cannot write " + name);
            }
            n++;
        }
        return n;
    }

    private String displayName(Uri uri) {
        try (Cursor c = getContentResolver().query(uri, new String[] {OpenableColumns.DISPLAY_NAME}, null, null, null)) {
            if (c != null && c.moveToFirst()) {
                return c.getString(0);
            }
        }
        return uri.getLastPathSegment();
    }

    // ------------------------------------------------------------------ settings (persisted)
    private SharedPreferences prefs() {
        return getSharedPreferences("settings", MODE_PRIVATE);
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
                        ModelFiles.Program cur = controller.current();
                        boolean reload = newThreads != settings.threads && cur != null;
                        settings = new GenerationSettings(Float.parseFloat(temperature.getText().toString().trim()),
                                Integer.parseInt(maxTokens.getText().toString().trim()), newThreads,
                                system.getText().toString(), settings.seed);
                        SharedPreferences.Editor e = prefs().edit();
                        for (Map.Entry<String, String> kv : settings.toMap().entrySet()) {
                            e.putString(kv.getKey(), kv.getValue());
                        }
                        e.apply();
                        if (reload) {
                            load(cur);      // the thread count is the engine's: reload
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
