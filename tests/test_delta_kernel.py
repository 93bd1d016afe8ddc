"""The C++ kernel (through the eager op) against the references: outputs and exact counts."""
from __future__ import annotations

import ctypes
import itertools

import pytest
import torch

from delegates import stats
from delegates.formats import cache_rows
from delegates.library import AttnArgs, core
from delegates.reference import band_width, delta_attention_vectorized, run_calls
from tests.delta_helpers import KernelState, make_qkv, nmse, run_kernel


@pytest.fixture(params=["avx2_fma", "scalar"])
def variant(request):
    lib = core()
    lib.dlm_force_scalar(1 if request.param == "scalar" else 0)
    if lib.dlm_kernel_arch().decode() != request.param:
        pytest.skip(f"{request.param} is not available on this CPU")
    yield request.param
    lib.dlm_force_scalar(0)


GRID = [  # n, head_dim, gqa ratio, theta
    *itertools.product([1, 2, 7, 64, 129, 512], [64, 128], [1, 3], [0.0, 0.3, 1.0]),
]


@pytest.mark.parametrize("n,d,ratio,theta", GRID)
@pytest.mark.parametrize("gamma", [0.05, 0.1])
def test_single_call_matches_reference(variant, n, d, ratio, theta, gamma):
    hkv = 2 if n < 512 else 3
    q, k, v = make_qkv(n, hkv * ratio, hkv, d, seed=n + d)
    W = band_width(n, gamma, 1 << 20, 4)
    ref, _, counts = delta_attention_vectorized(q, k, v, theta, W)
    stats.reset()
    got, _ = run_kernel(q, k, v, [n], n + 3, theta, gamma, 1 << 20, 4)
    assert nmse(got, ref) <= 1e-10
    phase = "decode" if n == 1 else "prefill"
    c = stats.read(phase)[0]
    assert (c.dk_zeros, c.dk_elements, c.macs_performed, c.macs_dense) == \
        (counts.dk_zeros, counts.dk_elements, counts.macs_performed, counts.macs_dense)


# query rows per kv head: lt / eq / gt the 8-row (decode) tile, the 8-row P·V micro-tile and the
# 64-row tile (n positions x group heads), and n = 1
@pytest.mark.parametrize("rows,group", [(1, 1), (7, 1), (8, 1), (9, 1), (16, 1), (17, 1), (63, 1), (64, 1),
                                        (65, 1), (129, 1), (21, 3), (22, 3), (33, 4)])
def test_tile_boundaries(variant, rows, group):
    q, k, v = make_qkv(rows, group, 1, 64, seed=rows)
    ref, _, _ = delta_attention_vectorized(q, k, v, 0.3, 1)
    got, _ = run_kernel(q, k, v, [rows], rows, 0.3, 0.0, 1, 4)
    assert nmse(got, ref) <= 1e-10


@pytest.mark.parametrize("chunks", [[37, 1, 1, 20], [1] * 9, [64, 64, 1]])
def test_value_streams_are_packed_key_after_key(variant, chunks):
    """The state's layout contract: per kv head one stream in which key t's fp16 ΔK non-zeros (in
    element order) follow key t−1's, dk_end[t] = where they end, the mask marks them; key 0 dense."""
    n, hkv, d, theta = sum(chunks), 2, 64, 0.3
    q, k, v = make_qkv(n, 2 * hkv, hkv, d, seed=len(chunks))
    _, dk, _ = delta_attention_vectorized(q, k, v, theta, 1)
    _, st = run_kernel(q, k, v, chunks, n + 5, theta, 0.1, 1 << 20, 4)
    bits = (st.dk_mask[0, :n, :, :, None] >> torch.arange(8, dtype=torch.uint8)) & 1   # [n, hkv, d/8, 8]
    mask = bits.reshape(n, hkv, d).bool()
    want_mask = dk != 0
    want_mask[0] = True
    assert torch.equal(mask, want_mask)
    for g in range(hkv):
        nnz = mask[:, g].sum(-1)
        assert st.dk_end[0, :n, g].tolist() == torch.cumsum(nnz, 0).tolist()
        want = torch.cat([dk[t, g][mask[t, g]] for t in range(n)]).half()
        stream = st.dk_val[0, g].reshape(-1)
        assert torch.equal(stream[:len(want)], want), f"kv head {g}: stream differs from the keys' non-zeros"


@pytest.mark.parametrize("chunks,w_decode,w_max", [
    ([64, 1, 1, 1, 1, 1, 1, 1, 1], 4, 1 << 20), ([20, 30, 14, 1, 1, 1], 2, 3), ([1] * 12, 4, 100),
    ([129, 1, 1, 1], 8, 1 << 20)])
def test_chunked_prefill_and_decode_match_oracle(variant, chunks, w_decode, w_max):
    n = sum(chunks)
    q, k, v = make_qkv(n, 6, 2, 64, seed=n)
    ref, st = run_calls(q, k, v, chunks, n + 1, 0.6, 0.1, w_max, w_decode, dtype=torch.float32)
    ref64, _ = run_calls(q, k, v, chunks, n + 1, 0.6, 0.1, w_max, w_decode)
    stats.reset()
    got, _ = run_kernel(q, k, v, chunks, n + 1, 0.6, 0.1, w_max, w_decode, layer=3)
    assert nmse(got, ref64) <= 1e-10
    for phase, counts in (("prefill", st.prefill), ("decode", st.decode)):
        c = stats.read(phase)[3]
        assert (c.dk_zeros, c.dk_elements, c.macs_performed, c.macs_dense) == \
            (counts.dk_zeros, counts.dk_elements, counts.macs_performed, counts.macs_dense)
    assert all(x.calls == 0 for x in stats.read("prefill")[:3])


# Decode (<= 8 rows per kv head) splits the keys every DLM_CKPT_STRIDE (256) positions: lt / eq / gt one
# and two splits, a short prefill after a long context, an exact band wider than a split.
@pytest.mark.parametrize("chunks,w_decode", [([255, 1], 4), ([255, 1, 1], 4), ([300, 1, 1], 4), ([511, 1, 1], 4),
                                             ([700, 2, 1], 4), ([1100, 1], 4), ([600, 1, 1], 300)])
def test_decode_key_splits_match_oracle(variant, chunks, w_decode):
    n = sum(chunks)
    q, k, v = make_qkv(n, 6, 2, 64, seed=n)
    ref, st = run_calls(q, k, v, chunks, n + 1, 0.6, 0.1, 1 << 20, w_decode)
    stats.reset()
    got, _ = run_kernel(q, k, v, chunks, n + 1, 0.6, 0.1, 1 << 20, w_decode, layer=1)
    assert nmse(got[chunks[0]:], ref[chunks[0]:]) <= 1e-10
    c = stats.read("decode")[1]
    assert (c.dk_zeros, c.macs_performed, c.macs_dense) == (st.decode.dk_zeros, st.decode.macs_performed,
                                                            st.decode.macs_dense)


# A decode call's keys are split into about 24 tasks in all, each a whole number of checkpoint
# strides: with 8 kv heads 1101 keys make splits of 512 (three per head), so a split's prefix sums
# start from the checkpoints at 512 and 1024 keys; with 2 kv heads 3100 keys make splits of 512 too.
@pytest.mark.parametrize("chunks,heads,kv_heads", [([1100, 1, 1], 16, 8), ([1300, 1], 8, 8), ([3100, 1], 4, 2)])
def test_decode_splits_of_several_strides_match_oracle(variant, chunks, heads, kv_heads):
    n = sum(chunks)
    q, k, v = make_qkv(n, heads, kv_heads, 64, seed=n + kv_heads)
    ref, st = run_calls(q, k, v, chunks, n + 1, 0.6, 0.1, 1 << 20, 4)
    stats.reset()
    got, _ = run_kernel(q, k, v, chunks, n + 1, 0.6, 0.1, 1 << 20, 4, layer=1)
    assert nmse(got[chunks[0]:], ref[chunks[0]:]) <= 1e-10
    assert stats.read("decode")[1].macs_performed == st.decode.macs_performed


# Decode scores ΔK along head_dim (f32_deltaqkdot_ukernel_8x1): every row count of the narrow tile
# (1..4 take two keys per step, with an odd key left over, on 4 lanes: two keys per score vector and
# softmax step; 5..8 on 8 lanes), head_dim 64 (unrolled at compile time on AVX2), head_dims that are
# not a multiple of the 64 elements one mask word covers, and a context long enough to split.
@pytest.mark.parametrize("group", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("d,chunks", [(8, [41, 1, 1]), (64, [40, 1, 1]), (72, [41, 1, 1]), (136, [300, 1])])
def test_decode_rows_and_head_dims_match_oracle(variant, group, d, chunks):
    n = sum(chunks)
    q, k, v = make_qkv(n, 2 * group, 2, d, seed=n + d + group)
    ref, st = run_calls(q, k, v, chunks, n + 1, 0.6, 0.1, 1 << 20, 4)
    stats.reset()
    got, _ = run_kernel(q, k, v, chunks, n + 1, 0.6, 0.1, 1 << 20, 4, layer=2)
    assert nmse(got[chunks[0]:], ref[chunks[0]:]) <= 1e-10
    c = stats.read("decode")[2]
    assert (c.dk_zeros, c.macs_performed) == (st.decode.dk_zeros, st.decode.macs_performed)


# group x head_dim: the decode P·V tiles of 1..3 rows take 32 fp16-V columns per step, then 16, then 8
@pytest.mark.parametrize("group,d", [(3, 64), (1, 72), (2, 136)])
@pytest.mark.parametrize("chunks", [[70, 1, 1, 1], [33, 20, 1, 1]])
def test_fp16_v_cache_matches_the_oracle_on_rounded_values(variant, chunks, group, d):
    """v_cache in fp16: the kernel rounds V as it stores it; the oracle sees the rounded V."""
    n = sum(chunks)
    q, k, v = make_qkv(n, 2 * group, 2, d, seed=5)
    got, st = run_kernel(q, k, v, chunks, n + 2, 0.6, 0.1, 1 << 20, 4, v_dtype=torch.float16)
    ref, _ = run_calls(q, k, v.half().float(), chunks, n + 2, 0.6, 0.1, 1 << 20, 4)
    assert nmse(got, ref) <= 1e-10
    assert torch.equal(cache_rows(st.v_cache, 0, n), v.half())
    assert nmse(got, run_calls(q, k, v, chunks, n + 2, 0.6, 0.1, 1 << 20, 4)[0]) > 1e-10   # rounding is visible


@pytest.mark.parametrize("stream_rows_per_key", [0, 8])
def test_prefill_encodes_heads_in_parallel_exactly_as_one_thread(variant, stream_rows_per_key):
    """A call of >= 64 keys encodes its kv heads as parallel tasks: at 2 threads the output and every
    state buffer (masks, packed values, ends, k̂, its checkpoints past 256 and 512 keys) are bit-identical
    to one thread's, with a full stream and a budgeted one, across chunked calls."""
    lib = core()
    chunks, hkv, d = [300, 64, 63, 200, 1], 3, 64
    n = sum(chunks)
    q, k, v = make_qkv(n, 3 * hkv, hkv, d, seed=7)
    rows = _stream_rows(n + 1, d, stream_rows_per_key) if stream_rows_per_key else 0
    runs = []
    for threads in (1, 2):
        lib.dlm_set_num_threads(threads)
        try:
            runs.append(run_kernel(q, k, v, chunks, n + 1, 0.5, 0.1, 1 << 20, 4, stream_rows=rows))
        finally:
            lib.dlm_set_num_threads(1)
    (out1, st1), (out2, st2) = runs
    assert torch.equal(out1, out2)
    for name, t in st1.state.items():
        assert torch.equal(t, st2.state[name]), f"state buffer {name} differs between 1 and 2 threads"
    assert st1.k_ckpt[0, 2].abs().sum() > 0   # the checkpoint at 512 keys was written


# ----------------------------------------------------------------------------- ΔK budget (dk_rows)

def _stream_rows(max_len: int, d: int, per_key: int) -> int:
    return int(core().dlm_dk_rows(max_len, d, per_key))


@pytest.mark.parametrize("chunks", [[70], [37, 1, 1, 20], [1] * 12, [300, 1, 1], [64, 64, 1]])
@pytest.mark.parametrize("per_key,theta", [(1, 0.3), (4, 0.3), (8, 0.0), (40, 0.0), (56, 0.0)])
def test_budgeted_stream_matches_oracle(variant, chunks, per_key, theta):
    """A stream of fewer rows than the max context: each key stores at most its budget (what it and the
    keys before it earned, per_key each, and did not use), the largest |Δ| first; outputs, counters,
    masks and the packed values as the oracle's, whatever the chunking."""
    n, hkv, d = sum(chunks), 2, 64
    q, k, v = make_qkv(n, 3 * hkv, hkv, d, seed=n + per_key)
    rows = _stream_rows(n + 2, d, per_key)
    assert rows < n + 2
    per_key = int(core().dlm_dk_per_key(n + 2, d, rows))   # whole rows: at least what was asked for
    ref, st_ref = run_calls(q, k, v, chunks, n + 2, theta, 0.1, 1 << 20, 4, per_key=per_key)
    full, _ = run_calls(q, k, v, chunks, n + 2, theta, 0.1, 1 << 20, 4)
    assert nmse(ref, full) > 0            # the budget binds: some non-zeros were deferred
    stats.reset()
    got, st = run_kernel(q, k, v, chunks, n + 2, theta, 0.1, 1 << 20, 4, layer=4, stream_rows=rows)
    assert nmse(got, ref) <= 1e-10
    for phase, counts in (("prefill", st_ref.prefill), ("decode", st_ref.decode)):
        c = stats.read(phase)[4]
        assert (c.dk_zeros, c.dk_elements, c.macs_performed, c.macs_dense) == \
            (counts.dk_zeros, counts.dk_elements, counts.macs_performed, counts.macs_dense)
    dk = st_ref.dk_cache[:n].float()
    mask = ((st.dk_mask[0, :n, :, :, None] >> torch.arange(8, dtype=torch.uint8)) & 1).reshape(n, hkv, d).bool()
    want_mask = dk != 0
    want_mask[0] = True
    assert torch.equal(mask, want_mask)
    t = torch.arange(n)
    for g in range(hkv):
        end = st.dk_end[0, :n, g].long()
        assert end.tolist() == torch.cumsum(mask[:, g].sum(-1), 0).tolist()
        assert (end <= d + t * per_key).all()                           # never past what the keys earned
        want = torch.cat([dk[j, g][mask[j, g]] for j in range(n)]).half()
        assert torch.equal(st.dk_val[0, g].reshape(-1)[:len(want)], want)


def test_budget_defers_the_smallest_and_catches_up(variant):
    """Known answer: still keys, then every element of kv head 0 jumps by 1 at token 5 and stays. With 8
    values per key, key 5 has 64 + 5·8 − 64 = 40 to spend: elements 0..39 (equal |Δ|: the lower ones);
    keys 6, 7 and 8 store 8 each (40..47, 48..55, 56..63), after which k̂ = k; kv head 1 never moves."""
    n, d = 10, 64    # 3 rows: 2·64 + 8·8 values, exactly 8 per key
    assert core().dlm_dk_per_key(n, d, _stream_rows(n, d, 8)) == 8
    k = torch.zeros(n, 2, d)
    k[5:, 0] = 1.0
    q = torch.randn(n, 2, d, generator=torch.Generator().manual_seed(0))
    _, st = run_kernel(q, k, torch.randn(n, 2, d), [n], n, 0.5, 0.0, 1, 1, stream_rows=_stream_rows(n, d, 8))
    nnz = lambda j: int(sum(bin(b).count("1") for b in st.dk_mask[0, j, 0].tolist()))  # noqa: E731
    assert [nnz(j) for j in range(n)] == [64, 0, 0, 0, 0, 40, 8, 8, 8, 0]
    assert st.dk_mask[0, 5, 0].tolist() == [255] * 5 + [0] * 3
    assert st.dk_mask[0, 6, 0].tolist() == [0] * 5 + [255, 0, 0]
    assert st.dk_mask[0, 8, 0].tolist() == [0] * 7 + [255]
    assert torch.equal(st.k_hat[0, 0], torch.ones(d))
    assert st.dk_end[0, :, 1].tolist() == [64] * n


@pytest.mark.parametrize("max_len", [1, 2, 3, 100, 4096])
@pytest.mark.parametrize("d", [8, 64, 136])
def test_stream_rows_and_budget_agree(max_len, d):
    lib = core()
    assert lib.dlm_dk_rows(max_len, d, d) == max_len                  # a full budget: one row per key
    for per_key in range(1, d + 1):
        rows = lib.dlm_dk_rows(max_len, d, per_key)
        assert 1 <= rows <= max_len
        assert lib.dlm_dk_per_key(max_len, d, rows) >= per_key
        if max_len > 2:   # the stored values plus the d a kernel may read from the last key's start
            assert rows * d >= 2 * d + (max_len - 2) * per_key
            assert lib.dlm_dk_per_key(max_len, d, rows - 1) < per_key


def test_restart_at_zero_resets_reference_key():
    q, k, v = make_qkv(16, 2, 2, 64)
    st = KernelState(32, 2, 64)
    first = st.call(q, k, v, 0, 0.5, 0.1, 100, 4).clone()
    st.call(q[:3] * 2, k[:3] + 5, v[:3], 16, 0.5, 0.1, 100, 4)
    again = st.call(q, k, v, 0, 0.5, 0.1, 100, 4)
    assert torch.equal(first, again)


# ----------------------------------------------------------------------------- bad input

def _bad(**change):
    q, k, v = make_qkv(4, 4, 2, 64)
    st = KernelState(8, 2, 64)
    args = dict(q=q[None], k=k[None], v=v[None], **st.state, start_pos=0, theta=0.5, gamma=0.1, w_max=100,
                w_decode=4, layer=0)
    args.update(change)
    return torch.ops.deltallm.delta_attention(*args.values())


@pytest.mark.parametrize("change,message", [
    (dict(q=torch.zeros(4, 4, 64)), "rank 4"),
    (dict(k=torch.zeros(1, 4, 3, 64)), "kv head mismatch"),
    (dict(q=torch.zeros(1, 4, 4, 32)), "head_dim"),
    (dict(q=torch.zeros(1, 4, 4, 12), k=torch.zeros(1, 4, 2, 12), v=torch.zeros(1, 4, 2, 12)), "multiple of 8"),
    (dict(dk_val=torch.zeros(1, 2, 8, 64)), "dk_val must be torch.float16"),
    (dict(dk_mask=torch.zeros(1, 8, 2, 64, dtype=torch.uint8)), r"dk_mask must have shape \[1, 8, 2, 8\]"),
    # the value streams are per kv head: the old [1, T, Hkv, D] layout is refused by name
    (dict(dk_val=torch.zeros(1, 8, 2, 64, dtype=torch.float16)), r"dk_val must have shape \[1, 2, P, 64\]"),
    # a budgeted stream: too few rows for one value per key, or more rows than the max context
    (dict(dk_val=torch.zeros(1, 2, 2, 64, dtype=torch.float16)), "dk_val holds 2 rows per kv head; for max "
     r"context 8 it needs 3 to 8 \(dlm_dk_rows\)"),
    (dict(dk_val=torch.zeros(1, 2, 9, 64, dtype=torch.float16)), "dk_val holds 9 rows"),
    (dict(k_ring=torch.zeros(1, 1, 2, 64), start_pos=3, gamma=1.0), "key ring holds 1 keys"),
    (dict(theta=-0.5), "theta must be finite and >= 0"),
    (dict(start_pos=6), "cache overflow"),
    (dict(q=torch.zeros(1, 4, 3, 64)), "multiple of n_kv_heads"),
    (dict(gamma=1.5), "gamma"),
])
def test_bad_input_raises_with_message(change, message):
    from delegates import op  # noqa: F401

    with pytest.raises(RuntimeError, match=message):
        _bad(**change)


def test_c_core_rejects_inconsistent_args_without_touching_memory():
    lib = core()
    err = ctypes.create_string_buffer(256)
    a = AttnArgs()  # all null pointers
    assert lib.dlm_delta_attention_f32(ctypes.byref(a), err, 256) == 1
    assert b"null tensor" in err.value
    buf = (ctypes.c_float * 64)()
    ibuf = (ctypes.c_int32 * 64)()
    p, ip = ctypes.cast(buf, ctypes.c_void_p), ctypes.cast(ibuf, ctypes.c_void_p)
    a = AttnArgs(q=p, k=p, v=p, k_ring=p, k_sink=p, v_cache=p, dk_mask=ip, dk_val=ip, dk_end=ip, k_hat=p, k_ckpt=p, out=p,
                 seq_len=2, n_heads=1, n_kv_heads=1, head_dim=8, max_len=4, ring_len=4, start_pos=3, theta=0.1,
                 gamma=0.1, w_max=4, w_decode=1, layer=0)
    assert lib.dlm_delta_attention_f32(ctypes.byref(a), err, 256) == 1
    assert b"cache overflow" in err.value
    a.start_pos, a.n_kv_heads = 0, 0
    assert lib.dlm_delta_attention_f32(ctypes.byref(a), err, 256) == 1
    a.n_kv_heads, a.max_len = 1, (1 << 28) + 1   # T·head_dim offsets would not fit dk_end's int32
    assert lib.dlm_delta_attention_f32(ctypes.byref(a), err, 256) == 1
    assert b"must be < 2^31" in err.value
