"""bench/delta_chunk_sparsity.py: the all-zero chunk rates it reports, on keys whose answer is known."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
from delta_chunk_sparsity import chunk_rows  # noqa: E402


def jumping_keys(n: int, hkv: int, d: int, moving: dict, step: float = 5.0) -> torch.Tensor:
    """Keys [1, n, hkv, d] whose elements moving[head] jump by `step` at every token, the rest still."""
    k = torch.zeros(1, n, hkv, d)
    for head, elements in moving.items():
        k[0, :, head, elements] = torch.arange(n, dtype=torch.float32).view(n, 1) * step
    return k


def test_chunk_rates_on_keys_with_known_sparsity():
    # Elements 0..7 of kv head 0 and 12..19 of kv head 1 jump by 5 at every token, the rest never
    # move: with θ 1, head 0's rows have one non-zero chunk of 4 and head 1's two (8..15, 16..23),
    # one once its elements are sorted by sparsity.
    r = chunk_rows(jumping_keys(257, 2, 32, {0: slice(0, 8), 1: slice(12, 20)}), 1.0)
    assert r["s_m"] == pytest.approx(24 / 32)
    assert r["zero_chunks"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    assert r["zero_chunks_sorted"] == pytest.approx(3 / 4)
    assert r["dim_s_min"] == 0.0 and r["dim_s_max"] == 1.0


def test_sorting_head_dim_gathers_scattered_sparse_elements():
    moving = [0, 2, 4, 6, 9, 11, 13, 15]   # one moving element in every pair: no chunk is all zero as stored
    k = jumping_keys(129, 1, 16, {0: moving}, step=3.0)
    r = chunk_rows(k, 1.0)
    assert r["zero_chunks"] == 0.0
    assert r["zero_chunks_sorted"] == pytest.approx(1 / 2)   # sorted: the 8 still elements fill one chunk
    assert chunk_rows(k, 0.0)["s_m"] == pytest.approx(1 / 2)  # θ 0: the still elements stay zero deltas


def test_key_density_and_what_a_budgeted_stream_defers():
    # kv head 0: 14 of 16 elements move at every token (density 0.875), head 1: 4 (0.25)
    r = chunk_rows(jumping_keys(65, 2, 16, {0: slice(0, 14), 1: slice(0, 4)}), 1.0)
    assert r["key_density_max"] == pytest.approx(14 / 16) and r["key_density_p99"] == pytest.approx(14 / 16)
    total = 14 + 4                                         # non-zeros per token, both heads
    # budgets ρ·16 → 8, 9, 11 values per key (whole rows of the 65-key stream give no more): from key 1
    # on head 0 stores exactly its budget, head 1 all of its 4
    assert r["deferred_50"] == pytest.approx((14 - 8) / total)
    assert r["deferred_60"] == pytest.approx((14 - 9) / total)
    assert r["deferred_70"] == pytest.approx((14 - 11) / total)
    for rho in (50, 60, 70):                               # head 0's deferred elements lag k by more than θ
        assert 0 < r[f"over_theta_{rho}"] <= 14 / 32
    # below every budget: nothing deferred, k̂ within θ everywhere
    r = chunk_rows(jumping_keys(65, 1, 16, {0: slice(0, 6)}), 1.0)
    assert all(r[f"{key}_{rho}"] == 0 for key in ("deferred", "over_theta") for rho in (50, 60, 70))
