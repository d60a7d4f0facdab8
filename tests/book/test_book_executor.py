"""The pre-build executor: its plan, its lanes, and a cached chapter that myst-nb's own reading matches."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from myst_pages import HEADER

from optim_hunter import chapters, zoo
from optim_hunter.book import book_executor
from optim_hunter.book.book_executor import Task
from optim_hunter.chapters import Chapter

REPO = Path(__file__).resolve().parents[2]
CHAPTER = HEADER + """
# A chapter

```{code-cell}
x = 6 * 7
print(x)
```
"""


def _book(tmp_path: Path, chapters: dict[str, str]) -> Path:
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nparts:\n  - caption: c\n    chapters:\n"
        + "".join(f"      - file: {name}\n" for name in chapters if name != "intro")
    )
    (tmp_path / "_config.yml").write_text("execute:\n  timeout: 120\n")
    for name, text in chapters.items():
        (tmp_path / f"{name}.md").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"{name}.md").write_text(text)
    return tmp_path


def _records(monkeypatch, records: dict[str, Chapter]) -> None:
    """The chapters' records are `records` (docname -> Chapter), as if their packages said so."""
    monkeypatch.setattr(chapters, "records", lambda: dict(records))


def test_the_book_s_chapters_are_the_toc_s_files_with_code():
    found = [p.relative_to(REPO).with_suffix("").as_posix() for p in book_executor.chapters(REPO)]
    assert "book/llm_regressor" in found and "book/model_zoo" in found
    assert "book/intro" not in found  # prose only
    assert set(chapters.records()) == set(found)  # every chapter with code has its record, and no other


def test_plan_trains_what_is_missing_and_chapters_wait_only_for_those(tmp_path, monkeypatch):
    root = _book(tmp_path, {"intro": "# intro\n", "book/a": CHAPTER, "book/z": CHAPTER})
    _records(monkeypatch, {"book/a": Chapter("a", loads=("attn-only-2l-code", "numeric-icl")),
                           "book/z": Chapter("z", loads=("*",))})
    tasks = {t.name: t for t in book_executor.plan(root, "smoke", trained=["attn-only-2l-code"], cached=[])}
    assert "train attn-only-2l-code" not in tasks and "train numeric-icl" in tasks
    assert tasks["execute book/a"].needs == ("train numeric-icl",)  # the cached one is not waited for
    # "*" is every model some chapter uses, not every model the zoo could train
    assert tasks["execute book/z"].needs == ("train numeric-icl",)
    assert "train affine-recurrence" not in tasks
    cached = book_executor.plan(root, "smoke", trained=zoo.names(), cached=["book/a"])
    assert [t.name for t in cached] == ["execute book/z"] and cached[0].needs == ()


def test_a_chapter_needs_every_training_seed_and_the_chosen_contrasts(tmp_path, monkeypatch):
    root = _book(tmp_path, {"intro": "# intro\n", "book/llm_regressor": CHAPTER, "book/b": CHAPTER})
    _records(monkeypatch, {"book/b": Chapter("b", loads=("attn-only-2l",)),
                           "book/llm_regressor": Chapter("llm_regressor", language_model=True)})
    monkeypatch.delenv("OPTIM_HUNTER_CONTRASTS", raising=False)
    monkeypatch.setenv("OPTIM_HUNTER_MODEL", "smollm2-135m")
    tasks = {t.name: t for t in book_executor.plan(root, "smoke")}
    assert set(tasks["execute book/b"].needs) == {f"train {n}" for n in zoo.seed_names("attn-only-2l")}
    assert len(zoo.seed_names("attn-only-2l")) == zoo.SEEDS["attn-only-2l"] >= 3
    assert tasks["execute book/llm_regressor"].needs == ()  # a pretrained model: nothing to train
    assert "train numeric-icl" not in tasks  # out of the default build
    monkeypatch.setenv("OPTIM_HUNTER_CONTRASTS", "numeric-icl")
    tasks = {t.name: t for t in book_executor.plan(root, "smoke")}
    assert tasks["execute book/llm_regressor"].needs == ("train numeric-icl",)


def test_plan_names_an_unknown_model_before_any_work(tmp_path, monkeypatch):
    root = _book(tmp_path, {"intro": "# intro\n", "book/a": CHAPTER})
    _records(monkeypatch, {"book/a": Chapter("a", loads=("no-such-model",))})
    with pytest.raises(ValueError, match="no-such-model"):
        book_executor.plan(root, "smoke")


def test_priority_is_the_longest_chain_of_estimates(monkeypatch):
    monkeypatch.setattr(book_executor, "ESTIMATES", {"train a": 10.0, "train b": 1.0})
    _records(monkeypatch, {"x": Chapter("x", estimate=5.0), "y": Chapter("y", estimate=50.0)})
    tasks = [Task("train", "a"), Task("train", "b"), Task("execute", "x", ("train a",)),
             Task("execute", "y", ("train b",))]
    rank = book_executor.priorities(tasks)
    assert rank == {"train a": 15.0, "train b": 51.0, "execute x": 5.0, "execute y": 50.0}


def _sleeper(seconds: dict[str, float], fail: tuple[str, ...] = ()):
    def command(task, root, profile, out):
        code = f"import time; time.sleep({seconds.get(task.name, 0.0)}); raise SystemExit({int(task.name in fail)})"
        return [sys.executable, "-c", code]
    return command


def test_two_lanes_run_side_by_side_and_respect_needs(tmp_path):
    tasks = [Task("train", "a"), Task("train", "b"), Task("train", "c", ("train a",))]
    outcomes = book_executor.run(tmp_path, "smoke", lanes=2, tasks=tasks, progress=False,
                                 command=_sleeper({"train a": 1.0, "train b": 1.0, "train c": 0.1}))
    by = {o.task: o for o in outcomes}
    assert all(o.status == "done" for o in outcomes)
    assert by["train c"].start >= by["train a"].end  # waited for what it needs
    assert by["train a"].lane != by["train b"].lane and by["train b"].start < by["train a"].end  # in parallel
    schedule = json.loads((tmp_path / "_build" / "schedule.json").read_text())
    assert schedule["lanes"] == 2 and len(schedule["tasks"]) == 3


def test_a_task_uses_its_lane_s_cores_and_no_more(tmp_path):
    seen = tmp_path / "seen.txt"

    def command(task, root, profile, out):
        code = ("import joblib, torch, pathlib; "
                f"pathlib.Path({str(seen)!r}).write_text(f'{{torch.get_num_threads()}} {{joblib.cpu_count()}}')")
        return [sys.executable, "-c", code]

    book_executor.run(tmp_path, "smoke", lanes=2, tasks=[Task("train", "a")], progress=False, command=command)
    lane_cores = max(1, (os.cpu_count() or 1) // 2)
    assert seen.read_text() == f"{lane_cores} {lane_cores}"  # torch threads, joblib's n_jobs=-1


def test_a_task_tallies_its_language_model_flops_into_its_own_log(tmp_path):
    """A task's passes reach `_build/logs/<task>.flops.json` (a stale tally of an earlier run is gone
    first): the compute floor of `make bench` reads it."""
    stale = book_executor.flops_log(tmp_path, Task("train", "b"))
    stale.parent.mkdir(parents=True)
    stale.write_text('{"flops": 1, "passes": 1}')

    def command(task, root, profile, out):
        code = "from optim_hunter.analysis import flops; flops.TALLY.add(123, passes=2)" if task.target == "a" else ""
        return [sys.executable, "-c", code]

    tasks = [Task("train", "a"), Task("train", "b")]
    book_executor.run(tmp_path, "smoke", lanes=2, tasks=tasks, progress=False, command=command)
    assert json.loads(book_executor.flops_log(tmp_path, tasks[0]).read_text()) == {"flops": 123, "passes": 2}
    assert not book_executor.flops_log(tmp_path, tasks[1]).exists()  # no pass: no tally


def test_a_failure_is_named_and_what_needs_it_does_not_run(tmp_path):
    tasks = [Task("train", "a"), Task("train", "b"), Task("execute", "x", ("train a",))]
    with pytest.raises(RuntimeError, match="train a") as err:
        book_executor.run(tmp_path, "smoke", lanes=1, tasks=tasks, progress=False,
                          command=_sleeper({}, fail=("train a",)))
    assert "execute x" in str(err.value)
    schedule = json.loads((tmp_path / "_build" / "schedule.json").read_text())
    status = {t["task"]: t["status"] for t in schedule["tasks"]}
    assert status == {"train a": "failed", "train b": "done", "execute x": "failed"}


def test_run_rejects_a_need_that_is_not_a_task(tmp_path):
    with pytest.raises(ValueError, match="train nowhere"):
        book_executor.run(tmp_path, "smoke", tasks=[Task("execute", "x", ("train nowhere",))], progress=False)


def test_an_executed_chapter_is_what_myst_nb_finds_in_the_cache(tmp_path, monkeypatch):
    """The executor's notebook and the one myst-nb reads for the Sphinx build hash alike, so the
    build renders the cached outputs instead of executing again."""
    from myst_nb.core.config import NbParserConfig
    from myst_nb.core.read import create_nb_reader
    from myst_parser.config.main import MdParserConfig

    root = _book(tmp_path, {"intro": "# intro\n", "book/a": CHAPTER})
    _records(monkeypatch, {})
    monkeypatch.setattr(zoo, "names", lambda: [])
    outcomes = book_executor.run(root, "smoke", lanes=1, progress=False)
    assert [(o.task, o.status) for o in outcomes] == [("execute book/a", "done")]

    path = root / "book" / "a.md"
    reader = create_nb_reader(str(path), MdParserConfig(), NbParserConfig(), path.read_text())
    notebook = reader.read(path.read_text())
    cache = book_executor.execution_cache(root, "smoke", "book/a")
    _, merged = cache.merge_match_into_notebook(notebook)
    outputs = [o for cell in merged.cells if cell.cell_type == "code" for o in cell.outputs]
    assert any("42" in o.get("text", "") for o in outputs)
    schedule = (root / "_build" / "schedule.json").read_text()
    assert book_executor.run(root, "smoke", lanes=1, progress=False) == []  # nothing left to do
    assert (root / "_build" / "schedule.json").read_text() == schedule  # the record of the real work stays


def test_an_interrupt_is_one_line_saying_how_to_go_on(monkeypatch, capsys):
    from optim_hunter.book import cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(book_executor, "run", interrupted)
    assert cli.main(["execute", "--root", str(REPO)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run it again to go on" in err[0]


KILL_SCRIPT = """
import sys
from pathlib import Path
from optim_hunter.book import book_executor
from optim_hunter import chapters, zoo
chapters.records = lambda: {}
zoo.names = lambda: []
book_executor.run(Path(sys.argv[1]), "smoke", lanes=2, progress=False)
"""


def test_a_build_killed_mid_chapter_takes_its_tasks_with_it_and_resumes(tmp_path, monkeypatch):
    """SIGKILL of `optim-hunter execute` (no handler runs): its chapter processes die with it instead
    of running on as orphans, nothing half-written is left, and the next run executes only the
    chapter that was interrupted."""
    import signal
    import subprocess
    import time

    marker = tmp_path / "marker"
    slow = HEADER + f"""
# Slow

```{{code-cell}}
import pathlib, time
pathlib.Path({str(marker)!r}).write_text("started")
time.sleep(20)
pathlib.Path({str(marker)!r}).write_text("finished")
```
"""
    (tmp_path / "book").mkdir()
    root = _book(tmp_path / "book", {"intro": "# intro\n", "book/a": CHAPTER, "book/slow": slow})
    child = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(root)], start_new_session=True)
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert marker.read_text() == "started"
    cache = book_executor.execution_cache(root, "smoke", "book/a")
    while not book_executor.is_cached(cache, root / "book" / "a.md") and time.time() < deadline:
        time.sleep(0.1)  # book/a (fast, the other lane) is done and stored before the kill
    assert marker.read_text() == "started", "the slow cell ended before the kill: lengthen it"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    time.sleep(22)  # longer than the slow cell: an orphan would have finished it
    assert marker.read_text() == "started", "the chapter ran on after its build was killed"
    _records(monkeypatch, {})
    monkeypatch.setattr(zoo, "names", lambda: [])
    outcomes = book_executor.run(root, "smoke", lanes=2, progress=False)
    assert [(o.task, o.status) for o in outcomes] == [("execute book/slow", "done")]
    assert marker.read_text() == "finished"
    json.loads((root / "_build" / "schedule.json").read_text())  # whole, not half-written


def test_a_chapter_reading_another_s_cached_result_starts_after_it(tmp_path, monkeypatch):
    root = _book(tmp_path, {"intro": "# intro\n", "book/competence": CHAPTER, "book/inside_regressor": CHAPTER})
    _records(monkeypatch, {"book/inside_regressor": Chapter("inside_regressor", after=("competence",))})
    monkeypatch.setenv("OPTIM_HUNTER_MODEL", "smollm2-135m")
    tasks = {t.name: t for t in book_executor.plan(root, "smoke")}
    assert tasks["execute book/inside_regressor"].needs == ("execute book/competence",)
    tasks = {t.name: t for t in book_executor.plan(root, "smoke", cached=["book/competence"])}
    assert tasks["execute book/inside_regressor"].needs == ()  # done before: nothing to wait for


def test_only_plans_the_named_chapter_the_chapters_it_reads_and_the_models_it_loads(tmp_path, monkeypatch):
    root = _book(tmp_path, {"intro": "# intro\n", "book/a": CHAPTER, "book/b": CHAPTER,
                            "book/competence": CHAPTER, "book/inside_regressor": CHAPTER})
    _records(monkeypatch, {"book/a": Chapter("a", loads=("attn-only-2l-code",)),
                           "book/b": Chapter("b", loads=("smeared-1l",)),
                           "book/inside_regressor": Chapter("inside_regressor", after=("competence",))})
    monkeypatch.setenv("OPTIM_HUNTER_MODEL", "smollm2-135m")
    names = [t.name for t in book_executor.plan(root, "smoke", only=["a"])]
    assert names == ["train attn-only-2l-code", "execute book/a"]  # b's model is not trained
    assert [t.name for t in book_executor.plan(root, "smoke", only=["book/b.md"])] == (
        [f"train {n}" for n in zoo.seed_names("smeared-1l")] + ["execute book/b"])
    # inside_regressor reads the competence map: it comes along unless cached
    assert {t.name for t in book_executor.plan(root, "smoke", only=["inside_regressor"])} == {
        "execute book/competence", "execute book/inside_regressor"}
    assert [t.name for t in book_executor.plan(root, "smoke", only=["inside_regressor"],
                                               cached=["book/competence"])] == ["execute book/inside_regressor"]
    with pytest.raises(ValueError, match=r"no chapter named 'linear_fm': the book's chapters are a, b, competence"):
        book_executor.plan(root, "smoke", only=["linear_fm"])
