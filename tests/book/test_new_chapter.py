"""A newcomer adds a chapter as the README says: a package under `optim_hunter/chapters/` with its
`CHAPTER` record and a study declaring a claim, the notebook `book/<name>.md`, one line of
`_toc.yml`. Nothing else is edited: the executor plans it from its record (the models it loads, its
estimate), executes it, and the book builds it, its claim row collected on the Claims page."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from myst_pages import CONFIG, HEADER

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "optim_hunter"
JUPYTER_BOOK = Path(sys.executable).parent / "jupyter-book"

RECORD = '''"""A toy chapter: one claim about a sum."""

from optim_hunter.chapters import Chapter

CHAPTER = Chapter("toy_sum", loads=("attn-only-1l",), estimate=7.0)
'''

STUDY = '''"""The toy chapter's one study: 2 + 3, against the value its source states."""

import dataclasses

from optim_hunter.chapters.toy_sum import CHAPTER
from optim_hunter.report import claims
from optim_hunter.report.claim_rows import Recording

SUM = claims.declare("toy_sum.five", "2 + 3 is 5", source_seed="issue", source_value=5.0, unit="sum",
                     test=claims.between(4.5, 5.5), why_no_interval="an exact sum has no spread")


@dataclasses.dataclass
class Sum:
    value: float
    recording: Recording

    def numbers(self):
        return {"toy_sum": self.value}

    def claims(self):
        return [self.recording.measure(SUM, self.value)]


def add(profile: str) -> Sum:
    return Sum(2.0 + 3.0, Recording(CHAPTER.name, profile))
'''

NOTEBOOK = HEADER + """
# A toy chapter

```{code-cell} ipython3
import os

from optim_hunter.chapters.toy_sum import study
from optim_hunter.report import claims

result = study.add(os.environ.get("OPTIM_HUNTER_PROFILE", "full"))
claims.record_all(result)
```
"""

TOC = "format: jb-book\nroot: intro\nparts:\n  - caption: c\n    chapters:\n      - file: book/toy_sum\n      - file: claims\n"
CLAIMS_PAGE = "# Claims\n\n```{claims-table}\n```\n"

# Run against the copy of the package (PYTHONPATH): what the record says, as the executor reads it.
PLAN = """
import json, sys
from pathlib import Path
import optim_hunter
from optim_hunter import chapters, zoo
from optim_hunter.book import book_executor, chapter_cache

root = Path(sys.argv[1])
record = chapters.records()["book/toy_sum"]
tasks = book_executor.plan(root, "smoke", trained=[n for n in zoo.names() if n != "attn-only-1l"])
print(json.dumps({
    "package": optim_hunter.__file__,
    "claims": sorted(record.claims()),
    "tasks": [[t.name, list(t.needs), t.estimate] for t in tasks],
    "key": sorted(chapter_cache.chapter_context("book/toy_sum", root / "book" / "toy_sum.md", "smoke")),
}))
"""


@pytest.fixture
def newcomer_book(tmp_path):
    """A copy of the package with the toy chapter added, and a book of that chapter and the Claims page."""
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "optim_hunter", ignore=shutil.ignore_patterns("__pycache__"))
    toy = src / "optim_hunter" / "chapters" / "toy_sum"
    toy.mkdir()
    (toy / "__init__.py").write_text(RECORD)
    (toy / "study.py").write_text(STUDY)
    root = tmp_path / "book_root"
    (root / "book").mkdir(parents=True)
    (root / "_config.yml").write_text(CONFIG)
    (root / "_toc.yml").write_text(TOC)
    (root / "intro.md").write_text("# intro\n")
    (root / "claims.md").write_text(CLAIMS_PAGE)
    (root / "book" / "toy_sum.md").write_text(NOTEBOOK)
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OPTIM_HUNTER_PROFILE": "smoke"}
    env.pop("OPTIM_HUNTER_BOOK", None)
    return root, src, env


@pytest.mark.slow
def test_a_new_chapter_package_notebook_and_toc_line_execute_and_appear(newcomer_book):
    root, src, env = newcomer_book
    planned = subprocess.run([sys.executable, "-c", PLAN, str(root)], env=env, capture_output=True, text=True,
                             timeout=300)
    assert planned.returncode == 0, planned.stderr[-3000:]
    seen = json.loads(planned.stdout.strip().splitlines()[-1])
    assert Path(seen["package"]).is_relative_to(src)  # the copy with the toy chapter, not the checkout
    assert seen["claims"] == ["toy_sum.five"]  # the record finds the claim its package declares
    tasks = {name: (needs, estimate) for name, needs, estimate in seen["tasks"]}
    # the model its record loads is trained first, with every training seed, and its estimate is the record's
    assert tasks["execute book/toy_sum"][1] == 7.0
    assert set(tasks["execute book/toy_sum"][0]) == {t for t in tasks if t.startswith("train attn-only-1l")}
    assert seen["key"] == ["code", "profile"]  # no language-model settings: it does not load the model

    built = subprocess.run([str(JUPYTER_BOOK), "build", str(root), "-W", "--keep-going"], env=env,
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    rows = json.loads((root / "_build" / "claims.json").read_text())
    assert [(row["id"], row["verdict"], row["chapter"], row["docname"]) for row in rows] == [
        ("toy_sum.five", "reproduced", "toy_sum", "book/toy_sum")]
    assert "toy_sum.five" in (root / "_build" / "html" / "claims.html").read_text()
