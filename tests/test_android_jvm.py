"""The Android app's code that runs here: every class that does not touch android.* compiled with
javac and unit-tested on a host JVM (JUnit 4), the JNI tests through the app's own bridge classes
and the x86-64 libdeltallm_jni with real programs; the manifest and resources linked with aapt2
against framework-res.apk; the app's benchmark mode driven by `python -m device bench --runner
android` through the virtual device (its `am` starts the app's BenchMain on the JVM)."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from device.chat import render_chat
from device.cli import main
from device.keys import ensure_key
from device.virtual import VirtualDevice

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "android_demo" / "app"
MAIN_JAVA = APP / "src" / "main" / "java"
TEST_JAVA = APP / "src" / "test" / "java"
JARS = [Path("/usr/share/java/junit4.jar"), Path("/usr/share/java/hamcrest-core.jar")]
ANDROID_CLASSES = {"MainActivity.java", "BenchmarkActivity.java"}
FRAMEWORK_RES = Path("/usr/share/android-framework-res/framework-res.apk")


def _touches_android(path: Path) -> bool:
    return re.search(r"^import android\.", path.read_text(), re.M) is not None


@pytest.fixture(scope="session")
def jvm_classes(tmp_path_factory):
    out = tmp_path_factory.mktemp("jvm_classes")
    main_srcs = sorted(MAIN_JAVA.rglob("*.java"))
    assert {p.name for p in main_srcs if _touches_android(p)} == ANDROID_CLASSES
    srcs = [p for p in main_srcs if not _touches_android(p)] + sorted(TEST_JAVA.rglob("*.java"))
    cp = ":".join(map(str, JARS))
    r = subprocess.run(["javac", "-Xlint:all", "-Werror", "-d", str(out), "-cp", cp, *map(str, srcs)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def _classpath(classes: Path) -> str:
    return ":".join([str(classes), *map(str, JARS)])


def test_junit_suite_on_the_host_jvm(jvm_classes, runners, smollm2_8da8w, tiny_llama_delta,
                                     tiny_llama_fp32, tmp_path):
    from device.native_build import build_runner

    jni = build_runner("x86_64").jni_library       # the cached build of the current sources
    smol_dir, smol_manifest = smollm2_8da8w
    system = "You are a concise assistant."
    cases = [
        {"system": system, "turns": [{"role": "user", "content": "What is the capital of France?"}]},
        {"system": system, "turns": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                                     {"role": "user", "content": "Zürich 👍 \n two lines"}]},
        {"system": "Line one.\nLine two.", "turns": [{"role": "user", "content": "  spaced  "}]},
        {"system": system, "turns": []},
        {"system": "", "turns": [{"role": "user", "content": "Hi"}]},     # no system turn: the template's own
    ]
    for c in cases:
        system = [{"role": "system", "content": c["system"]}] if c["system"] else []
        c["expected"] = render_chat(smol_manifest, [*system, *c["turns"]])
        c["template"] = smol_manifest["chat_template"]
    expect = tmp_path / "chat_expect.json"
    expect.write_text(json.dumps(cases))
    smol = tmp_path / "smol"          # the program and its tokenizer alone in a folder
    smol.mkdir()
    for name in (smol_manifest["pte"], "tokenizer.json"):
        (smol / name).symlink_to(smol_dir / name)
    tests = sorted(p.stem for p in TEST_JAVA.rglob("*Test.java"))
    props = {"jni": jni, "smollm2": smol, "tiny_delta": tiny_llama_delta[0], "tiny_dense": tiny_llama_fp32[0],
             "chat_expect": expect}
    r = subprocess.run(["java", *[f"-Ddeltallm.{k}={v}" for k, v in props.items()], "-cp", _classpath(jvm_classes),
                        "org.deltallm.demo.JvmTestMain", *[f"org.deltallm.demo.{t}" for t in tests]],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    n_tests = sum(len(re.findall(r"@Test\b", p.read_text())) for p in TEST_JAVA.rglob("*Test.java"))
    assert f"{n_tests} passed, 0 failed, 0 skipped" in r.stdout, r.stdout[-2000:]


def test_aapt2_links_manifest_and_resources(tmp_path):
    compiled = tmp_path / "res.zip"
    r = subprocess.run(["aapt2", "compile", "--dir", str(APP / "src" / "main" / "res"), "-o", str(compiled)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    manifest = tmp_path / "AndroidManifest.xml"     # AGP adds the package from the namespace; so do we
    manifest.write_text((APP / "src" / "main" / "AndroidManifest.xml").read_text().replace(
        "<manifest ", '<manifest package="org.deltallm.demo" ', 1))
    apk = tmp_path / "app.apk"
    r = subprocess.run(["aapt2", "link", "-I", str(FRAMEWORK_RES), "--manifest", str(manifest), "-o", str(apk),
                        "--min-sdk-version", "28", "--target-sdk-version", "35", "--version-code", "1",
                        "--version-name", "0.1.0", "--java", str(tmp_path / "gen"), str(compiled)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r_java = (tmp_path / "gen" / "org" / "deltallm" / "demo" / "R.java").read_text()
    code = (MAIN_JAVA / "org" / "deltallm" / "demo" / "MainActivity.java").read_text()
    ours = set(re.findall(r"(?<!android\.)\bR\.(?:id|string|layout)\.(\w+)", code))
    missing = [name for name in ours if not re.search(rf"\b{name}\b", r_java)]
    assert not missing, f"MainActivity uses resources the app does not define: {missing}"
    framework = set(re.findall(r"android\.R\.(\w+\.\w+)", code))
    dump = subprocess.run(["aapt2", "dump", "resources", str(FRAMEWORK_RES)], capture_output=True, text=True).stdout
    absent = [name for name in framework
              if not re.search(rf"resource 0x\w+ {re.escape(name.replace('.', '/'))} ", dump)]
    assert framework and not absent, f"framework resources missing from framework-res: {absent}"


def test_benchmark_mode_through_the_virtual_device(jvm_classes, runners, tiny_llama_delta, tmp_path,
                                                   capsys, monkeypatch):
    from device import android_protocol as ap
    from device.native_build import build_runner

    jni = build_runner("x86_64").jni_library
    monkeypatch.setenv("DLM_ANDROID_APP", f"java -Ddeltallm.jni={jni} -cp {_classpath(jvm_classes)} "
                                          "org.deltallm.demo.BenchMain")
    out, m = tiny_llama_delta
    key = ensure_key(tmp_path / "adbkey")
    with VirtualDevice(tmp_path / "dev", authorized_keys=[Path(str(key) + ".pub").read_bytes()],
                       accept_new_keys=False, max_lifetime_s=600) as dev:
        code = main(["bench", "--device", dev.address, "--key", str(key), "--pte", str(out / m["pte"]),
                     "--runner", "android", "--prompt-lengths", "12", "40", "--decode-lengths", "3", "--reps", "2",
                     "--results-dir", str(tmp_path / "res")])
        markers = [p.read_text() for p in dev.sandbox.host_path(ap.FILES_DIR + "/bench").glob("*.done")]
    assert code == 0, capsys.readouterr().err
    assert markers == ["ok\n", "ok\n"]
    rows = json.loads((tmp_path / "res" / "results.json").read_text())
    assert [r["runner"] for r in rows] == ["android", "android"] and rows[0]["abi"] == "x86_64"
    assert 0 < rows[1]["prefill_s_c"] < 1 and min(rows[1]["decode_tps"]) > 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "res" / "results.json"), "--format", "md"]) == 0
    assert "| 40 | 3 |" in capsys.readouterr().out


def test_arm64_jni_library_is_cross_compiled():
    """The app's native sources (runner core, tokenizer, JNI bridge) build for arm64 here (glibc;
    the NDK's bionic build is the app's Gradle build) and export every native method of the bridge."""
    from device.native_build import abi_of_binary, build_runner

    lib = Path(build_runner("arm64-v8a").jni_library)
    assert abi_of_binary(lib) == "arm64-v8a"
    exported = subprocess.run(["aarch64-linux-gnu-nm", "-D", "--defined-only", str(lib)], capture_output=True,
                              text=True, check=True).stdout
    for java in (MAIN_JAVA / "org" / "deltallm" / "demo").glob("*.java"):
        for method in re.findall(r"private static native \S+ (\w+)\(", java.read_text()):
            assert f"Java_org_deltallm_demo_{java.stem}_{method}" in exported, (java.stem, method)
