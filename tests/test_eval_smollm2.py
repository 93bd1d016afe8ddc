"""`python -m export.evaluate` on the real SmolLM2-135M with real data (--limit, as CI runs it)."""
from __future__ import annotations

import json

import pytest

from export.evaluate.cli import main
from export.evaluate.tasks import TASKS

pytestmark = pytest.mark.smollm2


@pytest.fixture(scope="module")
def delta_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_delta")
    code = main(["run", "--config", "smollm2_135m.yaml", "quantization.linear=fp32", "attention.kind=delta",
                 "attention.theta=0.6", "attention.gamma=0.1", "--limit", "4", "--out", str(out), "-q"])
    assert code == 0
    return out


def test_every_task_reports_metric_stderr_and_kernel_sparsity(delta_run):
    rows = json.loads((delta_run / "results.json").read_text())
    assert [r["task"] for r in rows] == list(TASKS)
    for r in rows:
        assert r["n"] == 4 and r["tokens"] > 0
        lo, hi = (1.0, 1e4) if r["metric"] == "perplexity" else (0.0, 1.0)
        assert lo <= r["value"] <= hi
        assert 0.2 < r["prefill_s_m"] < 0.7 and 0.1 < r["prefill_s_c"] < r["prefill_s_m"]
        assert len(r["prefill_s_c_layers"]) == 30
        assert r["theta"] == 0.6 and r["gamma"] == 0.1 and r["w_decode"] == 4
    squad = next(r for r in rows if r["task"] == "squad")
    assert squad["all_s_c"] != squad["prefill_s_c"]           # decode steps are counted too
    for fmt in ("md", "csv", "jsonl"):
        assert (delta_run / f"results.{fmt}").stat().st_size > 0


def test_results_are_deterministic(delta_run, tmp_path):
    code = main(["run", "--config", "smollm2_135m.yaml", "quantization.linear=fp32", "attention.kind=delta",
                 "attention.theta=0.6", "--tasks", "piqa,squad", "--limit", "4", "--out", str(tmp_path), "-q"])
    assert code == 0
    first = {r["task"]: r for r in json.loads((delta_run / "results.json").read_text())}
    for r in json.loads((tmp_path / "results.json").read_text()):
        assert r["value"] == first[r["task"]]["value"] and r["prefill_s_c"] == first[r["task"]]["prefill_s_c"]


def test_sweep_writes_table_plot_and_best_point(tmp_path, capsys):
    code = main(["sweep", "--config", "smollm2_135m.yaml", "quantization.linear=fp32", "--theta", "0.3", "1.5",
                 "--tasks", "piqa,perplexity", "--limit", "3", "--out", str(tmp_path), "-q", "--budget", "100",
                 "--ppl-budget", "1000"])
    assert code == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    assert {r["setting"] for r in rows} == {"dense", "delta θ0.3 γ0.1 Wd4", "delta θ1.5 γ0.1 Wd4"}
    sc = {r["setting"]: r["prefill_s_c"] for r in rows if r["task"] == "perplexity"}
    assert sc["delta θ1.5 γ0.1 Wd4"] > sc["delta θ0.3 γ0.1 Wd4"] > 0
    table = (tmp_path / "sweep.md").read_text()
    assert "best within 100 points" in table and "θ1.5" in table.splitlines()[-1]
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
