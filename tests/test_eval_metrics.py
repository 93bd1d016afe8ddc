"""Metric definitions (lm-eval / official SQuAD) and the sweep's best-point rule."""
from __future__ import annotations

import math

import pytest

from export.evaluate.metrics import mean_stderr, perplexity_stderr, squad_exact, squad_f1
from export.evaluate.results import EvalResult
from export.evaluate.sweep import pick_best, summarize


def test_squad_normalisation_and_f1():
    assert squad_exact("The Denver Broncos!", ["Denver Broncos"]) == 1.0
    assert squad_exact("Broncos", ["Denver Broncos"]) == 0.0
    assert squad_f1("Broncos", ["Denver Broncos"]) == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert squad_f1("x", ["Denver Broncos", "x"]) == 1.0      # max over gold answers
    assert squad_f1("", [""]) == 1.0 and squad_f1("a b", [""]) == 0.0


def test_mean_stderr_is_sample_std_over_sqrt_n():
    m, se = mean_stderr([1.0, 0.0, 1.0, 0.0])
    assert m == 0.5 and se == pytest.approx(math.sqrt((4 * 0.25) / 3 / 4))
    assert math.isnan(mean_stderr([1.0])[1])


def test_perplexity_is_token_weighted():
    ppl, se = perplexity_stderr([2.0, 6.0], [1, 3])
    assert ppl == pytest.approx(math.exp(8.0 / 4.0))
    assert se == pytest.approx(0.0)   # both documents have the same per-token NLL


def _r(setting, task, value, s_c=None, metric="acc"):
    return EvalResult(setting=setting, backend="eager", quantization="fp32", task=task, metric=metric, value=value,
                      stderr=0.01, n=100, theta=None, gamma=None, w_decode=None, prefill_s_m=None,
                      prefill_s_c=s_c, all_s_m=None, all_s_c=s_c, tokens=1, seconds=1.0)


def test_best_point_is_highest_s_c_within_budget():
    rows = [_r("dense", "piqa", 0.70), _r("dense", "perplexity", 20.0, metric="perplexity"),
            _r("a", "piqa", 0.699, 0.40), _r("a", "perplexity", 20.1, 0.40, "perplexity"),
            _r("b", "piqa", 0.690, 0.60), _r("b", "perplexity", 20.2, 0.60, "perplexity"),
            _r("c", "piqa", 0.698, 0.55), _r("c", "perplexity", 21.0, 0.55, "perplexity")]
    s = {x.setting: x for x in summarize(rows)}
    assert s["a"].mc_drop == pytest.approx(0.1) and s["c"].ppl_increase_pct == pytest.approx(5.0)
    assert pick_best(list(s.values()), budget=0.5, ppl_budget=2.0).setting == "a"      # b drops 1 point, c +5 %
    assert pick_best(list(s.values()), budget=1.5, ppl_budget=2.0).setting == "b"
    assert pick_best(list(s.values()), budget=0.05, ppl_budget=2.0) is None


def test_paired_standard_error_uses_the_same_documents():
    base = _r("dense", "piqa", 0.5)
    base.samples = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    same_but_one = _r("a", "piqa", 0.5 - 1 / 6, 0.4)
    same_but_one.samples = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    s = summarize([base, same_but_one])[0]
    assert s.mc_drop == pytest.approx(100 / 6)
    assert s.mc_drop_se == pytest.approx(mean_stderr([0, 0, 0, 0, 100.0, 0])[1])


def test_table_and_best_commands_read_results_files(tmp_path, capsys):
    from export.evaluate.cli import main
    from export.evaluate.results import to_json

    rows = [_r("dense", "piqa", 0.70), _r("a", "piqa", 0.699, 0.40), _r("b", "piqa", 0.60, 0.60)]
    path = tmp_path / "results.json"
    path.write_text(to_json(rows))
    assert main(["table", str(path)]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert len(table) == 2 + 3 and "| a | eager | fp32 | 69.90 ± 1.00 (n=100) | 40.0% |" in table[3]
    assert main(["best", str(path), "--budget", "0.5"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("a [fp32] S_c 40.0%")
    assert main(["best", str(path), "--budget", "0.01"]) == 1


def test_agreement_flags_differences_beyond_one_stderr():
    from export.evaluate.commands import agreement

    eager = [_r("d", "piqa", 0.70, 0.40), _r("d", "boolq", 0.50, 0.40)]
    pte = [_r("d", "piqa", 0.705, 0.401), _r("d", "boolq", 0.53, 0.40)]
    for r in pte:
        r.backend = "pte"
    rows = agreement(eager, pte).strip().splitlines()[2:]
    assert rows[0].endswith("| yes |") and rows[1].endswith("| NO |")     # 0.5 vs 3 stderr


@pytest.mark.parametrize("overrides,label", [
    ([], "dense"),
    (["attention.v_cache=fp16"], "dense V fp16"),
    (["attention.k_cache=fp16", "attention.v_cache=fp16"], "dense K fp16 V fp16"),
    (["attention.kind=delta", "attention.theta=0.6", "attention.gamma=0.1"], "delta θ0.6 γ0.1 Wd4"),
    (["attention.kind=delta", "attention.theta=0.6", "attention.v_cache=fp16"], "delta θ0.6 γ0.1 Wd4 V fp16"),
    (["attention.kind=delta", "attention.theta=0.6", "attention.v_cache=fp16", "attention.dk_budget=0.75"],
     "delta θ0.6 γ0.1 Wd4 V fp16 ΔK budget 0.75"),
])
def test_setting_label_names_what_changes_accuracy(overrides, label):
    from export.config import load_config
    from export.evaluate.runner import setting_label

    assert setting_label(load_config("smollm2_135m.yaml", overrides)) == label


def _with_samples(setting, task, samples, metric="acc"):
    r = _r(setting, task, sum(samples) / len(samples), metric=metric)
    r.samples, r.n = list(samples), len(samples)
    return r


def test_paired_change_counts_the_documents_that_moved():
    from export.evaluate.compare import paired_change

    m, se, up, down = paired_change([1, 0, 1, 1, 0], [1, 1, 0, 0, 0])
    assert (m, up, down) == (pytest.approx(-0.2), 1, 2)
    assert se == pytest.approx(mean_stderr([0, 1, -1, -1, 0])[1])
    with pytest.raises(ValueError, match="differ in length"):
        paired_change([1.0], [1.0, 0.0])


def test_compare_reads_a_drop_against_its_paired_standard_error(tmp_path, capsys):
    """400 documents: 40 fall from 1 to 0 and 10 rise. The change (-7.5 points) is beyond 2 paired
    standard errors ("worse") though the base run's own standard error is 2.5; 30 down and 25 up
    (-1.25) is not; a second task
    whose file holds only its first 100 documents is compared on those."""
    from export.evaluate.cli import main
    from export.evaluate.results import to_json

    base = [1.0] * 200 + [0.0] * 200
    worse = [0.0] * 40 + [1.0] * 160 + [1.0] * 10 + [0.0] * 190
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "results.json").write_text(to_json(
        [_with_samples("dense", "piqa", base), _with_samples("dense", "squad", base, "f1")]))
    (tmp_path / "other.json").write_text(to_json(
        [_with_samples("fp16", "piqa", worse), _with_samples("fp16", "squad", worse[:100], "f1")]))
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "other.json"), "--format", "json"]) == 0
    import json
    piqa, squad = json.loads(capsys.readouterr().out)
    assert (piqa["n"], piqa["change"], piqa["up"], piqa["down"]) == (400, pytest.approx(-7.5), 10, 40)
    assert piqa["paired_se"] == pytest.approx(mean_stderr([-100.0] * 40 + [100.0] * 10 + [0.0] * 350)[1])
    assert piqa["verdict"] == "worse" and piqa["within_1se"] is False
    assert squad["n"] == 100 and squad["change"] == pytest.approx(-40.0) and squad["verdict"] == "worse"
    noisy = [0.0] * 30 + [1.0] * 170 + [1.0] * 25 + [0.0] * 175
    (tmp_path / "noisy.json").write_text(to_json([_with_samples("noisy", "piqa", noisy)]))
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "noisy.json")]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1]
    assert "| -1.25 |" in row and "| 25 / 30 | yes | no difference |" in row


@pytest.mark.parametrize("base_rows,other_rows,message", [
    ([("a", "piqa"), ("b", "piqa")], [("c", "piqa")], "more than one piqa row"),
    ([("a", "piqa")], [("c", "boolq")], "no task in common"),
    ([("a", "piqa")], [("c", "piqa", None)], "kept no per-document samples"),
])
def test_compare_refuses_what_it_cannot_pair(tmp_path, capsys, base_rows, other_rows, message):
    from export.evaluate.cli import main
    from export.evaluate.results import to_json

    def rows(spec):
        return [_with_samples(s[0], s[1], [1.0, 0.0]) if len(s) == 2 else _r(s[0], s[1], 0.5) for s in spec]

    (tmp_path / "b.json").write_text(to_json(rows(base_rows)))
    (tmp_path / "o.json").write_text(to_json(rows(other_rows)))
    assert main(["compare", str(tmp_path / "b.json"), str(tmp_path / "o.json")]) == 2
    assert message in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "missing"), str(tmp_path / "o.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_compare_edge_cases_one_document_and_a_uniform_move():
    from export.evaluate.compare import compare_one

    one = compare_one(_with_samples("a", "piqa", [1.0]), _with_samples("b", "piqa", [0.0]))
    assert (one.verdict, one.z, one.paired_se, one.change) == ("too few documents", None, None, -100.0)
    uniform = compare_one(_with_samples("a", "piqa", [0.0, 0.0, 0.0]), _with_samples("b", "piqa", [1.0, 1.0, 1.0]))
    assert (uniform.verdict, uniform.z, uniform.paired_se, uniform.up) == ("better", None, 0.0, 3)
    ppl = compare_one(_with_samples("a", "perplexity", [10.0, 20.0, 30.0], "perplexity"),
                      _with_samples("b", "perplexity", [11.0, 22.0, 33.0], "perplexity"))
    assert ppl.metric == "nll/doc" and ppl.change == pytest.approx(2.0) and ppl.verdict == "worse"   # more NLL
