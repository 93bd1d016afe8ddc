"""A phone performance model of decode attention without a phone: static pipeline analysis of our
compiled micro-kernels (llvm-mca) plus a memory roofline, validated on this host in the same run.

    python bench/phone_model.py [--contexts 2048 4096 8192] [--bw-fraction 0.6] [--no-validate] [--json]

1. Static: the decode micro-kernels are compiled as the builds compile them (g++ -O3; x86-64 with
   -mavx2 -mfma -mf16c, aarch64 with Debian's aarch64-linux-gnu-g++, the SDOT file for
   armv8.2-a+dotprod) with -DDLM_MCA, which brackets each kernel's steady-state step with llvm-mca
   region comments (delegates/csrc/ukernels/mca.h). llvm-mca-19 runs every step on each core model:
   cycles per key and kv head = Q·Kᵀ step + P·V step. The online softmax (its uniform and masked
   paths branch inside a step, which a straight-line analysis cannot follow), the merge of key splits
   and per-call work are left out: the same for every format, they dilute the measured ratios. Cores whose model gives identical cycles for every step are reported
   as one model (LLVM gives several -mcpu names one scheduling model).
2. Validation: the same method for the host (-mcpu=znver4 for this Zen 4 host, or --host-mcpu) on the
   AVX2 steps, against decode steps measured here in the same run with the state in cache
   (bench/decode_step.cc, warm: the arithmetic alone), as ratios to dense fp16 K+V: error per cell.
3. Phones: named SoCs (cores, clocks, DRAM peak; sources in SOCS) → per model, context and format:
   attention µs per token = max(cycles / (clock · threads), state bytes / (peak · bw-fraction)), and
   decode ms per token = weights / bandwidth + attention (linear layers' arithmetic not modelled), and
   which bound sets the attention time.
Progress on stderr; markdown tables (or --json) on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
UK = ROOT / "delegates" / "csrc" / "ukernels"
sys.path.insert(0, str(ROOT / "bench"))
MCA = "llvm-mca-19"

# Decode attention per model: layers, query heads, kv heads, head_dim; weight bytes streamed per token
# (linear layers at the quantization users ship, plus the tied output head).
# SmolLM2-135M: HF model card / config.json (30 layers, 9 heads, 3 kv heads, dim 576, vocab 49152),
#   134.5 M parameters, 8da8w: 1 byte each.
# Llama-3.2-1B: config.json (16 layers, 32 heads, 8 kv heads, head_dim 64, vocab 128256, dim 2048),
#   1.24 B parameters, 8da4w: 4 bits + a 2-byte scale per group of 32 (0.5625 B), the 262.7 M-entry
#   tied embedding read as the output head in 8 bits.
# BitNet-b1.58-2B4T: config.json (30 layers, 20 heads, 5 kv heads, head_dim 128, vocab 128256, dim
#   2560), 2.41 B parameters: 2.08 B ternary linear weights at 2 bits (bitnet.cpp's I2_S), the 328 M
#   tied embedding as the output head in 8 bits.
MODELS = {
    "smollm2-135m": dict(layers=30, heads=9, kv_heads=3, head_dim=64, weight_bytes=134.5e6),
    "llama-3.2-1b": dict(layers=16, heads=32, kv_heads=8, head_dim=64, weight_bytes=(1236e6 - 262.7e6) * 0.5625 + 262.7e6),
    "bitnet-2b4t": dict(layers=30, heads=20, kv_heads=5, head_dim=128, weight_bytes=2.08e9 / 4 + 328e6),
}

# Named SoCs: the clusters decode runs on (threads = cores used, up to 4: the prime and performance
# cores), the LLVM model of each core, and the DRAM peak (bus bytes x transfer rate).
# Snapdragon 8 Gen 3 (SM8650): Qualcomm's product brief: 1x Cortex-X4 @ 3.3 GHz, 3x A720 @ 3.15 GHz,
#   2x A720 @ 2.96, 2x A520 @ 2.27; LPDDR5X 4800 MHz, 4x16-bit: 76.8 GB/s.
# Snapdragon 8 Gen 2 (SM8550): product brief: 1x Cortex-X3 @ 3.2 GHz, 2x A715 + 2x A710 @ 2.8 GHz,
#   3x A510 @ 2.0; LPDDR5X 4200 MHz, 64-bit: 67.2 GB/s.
# Dimensity 9300: MediaTek's product page: 1x Cortex-X4 @ 3.25 GHz, 3x X4 @ 2.85, 4x A720 @ 2.0;
#   LPDDR5T 9600 Mbps, 64-bit: 76.8 GB/s.
# Raspberry Pi 5 (BCM2712, an embedded Linux board): raspberrypi.com product brief: 4x Cortex-A76 @
#   2.4 GHz; LPDDR4X-4267, 32-bit: 17.1 GB/s.
SOCS = {
    "snapdragon-8-gen-3": dict(cores=[("cortex-x4", 1, 3.3), ("cortex-a720", 3, 3.15)], peak_gb_s=76.8),
    "snapdragon-8-gen-2": dict(cores=[("cortex-x3", 1, 3.2), ("cortex-a715", 3, 2.8)], peak_gb_s=67.2),
    "dimensity-9300": dict(cores=[("cortex-x4", 1, 3.25), ("cortex-x4", 3, 2.85)], peak_gb_s=76.8),
    "raspberry-pi-5": dict(cores=[("cortex-a76", 4, 2.4)], peak_gb_s=17.1),
}
# Little cores too, for the "which model" report.
ARM_CPUS = ["cortex-a510", "cortex-a520", "cortex-a55", "cortex-a710", "cortex-a715", "cortex-a720", "cortex-x2",
            "cortex-x3", "cortex-x4", "cortex-a76", "neoverse-n1", "neoverse-n2", "neoverse-v2"]

# Formats: state bytes per key and kv head (K + V) and the steps a decode key costs.
# delta: today's ΔK code at S_m 45 % (mask D/8 + 55 % of D fp16 values + the 4-byte end) with an fp16 V.
FORMATS = ("fp16", "q8_0", "q4_0", "delta")


def state_bytes(fmt: str, d: int) -> float:
    if fmt == "fp16":
        return 4 * d
    if fmt == "q8_0":
        return 2 * d / 32 * 34
    if fmt == "q4_0":
        return 2 * d / 32 * 18
    return d / 8 + 0.55 * d * 2 + 4 + 2 * d


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def compile_asm(tmp: Path) -> Dict[str, Path]:
    """Each target's kernels as assembly with the analysis regions: {"x86": ..., "neon": ..., "neondot": ...}."""
    out = {}
    jobs = [("x86", "g++", ["-mavx2", "-mfma", "-mf16c"], ["f32_deltaattn_avx2.cc", "qblocks_avx2.cc"]),
            ("neon", "aarch64-linux-gnu-g++", [], ["f32_deltaattn_neon.cc", "qblocks_neon.cc"]),
            ("neondot", "aarch64-linux-gnu-g++", ["-march=armv8.2-a+dotprod"], ["qblocks_neondot.cc"])]
    for target, cxx, flags, files in jobs:
        text = []
        for f in files:
            asm = tmp / f"{target}_{f}.s"
            cmd = [cxx, "-std=c++17", "-O3", "-DNDEBUG", "-DDLM_MCA", f"-I{UK.parent}", *flags, "-S", str(UK / f),
                   "-o", str(asm)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(f"error: {' '.join(cmd[:2])} {f} failed: {r.stderr.strip()[:400]}")
            text.append(asm.read_text())
        path = tmp / f"{target}.s"
        path.write_text("\n".join(text))
        out[target] = path
    return out


def regions(asm: Path, comment: str) -> Dict[str, List[str]]:
    """Each analysis region's instructions (its first occurrence): from its BEGIN comment to the next
    END along the fall-through path, following unconditional branches (GCC may lay a loop's body out
    before its header); directives, labels and comments (`comment`: "#" on x86-64, "//" on AArch64)
    dropped, other regions' markers skipped."""
    lines = asm.read_text().splitlines()
    labels = {ln.strip()[:-1]: i for i, ln in enumerate(lines) if re.fullmatch(r"\s*[.\w$]+:", ln)}
    uncond = re.compile(r"^(jmp|b)\s+([.\w$]+)$")
    found: Dict[str, List[str]] = {}
    for i, line in enumerate(lines):
        m = re.search(r"LLVM-MCA-BEGIN (\S+)", line)
        if not m or m.group(1) in found:
            continue
        body, j, seen = [], i + 1, set()
        while j < len(lines) and len(body) < 4000:
            if "LLVM-MCA-END" in lines[j]:
                found[m.group(1)] = body
                break
            t = lines[j].split(comment)[0].strip()
            j += 1
            if not t or t.startswith((".", "#")) or t.endswith(":"):
                continue
            u = uncond.match(t)
            if u and u.group(2) in labels:
                if u.group(2) in seen:
                    break   # a loop back without an END: not a region
                seen.add(u.group(2))
                j = labels[u.group(2)] + 1
                continue
            body.append("\t" + t)
    return found


def mca_cycles(body: List[str], triple: str, mcpu: str, tmp: Path) -> float:
    """Steady-state cycles per pass of a region on a core model."""
    src = tmp / "region.s"
    src.write_text("\n".join(body) + "\n")
    r = subprocess.run([MCA, f"-mtriple={triple}", f"-mcpu={mcpu}", "-iterations=200", str(src)],
                       capture_output=True, text=True)
    m = re.search(r"Total Cycles:\s+(\d+)", r.stdout)
    if r.returncode or not m:
        raise SystemExit(f"error: {MCA} -mcpu={mcpu} failed: {r.stderr.strip()[:300]}")
    return int(m.group(1)) / 200


def pick(found: Dict[str, List[str]], op: str, f: int, rows: int, keys: int, elems: List[int], d: int):
    """(region, its passes per key of head_dim d) of the first name that exists: a region covers
    `keys` keys and `e` elements of each."""
    for e in elems:
        name = f"{op}{f}.r{rows}.k{keys}.e{e}"
        if name in found:
            return found[name], d / e / keys
    raise SystemExit(f"error: no analysis region {op}{f}.r{rows}.k{keys}.e{elems} in the compiled kernels")


def steps(target: str, found: Dict[str, List[str]], fmt: str, rows: int, d: int):
    """[(region, multiplicity per key)] for one format's decode key: its Q·Kᵀ and P·V steps."""
    x86 = target == "x86"
    kq = 2 if x86 and rows <= 4 else 1   # AVX2's 4-lane tiles take two keys per step
    fb = {"fp16": 16, "q8_0": 34, "q4_0": 18}
    if fmt == "delta":   # x86: two keys of 64 per pass; NEON: one 8-element chunk
        qk = pick(found, "qk.delta", 16, rows, kq if x86 else 1, [64] if x86 else [8], d)
    else:
        qk = pick(found, "qk.f" if fmt == "fp16" else "qk.q", fb[fmt], rows, kq, [64], d)   # head_dim 128: two 64 steps
    vf = 16 if fmt in ("fp16", "delta") else fb[fmt]
    return [qk, pick(found, "pv.f" if vf == 16 else "pv.q", vf, rows, 1, [32, 16, 8], d)]


@dataclass
class CoreCycles:
    target: str
    mcpu: str
    rows: int
    head_dim: int
    format: str
    cycles_per_key: float   # per kv head: Q·Kᵀ + P·V


CALL = re.compile(r"^\t(call|bl|blr)\s")


def analyse(asm: Dict[str, Path], tmp: Path, host_mcpu: str, shapes, cpus: List[str]) -> List[CoreCycles]:
    found = {t: regions(p, "#" if t == "x86" else "//") for t, p in asm.items()}
    for t, regs in found.items():   # a call inside a kernel's step: the model would be wrong, the kernel slow
        bad = [n for n, body in regs.items() if any(CALL.match(i) for i in body)]
        if bad:
            raise SystemExit(f"error: {t} kernel steps with a function call: {', '.join(sorted(bad)[:6])}")
    out = []
    for rows, d in shapes:
        for fmt in FORMATS:
            log(f"llvm-mca: R {rows} D {d} {fmt}")
            st = steps("x86", found["x86"], fmt, rows, d)
            out.append(CoreCycles("x86", host_mcpu, rows, d, fmt,
                                  sum(mca_cycles(b, "x86_64", host_mcpu, tmp) * m for b, m in st)))
            for variant in ("neondot", "neon"):
                if variant == "neondot" and fmt not in ("q8_0", "q4_0"):
                    continue
                merged = {**found["neon"], **(found["neondot"] if variant == "neondot" else {})}
                st = steps("neon", merged, fmt, rows, d)
                for cpu in cpus:
                    out.append(CoreCycles(variant, cpu, rows, d, fmt,
                                          sum(mca_cycles(b, "aarch64", cpu, tmp) * m for b, m in st)))
    return out


def same_model_groups(cycles: List[CoreCycles], cpus: List[str]) -> List[List[str]]:
    """ARM -mcpu names whose figures are identical on every step: one scheduling model."""
    prints: Dict[str, tuple] = {}
    for c in cycles:
        if c.target != "x86":
            prints.setdefault(c.mcpu, ())
            prints[c.mcpu] += (round(c.cycles_per_key, 3),)
    groups: Dict[tuple, List[str]] = {}
    for cpu in cpus:
        groups.setdefault(prints[cpu], []).append(cpu)
    return list(groups.values())


def validate(cycles: List[CoreCycles], host_mcpu: str, tmp: Path, reps: int) -> List[dict]:
    """Predicted vs measured ratios to dense fp16 K+V on this host (warm decode step, 1 thread)."""
    import torch

    from attention import decode_step, synthetic_inputs

    kinds = {"fp16": ("dense_f16k", "fp16", 0.0), "q8_0": ("dense_q8_0k", "q8_0", 0.0),
             "q4_0": ("dense_q4_0k", "q4_0", 0.0), "delta": ("delta", "fp16", 0.6)}
    rows = []
    for shape, (h, hkv, d) in {"smollm2-135m": (9, 3, 64), "llama-3.2-1b": (32, 8, 64)}.items():
        for ctx in (1024, 2048):
            q, k, v = synthetic_inputs(ctx, h, hkv, d)
            qkv = tmp / "qkv.f32"
            torch.cat([q.reshape(-1), k.reshape(-1), v.reshape(-1)]).numpy().tofile(qkv)
            ms = {}
            for fmt, (kind, vf, theta) in kinds.items():
                log(f"validate: {shape} ctx {ctx} {fmt}")
                ms[fmt] = decode_step(kind, vf, ctx, h, hkv, d, 1, 1, reps, theta, 0.05, qkv)["ms"]
            pred = {c.format: c.cycles_per_key for c in cycles
                    if c.target == "x86" and c.rows == h // hkv and c.head_dim == d}
            for fmt in FORMATS:
                p, m = pred[fmt] / pred["fp16"], ms[fmt] / ms["fp16"]
                rows.append(dict(shape=shape, context=ctx, format=fmt, predicted_ratio=p, measured_ratio=m,
                                 error=p / m - 1, measured_ms=ms[fmt], mcpu=host_mcpu))
    return rows


def phone_table(cycles: List[CoreCycles], socs: dict, contexts, bw_fraction: float) -> List[dict]:
    cyc = {(c.target, c.mcpu, c.rows, c.head_dim, c.format): c.cycles_per_key for c in cycles}
    out = []
    for soc, spec in socs.items():
        bw = spec["peak_gb_s"] * bw_fraction * 1e9
        for model, m in MODELS.items():
            rows, d = m["heads"] // m["kv_heads"], m["head_dim"]
            for ctx in contexts:
                for fmt in FORMATS:
                    variant = "neondot" if fmt in ("q8_0", "q4_0") else "neon"
                    # keys per second over the clusters used (each core at its clock, its model's cycles)
                    rate = sum(n * ghz * 1e9 / cyc[(variant, cpu, rows, d, fmt)] for cpu, n, ghz in spec["cores"])
                    keys = ctx * m["kv_heads"] * m["layers"]
                    compute_s = keys / rate
                    nbytes = keys * state_bytes(fmt, d)
                    memory_s = nbytes / bw
                    attn = max(compute_s, memory_s)
                    out.append(dict(soc=soc, model=model, context=ctx, format=fmt, state_mb=nbytes / 1e6,
                                    attention_us=attn * 1e6, bound="compute" if compute_s > memory_s else "memory",
                                    decode_ms=(m["weight_bytes"] / bw + attn) * 1e3))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contexts", type=int, nargs="+", default=[2048, 4096, 8192])
    ap.add_argument("--bw-fraction", type=float, default=0.6,
                    help="share of the DRAM peak a CPU cluster sustains (default 0.6)")
    ap.add_argument("--host-mcpu", default="znver4", help="llvm-mca model of this host (default znver4)")
    ap.add_argument("--no-validate", action="store_true", help="skip the measured host validation")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cpus", nargs="+", default=ARM_CPUS, help="ARM core models to analyse (default: all named)")
    ap.add_argument("--json", action="store_true")
    ns = ap.parse_args()
    need = sorted({cpu for spec in SOCS.values() for cpu, _, _ in spec["cores"]} - set(ns.cpus))
    socs = {k: v for k, v in SOCS.items() if all(c in ns.cpus for c, _, _ in v["cores"])}
    if not 0 < ns.bw_fraction <= 1:
        ap.error("--bw-fraction must be in (0, 1]")
    for tool in (MCA, "aarch64-linux-gnu-g++", "g++"):
        if subprocess.run(["which", tool], capture_output=True).returncode:
            raise SystemExit(f"error: {tool} is not installed (apt-get install llvm-19 g++-aarch64-linux-gnu)")
    shapes = sorted({(m["heads"] // m["kv_heads"], m["head_dim"]) for m in MODELS.values()})
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        cycles = analyse(compile_asm(tmp), tmp, ns.host_mcpu, shapes, ns.cpus)
        groups = same_model_groups(cycles, ns.cpus)
        val = [] if ns.no_validate else validate(cycles, ns.host_mcpu, tmp, ns.reps)
    if need:
        log(f"no phone rows for SoCs with cores not analysed: {', '.join(need)}")
    phones = phone_table(cycles, socs, ns.contexts, ns.bw_fraction)
    if ns.json:
        print(json.dumps({"cycles": [asdict(c) for c in cycles], "same_model": groups, "validation": val,
                          "phones": phones, "bw_fraction": ns.bw_fraction}, indent=1))
        return 0
    print("## Cycles per key and kv head (Q·Kᵀ + P·V steps, llvm-mca)\n")
    print("| target | -mcpu | R | D | " + " | ".join(FORMATS) + " |")
    print("|---|---|---:|---:|" + "---:|" * len(FORMATS))
    table: Dict[tuple, Dict[str, float]] = {}
    for c in cycles:
        table.setdefault((c.target, c.mcpu, c.rows, c.head_dim), {})[c.format] = c.cycles_per_key
    for (t, cpu, r, d), v in table.items():
        print(f"| {t} | {cpu} | {r} | {d} | " + " | ".join(f"{v[f]:.1f}" if f in v else "" for f in FORMATS) + " |")
    print("\nIdentical figures on every step (one LLVM scheduling model): "
          + "; ".join(", ".join(g) for g in groups if len(g) > 1) + "\n")
    if val:
        print("## Validation on this host: predicted vs measured ratio to dense fp16 K+V (warm, 1 thread)\n")
        print("| shape | context | format | predicted | measured | error | measured ms/layer |")
        print("|---|---:|---|---:|---:|---:|---:|")
        for v in val:
            print(f"| {v['shape']} | {v['context']} | {v['format']} | {v['predicted_ratio']:.2f} | "
                  f"{v['measured_ratio']:.2f} | {v['error']:+.0%} | {v['measured_ms']:.3f} |")
        print()
    print(f"## Phones: decode attention and decode per token (DRAM at {ns.bw_fraction:.0%} of peak)\n")
    print("| SoC | model | context | format | state MB | attention µs | bound | decode ms/token |")
    print("|---|---|---:|---|---:|---:|---|---:|")
    for p in phones:
        print(f"| {p['soc']} | {p['model']} | {p['context']} | {p['format']} | {p['state_mb']:.1f} | "
              f"{p['attention_us']:.0f} | {p['bound']} | {p['decode_ms']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
