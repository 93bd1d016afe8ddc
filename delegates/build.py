"""Build the delta-attention libraries with the system C++ compiler (run by install.sh).

    python -m delegates.build [--force] [--debug]

- delegates/lib/libdeltallm_core.so: the C core, micro-kernels (scalar + AVX2/FMA, or NEON with SDOT chosen at run time), counters, C API.
- delegates/lib/libdeltallm_executorch.so: the ExecuTorch kernels deltallm::delta_attention.out and
  deltallm::dense_attention.out,
  linked against the core and the executorch wheel's _portable_lib.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CSRC = HERE / "csrc"
LIB_DIR = HERE / "lib"
CORE = LIB_DIR / "libdeltallm_core.so"
ET_LIB = LIB_DIR / "libdeltallm_executorch.so"


def executorch_paths():
    import importlib.util

    spec = importlib.util.find_spec("executorch")
    if spec is None:
        raise SystemExit("build failed: executorch is not installed")
    root = Path(list(spec.submodule_search_locations)[0]).resolve()
    libs = sorted((root / "extension" / "pybindings").glob("_portable_lib*.so"))
    if not (root / "include").is_dir() or not libs:
        raise SystemExit(f"build failed: {root} has no include/ or _portable_lib (executorch==1.4.1 wheel expected)")
    return root / "include", libs[0]


def _run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.stderr.write(r.stderr)
        raise SystemExit(f"build failed: {' '.join(map(str, cmd[:3]))} ...")


def _sources(pattern_dirs):
    return sorted(p for d in pattern_dirs for p in d.glob("*.*") if p.suffix in (".cc", ".h"))


def _stale(target: Path, sources) -> bool:
    return not target.exists() or any(s.stat().st_mtime > target.stat().st_mtime for s in sources)


def build(force: bool = False, debug: bool = False) -> None:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise SystemExit("build failed: no C++ compiler (install g++)")
    LIB_DIR.mkdir(exist_ok=True)
    opt = ["-O0", "-g"] if debug else ["-O3", "-DNDEBUG"]
    base = [cxx, "-std=c++17", "-fPIC", *opt, "-Wall", "-Wno-unused-function", f"-I{CSRC}"]
    core_srcs = [CSRC / "deltaattn.cc", CSRC / "kernel_table.cc", CSRC / "deltaenc_budget.cc", CSRC / "task_pool.cc",
                 CSRC / "ukernels" / "f32_deltaattn_scalar.cc",
                 CSRC / "ukernels" / "f32_deltaattn_neon.cc",     # the NEON files compile to nothing off AArch64
                 CSRC / "ukernels" / "qblocks_scalar.cc", CSRC / "ukernels" / "qblocks_neon.cc"]
    x86 = platform.machine() in ("x86_64", "AMD64")
    deps = _sources([CSRC, CSRC / "ukernels"])
    with tempfile.TemporaryDirectory() as tmp:
        if force or _stale(CORE, deps):
            objs = []
            for src in core_srcs:
                obj = Path(tmp) / (src.stem + ".o")
                _run([*base, "-c", str(src), "-o", str(obj)])
                objs.append(obj)
            if x86:
                for name in ("f32_deltaattn_avx2", "qblocks_avx2"):
                    obj = Path(tmp) / f"{name}.o"
                    _run([*base, "-mavx2", "-mfma", "-mf16c", "-c", str(CSRC / "ukernels" / f"{name}.cc"), "-o", str(obj)])
                    objs.append(obj)
            elif platform.machine() in ("aarch64", "arm64"):
                obj = Path(tmp) / "qblocks_neondot.o"
                _run([*base, "-march=armv8.2-a+dotprod", "-c", str(CSRC / "ukernels" / "qblocks_neondot.cc"), "-o", str(obj)])
                objs.append(obj)
            out = Path(tmp) / CORE.name
            _run([*base, "-shared", *map(str, objs), "-o", str(out), "-Wl,-soname," + CORE.name, "-lpthread"])
            os.replace(out, CORE)
        include, portable = executorch_paths()
        if force or _stale(ET_LIB, deps + [CORE]):
            out = Path(tmp) / ET_LIB.name
            _run([*base, "-DC10_USING_CUSTOM_GENERATED_MACROS", f"-I{include}",
                  f"-I{include / 'executorch' / 'runtime' / 'core' / 'portable_type' / 'c10'}",
                  f"-I{CSRC / 'compat'}", "-shared", str(CSRC / "deltaattn_executorch.cc"), "-o", str(out),
                  f"-L{LIB_DIR}", "-ldeltallm_core", str(portable),
                  "-Wl,-rpath,$ORIGIN", f"-Wl,-rpath,{portable.parent}"])
            os.replace(out, ET_LIB)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    ap.add_argument("--debug", action="store_true", help="-O0 -g")
    ns = ap.parse_args()
    build(ns.force, ns.debug)
    print(f"built {CORE}\nbuilt {ET_LIB}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
