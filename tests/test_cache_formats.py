"""The q8_0 / q4_0 cache formats (delegates/formats.py, ukernels/qblocks*): the reference encoder is
llama.cpp's layout byte for byte (gguf-py's quantizer, written by llama.cpp's authors, as the
independent oracle); each kernel variant stores exactly the reference's bytes, edge values included;
dense attention over every pair of K and V formats, and delta attention over every V format, match
float64 attention over the formats' values (the queries q8-quantized over a quantized K cache) for
wide and narrow tiles, tile boundaries, key splits and any chunking. NEON: test_kernel_check.py."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from delegates import formats
from delegates.formats import Format
from delegates.library import core
from delegates.reference import dense_attention, run_calls
from tests.delta_helpers import make_qkv, nmse, run_kernel
from tests.test_dense_kernel import variant  # noqa: F401  (AVX2 and scalar, 1 and 2 threads)

QFORMATS = (Format.Q8_0, Format.Q4_0)


def edge_rows(d: int = 64) -> torch.Tensor:
    """Rows where an encoder can go wrong: all zeros (and −0), the largest |x| negative or positive or
    both (q4_0 takes the first), code ties (x·id exactly k + ½: ties to even), subnormal and large
    magnitudes, one non-zero, values at the fp16 scale's limits."""
    g = torch.Generator().manual_seed(5)
    rows = [torch.zeros(d), -torch.zeros(d), torch.randn(d, generator=g)]
    r = torch.randn(d, generator=g)
    r[3] = -10.0
    rows.append(r)
    r = torch.randn(d, generator=g)
    r[7], r[9] = 10.0, -10.0
    rows.append(r)
    r = torch.randn(d, generator=g)
    r[7], r[9] = -10.0, 10.0
    rows.append(r)
    ties = torch.zeros(d)   # q8_0: amax 127 → id 1: x·id = x; q4_0: max −8 → id 1
    ties[0], ties[32] = 127.0, -8.0
    ties[1:32] = torch.tensor([k + 0.5 for k in range(-15, 16)])
    ties[33:64] = torch.tensor([k + 0.5 for k in range(-8, 7)] + [0.5] * 16)
    rows.append(ties)
    rows += [torch.randn(d, generator=g) * 1e-30, torch.randn(d, generator=g) * 3e6, torch.randn(d, generator=g) * 1e4]
    one = torch.zeros(d)
    one[40] = 0.3
    rows.append(one)
    return torch.stack(rows)


@pytest.mark.parametrize("fmt", QFORMATS, ids=lambda f: f.label)
@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
def test_reference_is_llama_cpp_layout(fmt, scale):
    gguf = pytest.importorskip("gguf")
    x = torch.randn(200, 128, generator=torch.Generator().manual_seed(1)) * scale
    kind = {Format.Q8_0: gguf.GGMLQuantizationType.Q8_0, Format.Q4_0: gguf.GGMLQuantizationType.Q4_0}[fmt]
    want = gguf.quants.quantize(x.numpy(), kind)
    got = formats.encode(x, fmt).numpy()
    assert got.shape == want.shape == (200, 128 // 32 * formats.BLOCK_BYTES[fmt])
    assert np.array_equal(got, want)
    assert np.array_equal(formats.decode(torch.from_numpy(got), fmt, 128).numpy(), gguf.quants.dequantize(want, kind))


def test_bytes_per_row():
    assert [formats.row_bytes(f, 64) for f in Format] == [256, 128, 68, 36]
    assert [int(core().dlm_cache_row_bytes(int(f), 128)) for f in Format] == [512, 256, 136, 72]
    assert core().dlm_cache_row_bytes(2, 48) == 0 and core().dlm_cache_row_bytes(7, 64) == 0
    with pytest.raises(ValueError, match="multiple of 32"):
        formats.row_bytes(Format.Q4_0, 48)


@pytest.mark.parametrize("fmt", QFORMATS, ids=lambda f: f.label)
def test_kernel_store_is_the_reference_bit_for_bit(variant, fmt):
    x = torch.cat([edge_rows(), torch.randn(30, 64, generator=torch.Generator().manual_seed(2)) * 4])
    n = x.shape[0] // 2
    k, v = x[:n].reshape(n, 1, 64), x[n:2 * n].reshape(n, 1, 64)
    kc, vc = formats.empty_cache(fmt, n + 1, 1, 64), formats.empty_cache(fmt, n + 1, 1, 64)
    q = torch.zeros(1, n, 1, 64)
    for start, size in ((0, n - 1), (n - 1, 1)):   # a prefill's rows and a decode step's row
        sl = slice(start, start + size)
        torch.ops.deltallm.dense_attention(q[:, sl], k[None, sl], v[None, sl], kc, vc, start)
    assert torch.equal(formats.cache_rows(kc, 0, n), formats.encode(k, fmt))
    assert torch.equal(formats.cache_rows(vc, 0, n), formats.encode(v, fmt))
    assert not kc[0, :, n:].any()


CHUNKS = [([1], 1), ([70, 1, 1], 3), ([9, 2, 1], 1), ([65, 3, 1], 8), ([129, 1], 5), ([300, 1, 1], 4),
          ([1, 1, 1], 8), ([40, 1], 2), ([600, 1], 3)]


@pytest.mark.parametrize("kf,vf", [(kf, vf) for kf, vf in itertools.product(Format, Format) if kf.quantized or vf.quantized],
                         ids=lambda f: f.label)
@pytest.mark.parametrize("d", [64, 128])
def test_dense_over_every_format_matches_the_reference(variant, kf, vf, d):
    for chunks, group in CHUNKS:
        n = sum(chunks)
        q, k, v = make_qkv(n, 2 * group, 2, d, seed=n + group + d)
        k = k * 3.0
        kc, vc = formats.empty_cache(kf, n + 1, 2, d), formats.empty_cache(vf, n + 1, 2, d)
        outs, pos = [], 0
        for c in chunks:
            sl = slice(pos, pos + c)
            outs.append(torch.ops.deltallm.dense_attention(q[None, sl], k[None, sl], v[None, sl], kc, vc, pos)[0])
            pos += c
        qq = formats.query_round_trip(q) if kf.quantized else q
        ref = dense_attention(qq, formats.round_trip(k, kf), formats.round_trip(v, vf))
        assert nmse(torch.cat(outs), ref) <= 1e-10, (chunks, group)
        if kf.quantized and n > 1:   # the queries' quantization is visible: the kernel does not skip it
            assert nmse(torch.cat(outs), dense_attention(q, formats.round_trip(k, kf), formats.round_trip(v, vf))) > 1e-10


@pytest.mark.parametrize("fmt", QFORMATS, ids=lambda f: f.label)
def test_one_answer_whatever_the_chunking(variant, fmt):
    q, k, v = make_qkv(97, 6, 2, 64, seed=9)
    got = []
    for chunks in ([97], [33, 31, 1, 32], [1] * 20 + [77], [64, 1, 1, 31]):
        kc, vc = formats.empty_cache(fmt, 98, 2, 64), formats.empty_cache(fmt, 98, 2, 64)
        outs, pos = [], 0
        for c in chunks:
            sl = slice(pos, pos + c)
            outs.append(torch.ops.deltallm.dense_attention(q[None, sl], k[None, sl], v[None, sl], kc, vc, pos)[0])
            pos += c
        got.append(torch.cat(outs))
    for other in got[1:]:
        assert nmse(other, got[0]) <= 1e-12


@pytest.mark.parametrize("fmt", QFORMATS, ids=lambda f: f.label)
@pytest.mark.parametrize("chunks", [[64, 1, 1, 1], [300, 1, 1], [20, 30, 14, 1, 1], [700, 2, 1]])
def test_delta_with_a_quantized_v_cache_matches_the_reference(variant, fmt, chunks):
    n = sum(chunks)
    q, k, v = make_qkv(n, 6, 2, 64, seed=n)
    ref, st = run_calls(q, k, formats.round_trip(v, fmt), chunks, n + 1, 0.6, 0.1, 1 << 20, 4)
    got, _ = run_kernel(q, k, v, chunks, n + 1, 0.6, 0.1, 1 << 20, 4, v_dtype=fmt)
    assert nmse(got, ref) <= 1e-10


def test_quantized_caches_need_head_dim_a_multiple_of_32():
    from delegates import op  # noqa: F401

    q, k, v = make_qkv(4, 2, 1, 48)
    ok = torch.zeros(1, 1, 8, 48)
    for bad in (torch.zeros(1, 1, 8, 48 // 32 * 34, dtype=torch.uint8), torch.zeros(1, 1, 8, 51, dtype=torch.uint8)):
        with pytest.raises(RuntimeError, match=r"q8_0 / q4_0 blocks .*head_dim a multiple of 32"):
            torch.ops.deltallm.dense_attention(q[None], k[None], v[None], bad, ok, 0)
