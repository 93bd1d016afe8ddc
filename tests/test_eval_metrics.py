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
