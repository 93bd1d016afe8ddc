"""Every micro-kernel variant against the PyTorch reference, on the device that runs it: the oracle
grid of test_delta_kernel.py (with decode's key splits, and the fp16 V store on edge values) and
budgeted ΔK streams (keys over budget), dense cases with fp32, fp16, q8_0 and q4_0 K caches and every V
format (wide and narrow tiles, key splits), delta cases with q8_0 / q4_0 V caches, replayed through
`deltallm_runner kernel-check` — NEON on arm64 under qemu-aarch64-static (with SDOT on a core that has
the dot-product extension, `-cpu max`, and the Armv8.0 fallback on one that has not, cortex-a72), AVX2
and scalar on x86-64 — NMSE <= 1e-10 and exact counters."""
from __future__ import annotations

import itertools
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from delegates import formats
from delegates.formats import Format
from delegates.library import core
from delegates.reference import band_width, dense_attention, delta_attention_vectorized, run_calls
from tests.delta_helpers import make_qkv, nmse
from tests.native_helpers import run_native

W_HUGE = 1 << 20
SINGLE = list(itertools.product([1, 2, 7, 64, 129, 512], [64, 128], [1, 3], [0.0, 0.3, 1.0], [0.05, 0.1]))
TILES = [7, 8, 9, 16, 17, 63, 64, 65, 129]       # rows per kv head: lt / eq / gt the 8- and 64-row tiles
CHUNKED = [([64, 1, 1, 1, 1, 1, 1, 1, 1], 4, W_HUGE), ([20, 30, 14, 1, 1, 1], 2, 3), ([1] * 12, 4, 100),
           ([129, 1, 1, 1], 8, W_HUGE),
           ([300, 1, 1], 4, W_HUGE), ([700, 2, 1], 4, W_HUGE), ([600, 1], 300, W_HUGE)]   # decode key splits
COUNT_KEYS = ("dk_zeros", "dk_elements", "macs_performed", "macs_dense")


def cases():
    """(q, k, v, chunks, max_len, theta, gamma, w_max, w_decode, (v format, kind[, stream rows]), reference
    out, {phase: counts}); kind 0 delta, else dense with a K cache of format kind − 1 (dense counts nothing);
    stream rows: a budgeted ΔK value stream (dlm_dk_rows; none: every non-zero)."""
    out = []
    for n, d, ratio, theta, gamma in SINGLE:
        hkv = 2 if n < 512 else 3
        q, k, v = make_qkv(n, hkv * ratio, hkv, d, seed=n + d)
        ref, _, counts = delta_attention_vectorized(q, k, v, theta, band_width(n, gamma, W_HUGE, 4))
        out.append((q, k, v, [n], n + 3, theta, gamma, W_HUGE, 4, (0, 0), ref,
                    {"decode" if n == 1 else "prefill": counts}))
    for rows in TILES:
        q, k, v = make_qkv(rows, 1, 1, 64, seed=rows)
        ref, _, counts = delta_attention_vectorized(q, k, v, 0.3, 1)
        out.append((q, k, v, [rows], rows, 0.3, 0.0, 1, 4, (0, 0), ref, {}))
    for (chunks, w_decode, w_max), v16 in itertools.product(CHUNKED, (0, 1)):   # fp32 and fp16 V caches
        n = sum(chunks)
        q, k, v = make_qkv(n, 6, 2, 64, seed=n)
        ref, st = run_calls(q, k, v.half().float() if v16 else v, chunks, n + 1, 0.6, 0.1, w_max, w_decode)
        out.append((q, k, v, chunks, n + 1, 0.6, 0.1, w_max, w_decode, (v16, 0), ref,
                    {"prefill": st.prefill, "decode": st.decode}))
    for group, d in itertools.product([1, 3, 4, 5, 8], [8, 72, 136]):   # decode rows x head_dims (qkdot tiles)
        chunks = [41, 1, 1]
        n = sum(chunks)
        q, k, v = make_qkv(n, 2 * group, 2, d, seed=n + d + group)
        ref, st = run_calls(q, k, v, chunks, n + 1, 0.6, 0.1, W_HUGE, 4)
        out.append((q, k, v, chunks, n + 1, 0.6, 0.1, W_HUGE, 4, (0, 0), ref,
                    {"prefill": st.prefill, "decode": st.decode}))
    for kind in FP16_EDGE_KINDS:   # the fp16 V cache's store on edge values, prefill then decode
        chunks = [37, 1, 1]
        n = sum(chunks)
        q, k, _ = make_qkv(n, 6, 2, 64, seed=n + len(kind))
        v = fp16_edge_values(kind, (n, 2, 64), seed=len(kind))
        ref, st = run_calls(q, k, v.clamp(-F16_MAX, F16_MAX).half().float(), chunks, n + 1, 0.6, 0.1, W_HUGE, 4)
        out.append((q, k, v, chunks, n + 1, 0.6, 0.1, W_HUGE, 4, (1, 0), ref,
                    {"prefill": st.prefill, "decode": st.decode}))
    for chunks, group, d, per_key, theta in BUDGETED:   # keys over budget: the largest |Δ| kept, the rest deferred
        n = sum(chunks)
        q, k, v = make_qkv(n, 2 * group, 2, d, seed=n + d + per_key)
        rows = int(core().dlm_dk_rows(n + 1, d, per_key))
        per_key = int(core().dlm_dk_per_key(n + 1, d, rows))
        ref, st = run_calls(q, k, v, chunks, n + 1, theta, 0.1, W_HUGE, 4, per_key=per_key)
        out.append((q, k, v, chunks, n + 1, theta, 0.1, W_HUGE, 4, (0, 0, rows), ref,
                    {"prefill": st.prefill, "decode": st.decode}))
    for (chunks, group, d), kind, v16 in itertools.product(DENSE, (1, 2), (0, 1)):
        n = sum(chunks)
        q, k, v = make_qkv(n, 2 * group, 2, d, seed=n + d + group)
        k = k * 3.0
        if kind == 2:
            k[n // 2, 0, :3] = torch.tensor([7e4, -65519.0, 65520.0])   # clamped to ±65504 as stored
        q = q * 0.01 if kind == 2 else q
        kr = k.clamp(-F16_MAX, F16_MAX).half().float() if kind == 2 else k
        ref = dense_attention(q, kr, v.half().float() if v16 else v)
        out.append((q, k, v, chunks, n + 1, 0.0, 0.0, 1, 1, (v16, kind), ref, {"dense": None}))
    for (chunks, group, d), kf, vf in itertools.product(QDENSE, Format, Format):   # the quantized caches
        if not (kf.quantized or vf.quantized):
            continue
        n = sum(chunks)
        q, k, v = make_qkv(n, 2 * group, 2, d, seed=n + d + group + 7)
        k = k * 3.0
        qq = formats.query_round_trip(q) if kf.quantized else q
        ref = dense_attention(qq, formats.round_trip(k, kf), formats.round_trip(v, vf))
        out.append((q, k, v, chunks, n + 1, 0.0, 0.0, 1, 1, (int(vf), 1 + int(kf)), ref, {"dense": None}))
    for chunks, vf in itertools.product(([64, 1, 1, 1], [300, 1, 1], [20, 30, 14, 1, 1]), (Format.Q8_0, Format.Q4_0)):
        n = sum(chunks)
        q, k, v = make_qkv(n, 6, 2, 64, seed=n + 11)
        ref, st = run_calls(q, k, formats.round_trip(v, vf), chunks, n + 1, 0.6, 0.1, W_HUGE, 4)
        out.append((q, k, v, chunks, n + 1, 0.6, 0.1, W_HUGE, 4, (int(vf), 0), ref,
                    {"prefill": st.prefill, "decode": st.decode}))
    return out


# a budgeted ΔK stream: (chunks, GQA group, head_dim, values per key, θ); θ 0 makes every key want all D
BUDGETED = [([70], 3, 64, 8, 0.0), ([37, 1, 1, 20], 3, 64, 4, 0.3), ([300, 1, 1], 3, 64, 40, 0.0),
            ([1] * 12, 1, 64, 1, 0.3), ([41, 1, 1], 5, 136, 30, 0.0)]
# dense: (chunks, GQA group, head_dim): wide and narrow tiles, the unrolled head_dim 64, key splits
DENSE = [([70, 1, 1], 3, 64), ([9, 2, 1], 1, 8), ([129, 1], 5, 136), ([300, 1, 1], 4, 64), ([1, 1, 1], 8, 72)]
# quantized caches (head_dim a multiple of 32): wide and narrow tiles, 1..8 rows, key splits
QDENSE = [([70, 1, 1], 3, 64), ([9, 2, 1], 1, 64), ([129, 1], 5, 128), ([300, 1, 1], 4, 64), ([1, 1, 1], 8, 96),
          ([40, 2, 1], 2, 32)]


F16_MAX = 65504.0
FP16_EDGE_KINDS = ("ties", "subnormal_ties", "clamp")


def fp16_edge_values(kind: str, shape, seed: int) -> torch.Tensor:
    """V values where a wrong fp16 store shows: halfway between two fp16 neighbours in binades 2^-4
    .. 2^3 (ties to even), halfway between subnormals, or at and beyond the largest fp16 (65500 rounds
    to 65504; 65519, 65520 (IEEE: inf), 1e5 and inf clamp to 65504). One kind per case, so no kind's
    error hides under another's magnitude. Every value is exact in fp32."""
    g = torch.Generator().manual_seed(seed)
    sign = torch.randint(0, 2, shape, generator=g).double() * 2 - 1
    odd = torch.randint(0, 1023, shape, generator=g).double() * 2 + 1
    if kind == "ties":
        v = torch.pow(2.0, torch.randint(-4, 4, shape, generator=g).double()) * (1 + odd * 2.0 ** -11)
    elif kind == "subnormal_ties":
        v = odd * 2.0 ** -25
    elif kind == "clamp":
        choices = torch.tensor([65500.0, 65504.0, 65519.0, 65520.0, 1e5, float("inf")], dtype=torch.float64)
        v = choices[torch.randint(0, len(choices), shape, generator=g)]
    else:
        raise ValueError(f"unknown fp16 edge kind {kind!r}")
    return (sign * v).float()


def write_cases(path: Path, all_cases) -> None:
    with open(path, "wb") as f:
        f.write(b"DLMK" + struct.pack("<i", len(all_cases)))
        for q, k, v, chunks, max_len, theta, gamma, w_max, w_decode, (v16, kind, *rows), _, _ in all_cases:
            n, heads, d = q.shape
            f.write(struct.pack("<11q", n, heads, k.shape[1], d, max_len, w_max, w_decode, len(chunks), v16, kind,
                                rows[0] if rows else 0))
            f.write(struct.pack(f"<{len(chunks)}q", *chunks) + struct.pack("<2f", theta, gamma))
            for t in (q, k, v):
                f.write(t.float().numpy().astype("<f4").tobytes())


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    all_cases = cases()
    path = tmp_path_factory.mktemp("kernel_check") / "cases.bin"
    write_cases(path, all_cases)
    return path, all_cases


@pytest.mark.parametrize("abi,scalar,arch,cpu", [("arm64-v8a", False, "neon+dot", "max"),
                                                 ("arm64-v8a", False, "neon", "cortex-a72"),
                                                 ("arm64-v8a", True, "scalar", "max"),
                                                 ("x86_64", False, "avx2_fma", ""), ("x86_64", True, "scalar", "")])
def test_variant_matches_the_reference(runners, oracle, tmp_path, abi, scalar, arch, cpu):
    path, all_cases = oracle
    res = tmp_path / "results.bin"
    r = run_native(runners[abi], abi, "kernel-check", "--cases", path, "--out", res, *(["--scalar"] if scalar else []),
                   qemu_cpu=cpu)
    assert r.returncode == 0, r.stderr
    if r.stdout.strip() != arch:
        assert arch == "avx2_fma", r.stdout            # only a CPU without AVX2 may lack a variant here
        pytest.fail("this x86-64 CPU has no AVX2/FMA: the AVX2 variant cannot be checked")
    data, offset = res.read_bytes(), 0
    assert len(all_cases) >= 150
    for i, (q, *_, ref, counts) in enumerate(all_cases):
        size = q.numel() * 4
        got = np.frombuffer(data, dtype="<f4", count=q.numel(), offset=offset).reshape(tuple(q.shape))
        offset += size
        assert nmse(torch.from_numpy(got.copy()), ref) <= 1e-10, i
        rows = np.frombuffer(data, dtype="<u8", count=10, offset=offset).reshape(2, 5)
        offset += 80
        if "dense" in counts:
            assert not rows.any(), i                   # the dense path counts nothing
        for phase, want in counts.items():
            if phase == "dense":
                continue
            got_counts = rows[0 if phase == "prefill" else 1][:4].tolist()
            assert got_counts == [getattr(want, k) for k in COUNT_KEYS], (i, phase)
    assert offset == len(data)
