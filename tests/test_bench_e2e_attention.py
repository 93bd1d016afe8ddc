"""bench/e2e_attention.py's pieces that run without exports: the hypervisor-steal reading, the
merging of samples across rounds, the median per cell, the ratios of the cells and within every
round, and the refusal of bad --rounds/--reps."""
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from e2e_attention import cpu_times, merge, ms  # noqa: E402


def test_cpu_times_reads_steal_and_total_jiffies_that_advance():
    if not Path("/proc/stat").is_file():   # not Linux: no reading, and the bench reports no steal
        assert cpu_times() is None
        return
    steal0, total0 = cpu_times()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:   # busy: the total must move
        pass
    steal1, total1 = cpu_times()
    assert 0 <= steal0 <= total0 and 0 <= steal1 <= total1
    assert total1 > total0 and steal1 >= steal0


def test_merge_appends_every_round_and_ms_takes_the_median():
    cell = {}
    merge(cell, {"prefill_tps": [100.0], "decode_tps": [50.0, 40.0]})
    merge(cell, {"prefill_tps": [25.0, 1000.0], "decode_tps": [20.0]})
    assert cell == {"prefill_tps": [100.0, 25.0, 1000.0], "decode_tps": [50.0, 40.0, 20.0]}
    assert ms(cell["prefill_tps"]) == pytest.approx(10.0)   # median of 10, 40, 1 ms: an outlier round does not move it
    assert ms(cell["decode_tps"]) == pytest.approx(25.0)


@pytest.mark.parametrize("flag", ["--rounds", "--reps"])
def test_bad_rounds_or_reps_is_one_clear_error(flag):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "e2e_attention.py"), flag, "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "--rounds and --reps must be at least 1" in r.stderr


def test_ratios_of_the_cells_and_within_every_round():
    from e2e_attention import ratio_cell, ratios

    # two rounds; the machine ran twice as slow in the second, for both programs alike
    per_round = [{"dense_f16v": {100: {"decode_tps": [100.0]}}, "delta_f16v": {100: {"decode_tps": [125.0]}},
                  "llama.cpp": {100: {"decode_tps": [50.0]}}},
                 {"dense_f16v": {100: {"decode_tps": [50.0]}}, "delta_f16v": {100: {"decode_tps": [50.0]}},
                  "llama.cpp": {100: {"decode_tps": [25.0]}}}]

    def cell(res, name):
        return ms(res[name][100]["decode_tps"])

    row = {"phase": "decode", "tokens": 116, "dense_f16v_ms": 15.0, "delta_f16v_ms": 12.0, "llama.cpp_ms": 30.0}
    ratios(row, per_round, cell)
    assert row["delta_f16v_vs_dense_f16v"] == pytest.approx(0.8)          # of the cells given
    assert row["delta_f16v_vs_dense_f16v_rounds"] == pytest.approx([0.8, 1.0])   # 8/10 ms, then 20/20 ms
    assert row["delta_f16v_vs_llamacpp"] == pytest.approx(0.4)
    assert row["delta_f16v_vs_llamacpp_rounds"] == pytest.approx([0.4, 0.5])
    assert "delta_vs_dense" not in row and "dense_vs_llamacpp" not in row   # no program, no ratio
    assert ratio_cell(row, "delta_f16v_vs_dense_f16v") == "0.80 (0.80–1.00)"
    one = {"phase": "prefill", "tokens": 8, "dense_f16v_ms": 10.0, "delta_f16v_ms": 9.0, "llama.cpp_ms": 30.0}
    ratios(one, per_round[:1], cell)   # one round: no per-round list; prefill: no llama.cpp ratio
    assert "delta_f16v_vs_dense_f16v_rounds" not in one and "delta_f16v_vs_llamacpp" not in one
    assert ratio_cell(one, "delta_f16v_vs_dense_f16v") == "0.90"


def test_ratios_of_differences_skip_a_denominator_that_is_not_positive():
    """The "decode above C0" rows divide differences of noisy cells: a dense difference <= 0 gives
    no ratio (not a negative or infinite one), and a round where it happens gives None there."""
    from e2e_attention import ratio_cell, ratios

    per_round = [{"dense_f16v": {1: {"decode_tps": [100.0]}, 2: {"decode_tps": [50.0]}},
                  "delta_f16v": {1: {"decode_tps": [100.0]}, 2: {"decode_tps": [80.0]}}},
                 {"dense_f16v": {1: {"decode_tps": [100.0]}, 2: {"decode_tps": [100.0]}},
                  "delta_f16v": {1: {"decode_tps": [100.0]}, 2: {"decode_tps": [50.0]}}}]

    def above(res, name):   # ms at prompt 2 minus ms at prompt 1
        return ms(res[name][2]["decode_tps"]) - ms(res[name][1]["decode_tps"])

    row = {"phase": "decode above 1", "tokens": 2, "dense_f16v_ms": 5.0, "delta_f16v_ms": 2.0}
    ratios(row, per_round, above)
    assert row["delta_f16v_vs_dense_f16v"] == pytest.approx(0.4)
    assert row["delta_f16v_vs_dense_f16v_rounds"][0] == pytest.approx(0.25)   # 2.5 ms / 10 ms
    assert row["delta_f16v_vs_dense_f16v_rounds"][1] is None                 # dense added 0 ms that round
    assert ratio_cell(row, "delta_f16v_vs_dense_f16v") == "0.40 (0.25–0.25)"
    flat = {"phase": "decode above 1", "tokens": 2, "dense_f16v_ms": -0.1, "delta_f16v_ms": 2.0}
    ratios(flat, per_round[:1], above)
    assert "delta_f16v_vs_dense_f16v" not in flat
    assert ratio_cell(flat, "delta_f16v_vs_dense_f16v") == "n/a"


def test_ours_are_compared_with_llama_cpps_fastest_configuration_in_the_row():
    from e2e_attention import LLAMA_CONFIGS, ratios

    assert {"llama.cpp", "llama.cpp_fa", "llama.cpp_q8kv_fa", "llama.cpp_q8k"} == set(LLAMA_CONFIGS)
    row = {"phase": "decode", "tokens": 4096, "dense_q8kv_ms": 12.0, "dense_f16kv_ms": 15.0, "llama.cpp_ms": 30.0,
           "llama.cpp_fa_ms": 24.0, "llama.cpp_q8kv_fa_ms": 40.0}
    ratios(row, [], lambda res, n: 0.0)
    assert row["llama.cpp_fastest"] == "llama.cpp_fa"
    assert row["dense_q8kv_vs_llamacpp"] == pytest.approx(0.5)
    assert row["dense_q8kv_vs_dense_f16kv"] == pytest.approx(0.8)
    assert row["dense_f16kv_vs_llamacpp"] == pytest.approx(15.0 / 24.0)
