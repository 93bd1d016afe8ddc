"""deltallm::dense_attention (our kernel's exact path, the dense program's attention by default)
against exact float64 attention, chunked prefill and decode, every variant and thread count."""
from __future__ import annotations

import pytest
import torch

from delegates.library import core
from delegates.reference import dense_attention
from delegates import formats
from delegates.formats import cache_rows
from tests.delta_helpers import make_qkv, nmse


@pytest.fixture(params=[("avx2_fma", 1), ("avx2_fma", 2), ("scalar", 1)], ids=lambda p: f"{p[0]}-{p[1]}t")
def variant(request):
    from delegates import op  # noqa: F401

    arch, threads = request.param
    lib = core()
    lib.dlm_force_scalar(1 if arch == "scalar" else 0)
    if lib.dlm_kernel_arch().decode() != arch:
        pytest.skip(f"{arch} is not available on this CPU")
    lib.dlm_set_num_threads(threads)
    yield arch
    lib.dlm_force_scalar(0)
    lib.dlm_set_num_threads(1)


def run_dense(q, k, v, chunks, max_len, v_dtype=torch.float32, k_dtype=torch.float32):
    hkv, d = k.shape[1], k.shape[2]
    k_cache = formats.empty_cache(formats.as_format(k_dtype), max_len, hkv, d)
    v_cache = formats.empty_cache(formats.as_format(v_dtype), max_len, hkv, d)
    outs, pos = [], 0
    for n in chunks:
        sl = slice(pos, pos + n)
        outs.append(torch.ops.deltallm.dense_attention(q[None, sl], k[None, sl], v[None, sl], k_cache, v_cache,
                                                       pos)[0])
        pos += n
    return torch.cat(outs), k_cache, v_cache


@pytest.mark.parametrize("chunks,heads,kv_heads,d", [
    ([1], 1, 1, 64), ([7], 3, 1, 64), ([64, 1, 1, 1], 9, 3, 64), ([129, 1, 1], 6, 2, 128), ([20, 30, 14, 1, 1], 8, 8, 8),
    ([1] * 10, 4, 2, 64), ([300, 1], 32, 8, 64), ([8, 8, 8], 2, 1, 16), ([255, 1, 1], 3, 1, 64),
    ([600, 2, 1], 9, 3, 64)])
def test_chunked_prefill_and_decode_match_exact_attention(variant, chunks, heads, kv_heads, d):
    n = sum(chunks)
    q, k, v = make_qkv(n, heads, kv_heads, d, seed=n + d)
    got, k_cache, v_cache = run_dense(q, k, v, chunks, n + 3)
    assert nmse(got, dense_attention(q, k, v)) <= 1e-10
    assert torch.equal(cache_rows(k_cache, 0, n), k) and torch.equal(cache_rows(v_cache, 0, n), v)
    assert not k_cache[0, :, n:].any()


# query rows per kv head lt / eq / gt the 8-row decode tile, the P·V micro-tile and the 64-row tile
@pytest.mark.parametrize("rows,group", [(1, 1), (8, 1), (9, 1), (63, 1), (64, 1), (65, 1), (21, 3), (22, 3)])
def test_tile_boundaries(variant, rows, group):
    q, k, v = make_qkv(rows, group, 1, 64, seed=rows)
    got, _, _ = run_dense(q, k, v, [rows], rows)
    assert nmse(got, dense_attention(q, k, v)) <= 1e-10


def test_fp16_v_cache_rounds_values_as_it_stores_them(variant):
    q, k, v = make_qkv(90, 6, 2, 64, seed=4)
    got, _, v_cache = run_dense(q, k, v, [70, 18, 1, 1], 96, torch.float16)
    assert torch.equal(cache_rows(v_cache, 0, 90), v.half())
    assert nmse(got, dense_attention(q, k, v.half().float())) <= 1e-10
    assert nmse(got, dense_attention(q, k, v)) > 1e-10   # the rounding is visible


F16_MAX = 65504.0


# wide (prefill) and narrow (decode) tiles, head_dim 64 (the unrolled decode kernel) and others,
# GQA groups 1..8, and decode past 256 keys (key splits)
@pytest.mark.parametrize("chunks,heads,kv_heads,d", [
    ([1], 1, 1, 64), ([70, 18, 1, 1], 6, 2, 64), ([9, 1, 1], 3, 1, 8), ([129, 1, 1], 6, 2, 128),
    ([65, 3, 1], 8, 1, 72), ([300, 1, 1], 9, 3, 64), ([64, 1, 1], 32, 8, 64),
    ([1100, 1, 1], 32, 8, 64)])   # decode splits of 512 keys (about 24 tasks per call), merged
def test_fp16_k_cache_rounds_keys_as_it_stores_them(variant, chunks, heads, kv_heads, d):
    n = sum(chunks)
    q, k, v = make_qkv(n, heads, kv_heads, d, seed=n + heads)
    k = k * 3.0                                            # keys of post-RoPE magnitude: rounding shows
    got, k_cache, _ = run_dense(q, k, v, chunks, n + 2, k_dtype=torch.float16)
    assert torch.equal(cache_rows(k_cache, 0, n).view(torch.int16), k.half().view(torch.int16))
    assert not k_cache[0, :, n:].view(torch.int16).any()
    assert nmse(got, dense_attention(q, k.half().float(), v)) <= 1e-10
    if n > 1:   # (one key's weight is 1 whatever its score)
        assert nmse(got, dense_attention(q, k, v)) > 1e-10   # the rounding is visible


def test_fp16_k_and_v_caches_clamp_like_torch_and_give_one_answer_whatever_the_chunking(variant):
    """Keys beyond fp16's range are clamped to ±65504 as stored (not inf, whose scores would be NaN),
    and the scores read every key from the cache, this call's too: one output for any chunking."""
    q, k, v = make_qkv(40, 4, 2, 64, seed=7)
    q = q * 1e-4                                           # scores of keys ~1e5 stay finite
    k[5, 0, :4] = torch.tensor([7e4, -1e5, 65519.0, float("inf")])
    whole, k_cache, _ = run_dense(q, k, v, [40], 41, torch.float16, torch.float16)
    split, _, _ = run_dense(q, k, v, [17, 21, 1, 1], 41, torch.float16, torch.float16)
    want_k = k.clamp(-F16_MAX, F16_MAX).half()
    assert torch.equal(cache_rows(k_cache, 0, 40).view(torch.int16), want_k.view(torch.int16))
    assert torch.isfinite(whole).all()
    ref = dense_attention(q, want_k.float(), v.half().float())
    assert nmse(whole, ref) <= 1e-10 and nmse(split, ref) <= 1e-10


def test_matches_executorch_custom_sdpa():
    from export.attention import load_llama_custom_ops

    load_llama_custom_ops()
    q, k, v = make_qkv(70, 9, 3, 64, seed=1)
    got, _, _ = run_dense(q, k, v, [64, 5, 1], 80)
    kc, vc = torch.zeros(1, 80, 3, 64), torch.zeros(1, 80, 3, 64)
    outs = []
    for start, n in ((0, 64), (64, 5), (69, 1)):
        torch.ops.llama.update_cache(k[None, start:start + n], kc, start)
        torch.ops.llama.update_cache(v[None, start:start + n], vc, start)
        outs.append(torch.ops.llama.custom_sdpa(q[None, start:start + n], kc, vc, start, None, 0, True)[0])
    assert nmse(got, torch.cat(outs)) <= 1e-10


def _bad(**change):
    from delegates import op  # noqa: F401

    q, k, v = make_qkv(4, 4, 2, 64)
    args = dict(q=q[None], k=k[None], v=v[None], k_cache=torch.zeros(1, 2, 8, 64), v_cache=torch.zeros(1, 2, 8, 64),
                start_pos=0)
    args.update(change)
    return torch.ops.deltallm.dense_attention(*args.values())


@pytest.mark.parametrize("change,message", [
    (dict(q=torch.zeros(4, 4, 64)), "rank 4"),
    (dict(k=torch.zeros(1, 4, 3, 64)), "k and v must have the same shape"),
    (dict(q=torch.zeros(1, 4, 4, 32)), "k and v must have the same shape"),
    (dict(q=torch.zeros(1, 4, 4, 12), k=torch.zeros(1, 4, 2, 12), v=torch.zeros(1, 4, 2, 12)), "multiple of 8"),
    (dict(k_cache=torch.zeros(1, 2, 9, 64)), r"v_cache must have shape \[1, 2 \(kv heads\), max context .*got \[1, 2, 8, 64\]"),
    (dict(k_cache=torch.zeros(1, 8, 2, 64)), r"k_cache must have shape \[1, 2 \(kv heads\).* \(head-major\), got \[1, 8, 2"),
    (dict(v_cache=torch.zeros(1, 2, 8, 64, dtype=torch.int32)), r"v_cache must be float32 or float16 .* got torch.int32"),
    (dict(k_cache=torch.zeros(1, 2, 8, 64, dtype=torch.bfloat16)), r"k_cache must be float32 or float16 .* got torch.bf"),
    (dict(k_cache=torch.zeros(1, 2, 8, 64, dtype=torch.uint8)), r"k_cache .* q8_0 / q4_0 blocks \[.., 68 or 36\]"),
    (dict(q=torch.zeros(1, 4, 4, 64, dtype=torch.float64)), "q must be torch.float32"),
    (dict(start_pos=6), "cache overflow"),
    (dict(q=torch.zeros(1, 4, 3, 64)), "multiple of n_kv_heads"),
])
def test_bad_input_raises_with_message(change, message):
    with pytest.raises(RuntimeError, match=message):
        _bad(**change)


def test_fp16_v_cache_store_rounds_clamps_and_keeps_nan_like_torch(variant):
    """The V cache's fp16 store (a vector micro-kernel per arch) on the values where conversions
    differ: ties to even, the subnormal range, the clamp at ±65504 (65520 would round to inf),
    infinities, NaN and signed zero; bit for bit what `clamp(±65504).half()` gives."""
    tie = 2.0 ** -11   # half an fp16 ulp at 1.0
    edge = [0.0, -0.0, 1.0 + tie, 1.0 + 3 * tie, -(1.0 + tie), 2.0 ** -24 * 1.5, 2.0 ** -24 * 2.5, 2.0 ** -26,
            6.0e-5, -6.1e-5, 65504.0, 65519.0, 65520.0, -65520.0, 1e9, float("inf"), float("-inf"), float("nan"),
            3.14159265, -2.7182818, 1e-8, 0.1, 1234.5678, -0.33333334]
    v = torch.tensor(edge * 2, dtype=torch.float32).reshape(3, 1, 16)
    q, k, _ = make_qkv(3, 1, 1, 16, seed=3)
    _, _, v_cache = run_dense(q, k, v, [2, 1], 4, v_dtype=torch.float16)
    want = v.clamp(-65504.0, 65504.0).half()
    assert torch.equal(cache_rows(v_cache, 0, 3).view(torch.int16), want.view(torch.int16))
    assert cache_rows(v_cache, 0, 3).isnan().sum() == 2 and not cache_rows(v_cache, 0, 3).isinf().any()


def test_task_pool_gives_every_call_all_its_tasks_whether_its_workers_spin_or_sleep():
    """The core's pool (two threads) spins for a while after each call, then sleeps: calls back to
    back, within the spin and after it each give the same output. One kv head: the call's five
    tasks end unevenly and the merge follows at once, so a caller that did not wait for the
    worker's last task would merge a split not yet written."""
    import time
    from delegates import op  # noqa: F401

    lib = core()
    lib.dlm_set_num_threads(2)
    try:
        q, k, v = make_qkv(1101, 4, 1, 64, seed=5)
        k_cache = formats.empty_cache(formats.as_format(torch.float16), 1101, 1, 64)
        v_cache = formats.empty_cache(formats.as_format(torch.float16), 1101, 1, 64)
        torch.ops.deltallm.dense_attention(q[None, :1100], k[None, :1100], v[None, :1100], k_cache, v_cache, 0)
        want = torch.ops.deltallm.dense_attention(q[None, 1100:], k[None, 1100:], v[None, 1100:], k_cache, v_cache, 1100)
        for i in range(300):
            time.sleep((0.0, 2e-5, 2e-4, 2e-3)[i % 4])   # back to back, within and past the spin
            got = torch.ops.deltallm.dense_attention(q[None, 1100:], k[None, 1100:], v[None, 1100:], k_cache,
                                                     v_cache, 1100)
            assert torch.equal(got, want), i
        assert nmse(want[0], dense_attention(q, k.half().float(), v.half().float())[1100:]) <= 1e-10
    finally:
        lib.dlm_set_num_threads(1)
