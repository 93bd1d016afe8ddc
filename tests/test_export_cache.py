"""The content-hash cache of test exports: a hit reuses, any source or override change misses."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import export_cache


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A source tree and a cache folder of their own."""
    root = tmp_path / "src"
    for top in export_cache.SOURCE_DIRS:
        (root / top).mkdir(parents=True)
        (root / top / "a.py").write_text(f"# {top}\n")
    (root / "delegates" / "lib").mkdir()
    (root / "delegates" / "lib" / "notes.txt").write_text("a build output\n")
    monkeypatch.setattr(export_cache, "ROOT", root)
    monkeypatch.setattr(export_cache, "_loaded", {})
    monkeypatch.setenv("DELTALLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DELTALLM_TEST_EXPORT_CACHE", raising=False)
    return root


class Exporter:
    """Writes a program, a tokenizer and a manifest as the CLI does; counts its runs."""

    def __init__(self):
        self.runs = 0

    def __call__(self, folder: Path) -> dict:
        self.runs += 1
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "m.pte").write_bytes(b"PTE" + bytes([self.runs]))
        (folder / "tokenizer.json").write_text("{}")
        manifest = {"pte": "m.pte", "run": self.runs, "config": {"output": {"dir": str(folder)}}}
        (folder / "m.json").write_text(json.dumps(manifest))
        return manifest


def test_a_second_session_reuses_the_export_in_its_own_folder(tree, tmp_path):
    exporter = Exporter()
    first = export_cache.cached_export("tiny.yaml", tmp_path / "a", ["x=1"], exporter)
    (tmp_path / "a" / "m.pte").write_bytes(b"changed by a test")        # the cache keeps its own copy
    second = export_cache.cached_export("tiny.yaml", tmp_path / "b", ["x=1"], exporter)
    assert exporter.runs == 1
    assert second["run"] == first["run"] == 1
    assert second["config"]["output"]["dir"] == str(tmp_path / "b")
    assert json.loads((tmp_path / "b" / "m.json").read_text()) == second
    assert (tmp_path / "b" / "m.pte").read_bytes() == b"PTE\x01"
    assert (tmp_path / "b" / "tokenizer.json").is_file() and not (tmp_path / "b" / "key.json").exists()


@pytest.mark.parametrize("change", ["export", "delegates", "configs", "overrides", "config"])
def test_any_source_or_override_change_exports_afresh(tree, tmp_path, change):
    exporter = Exporter()
    export_cache.cached_export("tiny.yaml", tmp_path / "a", ["x=1"], exporter)
    config, overrides = "tiny.yaml", ["x=1"]
    if change == "overrides":
        overrides = ["x=2"]
    elif change == "config":
        config = "other.yaml"
    else:
        (tree / change / "a.py").write_text("# edited\n")
    got = export_cache.cached_export(config, tmp_path / "b", overrides, exporter)
    assert exporter.runs == 2 and got["run"] == 2


def test_build_outputs_do_not_change_the_key(tree):
    before = export_cache.export_key("tiny.yaml", [])
    (tree / "delegates" / "lib" / "notes.txt").write_text("rebuilt\n")
    (tree / "export" / "__pycache__").mkdir()
    (tree / "export" / "__pycache__" / "a.py").write_text("compiled\n")
    assert export_cache.export_key("tiny.yaml", []) == before


def test_turned_off_every_export_runs(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("DELTALLM_TEST_EXPORT_CACHE", "0")
    exporter = Exporter()
    for folder in ("a", "b"):
        export_cache.cached_export("tiny.yaml", tmp_path / folder, [], exporter)
    assert exporter.runs == 2
    assert not export_cache.cache_dir().exists()


def test_old_entries_are_pruned_per_config_and_overrides(tree, tmp_path):
    exporter = Exporter()
    export_cache.cached_export("tiny.yaml", tmp_path / "other", ["y=1"], exporter)   # another variant: kept
    for i in range(4):
        (tree / "export" / "a.py").write_text(f"# version {i}\n")
        export_cache.remember_loaded_sources()          # a new test process, with these sources
        export_cache.cached_export("tiny.yaml", tmp_path / f"v{i}", ["x=1"], exporter)
    entries = sorted(p.name for p in export_cache.cache_dir().iterdir())
    assert len(entries) == export_cache.KEEP_PER_CONFIG + 1, entries
    assert not any(p.name.startswith(".tmp-") for p in export_cache.cache_dir().iterdir())


def test_an_export_made_after_the_sources_changed_under_the_process_is_not_stored(tree, tmp_path):
    """A process keeps running the code it loaded: its exports after an edit are the old code's,
    so they must not be cached under the new sources' key (a later run would take them as its own)."""
    export_cache.remember_loaded_sources()
    (tree / "export" / "a.py").write_text("# edited while the tests run\n")
    exporter = Exporter()
    export_cache.cached_export("tiny.yaml", tmp_path / "a", [], exporter)
    export_cache.cached_export("tiny.yaml", tmp_path / "b", [], exporter)
    assert exporter.runs == 2
    assert not export_cache.cache_dir().exists() or not any(export_cache.cache_dir().iterdir())
    export_cache.remember_loaded_sources()              # the next process loads the edited sources
    export_cache.cached_export("tiny.yaml", tmp_path / "c", [], exporter)
    export_cache.cached_export("tiny.yaml", tmp_path / "d", [], exporter)
    assert exporter.runs == 3
