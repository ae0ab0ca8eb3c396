"""The kit cites only what a learner can read: the paper (arXiv 2402.15055), other public papers and code, or a
document the kit ships. Internal research notes (the method summary, the data-copy README, the conventions guide)
are not shipped, so a citation of them is a dead end for the reader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Names of documents that exist only in the developers' workspace, never in the kit.
UNSHIPPED = re.compile(r"paper-method|paper_method\.md|GUIDE(?:'s|\.md| §)|paper-data README|/work/shared|\.\./shared|"
                       r"parent\s*/\s*[\"']shared[\"']", re.IGNORECASE)


def shipped_texts() -> list[Path]:
    """Every file a learner reads: notebooks (step and exercise copies), the kit's modules, README, INSTRUCTORS and docs/."""
    files = sorted((ROOT / "notebooks").rglob("*.ipynb")) + sorted((ROOT / "ctx_utils").rglob("*.py"))
    files += [ROOT / "README.md", ROOT / "INSTRUCTORS.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [f for f in files if ".ipynb_checkpoints" not in f.parts]


def test_the_scan_finds_a_planted_citation(tmp_path):
    assert UNSHIPPED.search("the rule (paper-method §2.4)")
    assert UNSHIPPED.search("GUIDE's organism trials")
    assert UNSHIPPED.search("see the paper-data README §3.7")
    assert UNSHIPPED.search("data: $CTX_PAPER_DATA or ../shared/paper-data")
    assert UNSHIPPED.search('SHARED = REPO_ROOT.parent / "shared" / "paper-data"')
    assert not UNSHIPPED.search("Instructor guide; the paper (arXiv 2402.15055 §5.4)")


@pytest.mark.parametrize("path", shipped_texts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_citation_of_an_unshipped_document(path):
    text = path.read_text(encoding="utf-8")
    hits = [f"line {text.count(chr(10), 0, m.start()) + 1}: …{text[max(0, m.start() - 40):m.end() + 20]}…"
            for m in UNSHIPPED.finditer(text)]
    assert not hits, (f"{path.relative_to(ROOT)} cites a document the kit does not ship; cite the paper "
                      f"(arXiv 2402.15055: section, table, appendix) or a README / INSTRUCTORS.md section instead:\n"
                      + "\n".join(hits))
