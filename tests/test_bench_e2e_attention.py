"""bench/e2e_attention.py's pieces that run without exports: the hypervisor-steal reading, the
merging of samples across rounds, the median per cell, and the refusal of bad --rounds/--reps."""
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
