"""The Android project's Gradle files, read as text (no Android Gradle plugin here): configuration
runs no Python, the ExecuTorch source is a property with a clear error, and the wrapper is shipped
with the checksums the app's README states."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "android_demo"


def _code(path: Path) -> str:
    """The Groovy file without its comments."""
    text = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
    return "\n".join(line.split("//")[0] if "//" in line and '"' not in line.split("//")[0] else line
                     for line in text.splitlines())


def test_no_process_runs_at_configuration_time():
    for f in [ROOT / "settings.gradle", ROOT / "build.gradle", ROOT / "app" / "build.gradle"]:
        code = _code(f)
        for pattern in (r"providers\.exec", r"\.execute\(\)", r"\bexec\s*\{", r"ProcessBuilder", r"Runtime\.getRuntime"):
            assert not re.search(pattern, code), f"{f.name} runs a process while Gradle configures ({pattern})"
        for m in re.finditer(r"commandLine", code):     # only inside Exec tasks, which run when executed
            task = code[:m.start()].rfind("tasks.register(")
            assert task >= 0 and re.match(r'tasks\.register\("[^"]+", Exec\)', code[task:]), \
                f"{f.name}: a commandLine outside an Exec task"


def test_one_native_build_per_abi_shared_by_the_variants():
    code = _code(ROOT / "app" / "build.gradle")
    assert "externalNativeBuild" not in code            # AGP's would build ExecuTorch per variant
    assert re.search(r'def abis = \["arm64-v8a", "x86_64"\]', code)
    assert 'tasks.register("buildDeltallmJni_${abi' in code and "jniLibs.srcDirs += [jniOut]" in code


def test_the_source_is_a_property_whose_absence_names_the_key_and_the_command():
    code = _code(ROOT / "app" / "build.gradle")
    assert '"deltallm.executorchSrc", "EXECUTORCH_SRC"' in code
    assert re.search(r'GradleException\(.*deltallm\.executorchSrc', code, flags=re.S)
    assert "python -m device stage-source" in code
    assert re.search(r'tasks\.named\("preBuild"\).*dependsOn checkExecutorchSrc', code, flags=re.S)


def test_the_wrapper_is_shipped_and_its_checksums_are_the_readme_s():
    props = (ROOT / "gradle" / "wrapper" / "gradle-wrapper.properties").read_text()
    version = re.search(r"gradle-([\d.]+)-bin\.zip", props).group(1)
    readme = (ROOT / "README.md").read_text()
    assert f"Gradle {version}" in readme
    for f in (ROOT / "gradle" / "wrapper" / "gradle-wrapper.jar", ROOT / "gradlew"):
        assert f.is_file()
        assert hashlib.sha256(f.read_bytes()).hexdigest() in readme, f"{f.name}'s sha256 is not in the README"
    assert (ROOT / "gradlew").stat().st_mode & 0o111
    assert (ROOT / "gradlew").read_text().startswith("#!/bin/sh")
