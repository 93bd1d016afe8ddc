"""`python -m export --config NAME_OR_PATH [section.key=value ...]`."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
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


@contextlib.contextmanager
def _quiet_stderr(quiet: bool):
    """-q: what the libraries print while exporting (torchao and torch warnings, progress bars, the
    ExecuTorch runtime's C++ log lines) goes to a temporary file, shown only if the export raises
    something other than our own one-line errors."""
    if not quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        shown = True
        try:
            yield
        except ExportError:
            raise
        except BaseException:
            shown = False
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not shown:
                held.seek(0)
                sys.stderr.write(held.read().decode("utf-8", "replace"))


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

        with _quiet_stderr(ns.quiet):
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
            tol = v.get("tolerance") or {}
            print(f"validation: passed, max_abs_diff={v['max_abs_diff']:.3g} (tolerance {tol.get('max_abs_diff', 0):.3g}) "
                  f"top1={v['top1_agreement']:.3f} (minimum {tol.get('min_top1', 0):.3f})")
    return 0
