"""The user docs speak by topic: no work-log wording, and every table of measured results says
what was run, at which commit, on which machine."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "android_demo" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ORDINALS = "first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|thirteenth|this|last|next|same"
WORK_LOG = re.compile(rf"\b(?:(?:{ORDINALS}) sessions?|sessions?'s?|issue #?\d+|#\d+'s|stop \d+)\b", re.IGNORECASE)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_work_periods_or_issue_numbers(doc):
    hits = [f"{i}: {line.strip()[:100]}" for i, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
            if WORK_LOG.search(line)]
    assert not hits, f"{doc.name} reads as a work log:\n" + "\n".join(hits)


def _sections(text: str):
    """(heading, body) of every section, split at '#'-headings outside code blocks."""
    out, head, body, code = [], "", [], False
    for line in text.splitlines():
        code ^= line.startswith("```")
        if not code and re.match(r"#{2,4} ", line):
            out.append((head, "\n".join(body)))
            head, body = line, []
        else:
            body.append(line)
    out.append((head, "\n".join(body)))
    return out


def test_every_results_table_names_command_commit_and_machine():
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    machines = re.findall(r"^\| (\w[\w-]*) \| ", text.split("## Machines", 1)[1].split("\n## ", 1)[0], re.MULTILINE)
    machines = [m for m in machines if m != "id"]
    assert {"zen4", "zen5"} <= set(machines)
    missing = []
    parent = ""
    for head, body in _sections(text):
        parent = head if head.startswith("## ") else parent
        if head in ("## Machines", "") or not re.search(r"^\|.*\|$", body, re.MULTILINE):
            continue
        where = head + "\n" + body + ("\n" + dict(_sections(text)).get(parent, "") if parent != head else "")
        lacks = [what for what, ok in [
            ("command", re.search(r"`(?:python|bash|\./|\.ci/|deltallm_runner)[^`]*`", where)),
            ("commit", re.search(r"\b[0-9a-f]{7,12}\b", where)),
            ("machine", any(re.search(rf"\b{re.escape(m)}\b", where) for m in machines) or "any CPU" in where),
        ] if not ok]
        if lacks:
            missing.append(f"{head}: no {', '.join(lacks)}")
    assert not missing, "tables without their provenance:\n" + "\n".join(missing)
