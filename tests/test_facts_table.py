"""docs/kubevirt-facts.md is cited by row id from code, tests and docs: each id names one row."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FACTS = ROOT / "docs" / "kubevirt-facts.md"
ROW = re.compile(r"^\| ([A-Z]\d+) \|", re.M)
# "facts L8", "kubevirt-facts.md L8, P9", "(facts P4-P6)": the first id after the word.
CITATION = re.compile(r"(?:facts|kubevirt-facts\.md),? ([A-Z]\d+)\b")
CITING = ("webhook", "sidecar", "lab", "kubelab", "tests", "charts", "docs", "bench")


def test_every_fact_has_an_id_of_its_own() -> None:
    ids = Counter(ROW.findall(FACTS.read_text()))
    assert ids, "no rows found"
    assert [i for i, n in ids.items() if n > 1] == []


def test_every_cited_fact_exists() -> None:
    ids = set(ROW.findall(FACTS.read_text()))
    files = [ROOT / "README.md", ROOT / "bridge_migration_contract.py"]
    for top in CITING:
        files += [p for p in (ROOT / top).rglob("*") if p.suffix in {".py", ".md", ".yaml", ".tpl"} and p.is_file()]
    missing = sorted(
        f"{p.relative_to(ROOT)}: {cited}"
        for p in files
        for cited in CITATION.findall(p.read_text(errors="replace"))
        if cited not in ids
    )
    assert missing == []
