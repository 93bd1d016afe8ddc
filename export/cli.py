"""`python -m export --config NAME_OR_PATH [section.key=value ...]`."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from typing import List, Optional

from .config import load_config
from .errors import ConfigError, ExportError


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export", description=(
        "Export a Hugging Face or GGUF causal LM to a validated ExecuTorch .pte with a JSON manifest."))
    p.add_argument("--config", required=True, help="a YAML path, or a name in configs/ (e.g. smollm2_135m.yaml)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="dotted overrides, e.g. quantization.linear=8da8w output.dir=/tmp/out")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    ns = parse_args(argv)
    if not ns.verbose:
        warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(ns.config, ns.overrides)
        if ns.print_config:
            print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        from .pipeline import STAGES, run_export
        from .progress import StageTimer

        manifest = run_export(cfg, StageTimer(STAGES, quiet=ns.quiet))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    if ns.json:
        print(json.dumps(manifest, indent=2))
    else:
        v = manifest["validation"]
        for key in ("pte", "manifest", "tokenizer"):
            print(f"{key}: {manifest['paths'][key]}")
        print(f"size_bytes: {manifest['pte_bytes']}")
        if v.get("enabled"):
            print(f"validation: max_abs_diff={v['max_abs_diff']:.3g} top1={v['top1_agreement']:.3f}")
    return 0
