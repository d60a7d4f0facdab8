"""Training the zoo's models and executing the book's chapters in parallel lanes, before Sphinx runs.

`make book` calls `optim-hunter execute` and then `jupyter-book build`. This module does the first
step: every model a chapter loads is trained (or found cached), and every chapter whose executed
notebook is not in its execution cache is executed and stored there, in the chapter's own cache
(`optim_hunter.book.chapter_cache`) that `optim_hunter.book.sphinx_ext` points myst-nb at. The Sphinx build
then only renders.

Why lanes: on the book's 2-core machine, most of the work (small models, per-prompt decoding)
gains far less than 2x from a second thread (measured on the Performance page), so two tasks with
one thread each finish sooner than the same tasks one after another with two threads. A task
starts when the models it needs are trained; among ready tasks the one with the longest remaining
chain (its own estimate plus what waits on it) goes first, so the long trainings start at once.

Dependencies only order the work: a chapter that loads a model still being trained would wait on
the model's lock (`locks.exclusive`) and then read it, so a missing entry costs time, never
correctness. Each task runs in its own process group, its output in `_build/logs/<task>.log`; an
interrupt stops them all (a trainer writes a resume point on SIGTERM) and caches nothing
half-done. A failed task is named with its log (the cell's traceback is there) and everything else
still runs; the failed chapter stays uncached, so a later `jupyter-book build` would execute it
again and show the error in place.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from optim_hunter import zoo
from optim_hunter.analysis import flops
from optim_hunter.book import chapter_cache
from optim_hunter.chapters import record
from optim_hunter.core import devices
from optim_hunter.report import plots

ROOT_CONFIG = "_config.yml"
TOC = "_toc.yml"

def chapter_needs(doc: str) -> tuple[str, ...]:
    """The zoo models chapter `doc` loads under the current settings (its record's `loads`, with the
    language model and the contrasts when it runs them and they are zoo models, and every model's
    other training seeds; `*`: all the book's)."""
    chapter = record(doc)
    needs = list(chapter.loads)
    if chapter.language_model:
        needs += [m for m in (zoo.model_name(), *zoo.contrasts()) if m in zoo.names()]
    out: list[str] = []
    for name in needs:
        out += zoo.seed_names(name) if name in zoo.names() else [name]
    return tuple(dict.fromkeys(out))


def chapter_after(doc: str) -> tuple[str, ...]:
    """The docnames of the chapters whose cached results chapter `doc` reads (in its folder)."""
    folder = doc.rsplit("/", 1)[0] if "/" in doc else ""
    return tuple(f"{folder}/{name}" if folder else name for name in record(doc).after)


# Seconds a training takes on one thread of the book's 2-core machine, full profile, beside another
# task (the cold build of `make bench`, 2026-11-30, then the cuts and fixes measured after it): only
# the order of the work depends on them. A chapter's estimate is in its record; unknown tasks count
# as a minute.
ESTIMATES: dict[str, float] = {
    "train numeric-icl": 470.0,
    "train affine-recurrence": 490.0,
    "train affine-every-position": 100.0,
    "train affine-recurrence-seed1": 490.0,
    "train affine-every-position-seed1": 100.0,
    "train affine-recurrence-seed2": 490.0,
    "train affine-every-position-seed2": 100.0,
    "train affine-recurrence-seed3": 490.0,
    "train affine-every-position-seed3": 100.0,
    "train affine-recurrence-seed4": 490.0,
    "train affine-every-position-seed4": 100.0,
    "train attn-only-2l-code": 340.0,
}
# The Markov-chain models of the induction-heads chapter (1,500 steps; 74, 54, 62, 29 and 32 s alone on
# one thread, 2026-12-03), every training seed alike.
for _model, _seconds in {"attn-only-3l": 95.0, "attn-only-2l": 70.0, "smeared-2l": 80.0, "attn-only-1l": 40.0,
                         "smeared-1l": 42.0}.items():
    for _name in (_model, f"{_model}-seed1", f"{_model}-seed2"):
        ESTIMATES[f"train {_name}"] = _seconds
DEFAULT_ESTIMATE = 60.0


@dataclasses.dataclass(frozen=True)
class Task:
    """One unit of work: train a zoo model, or execute a chapter into the cache."""

    kind: str  # "train" or "execute"
    target: str  # a zoo model name, or a chapter's docname (its path without the suffix)
    needs: tuple[str, ...] = ()  # names of the tasks that must finish first

    @property
    def name(self) -> str:
        return f"{self.kind} {self.target}"

    @property
    def estimate(self) -> float:
        if self.kind == "execute":
            return record(self.target).estimate
        return ESTIMATES.get(self.name, DEFAULT_ESTIMATE)


@dataclasses.dataclass
class Outcome:
    """What happened to one task: its lane, start and end (seconds after the start), and status."""

    task: str
    lane: int
    start: float
    end: float
    status: str  # "done" or "failed"
    log: str


# --- what to do -------------------------------------------------------------------------------


def chapters(root: Path) -> list[Path]:
    """The book's executable chapters, in table-of-contents order (markdown files with code cells)."""
    import yaml

    toc = yaml.safe_load((root / TOC).read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part.get("chapters", [])]
    out = []
    for name in files:
        path = root / f"{name}.md"
        if path.exists() and "```{code-cell}" in path.read_text():
            out.append(path)
    return out


def read_notebook(path: Path) -> Any:
    """The chapter as myst-nb reads it for the Sphinx build (so the cache keys agree)."""
    from myst_nb.core.read import read_myst_markdown_notebook

    return read_myst_markdown_notebook(path.read_text(), add_source_map=True, path=path)


def execution_cache(root: Path, profile: str, doc: str) -> Any:
    """Chapter `doc`'s jupyter-cache, the one the Sphinx build reads (`chapter_cache`)."""
    from jupyter_cache import get_cache

    context = chapter_cache.chapter_context(doc, root / f"{doc}.md", profile)
    return get_cache(str(chapter_cache.cache_path(root / "_build", doc, context)))


def is_cached(cache: Any, path: Path) -> bool:
    try:
        cache.match_cache_notebook(read_notebook(path))
    except KeyError:
        return False
    return True


def selected(root: Path, only: Sequence[str]) -> list[str]:
    """The docnames `only` names (`linear_fn`, `book/linear_fn` or `book/linear_fn.md`), with the
    chapters they read results from (their records' `after`); an unknown name is a ValueError listing the
    book's chapters."""
    docs = [p.relative_to(root).with_suffix("").as_posix() for p in chapters(root)]
    by_name = {**{d.rsplit("/", 1)[-1]: d for d in docs}, **{d: d for d in docs}}
    unknown = [name for name in only if name.removesuffix(".md") not in by_name]
    if unknown:
        raise ValueError(f"no chapter named {', '.join(map(repr, unknown))}: the book's chapters are "
                         f"{', '.join(d.rsplit('/', 1)[-1] for d in docs)}")
    chosen = [by_name[name.removesuffix(".md")] for name in only]
    for doc in list(chosen):  # what a chosen chapter reads must exist first
        chosen += [d for d in chapter_after(doc) if d in docs]
    return [d for d in docs if d in chosen]


def plan(root: Path, profile: str, *, trained: Sequence[str] = (), cached: Sequence[str] = (),
         only: Sequence[str] | None = None) -> list[Task]:
    """The tasks left: zoo models not in `trained`, chapters not in `cached` (docnames); with
    `only`, just those chapters (see `selected`) and the models they load."""
    names = zoo.names()
    needs = {}
    for path in chapters(root):
        doc = path.relative_to(root).with_suffix("").as_posix()
        needs[doc] = chapter_needs(doc)
        unknown = [m for m in needs[doc] if m != "*" and m not in names]
        if unknown:
            raise ValueError(f"chapter {doc} loads {unknown}, not zoo models (see its CHAPTER record and "
                             f"`optim-hunter models`)")
    used = list(dict.fromkeys(m for models in needs.values() for m in models if m != "*"))
    wanted = set(needs) if only is None else set(selected(root, only))
    loaded = {m for doc in wanted for m in (used if "*" in needs[doc] else needs[doc])}
    train = [Task("train", name) for name in used if name not in trained and name in loaded]
    waiting = {task.target for task in train}
    tasks = list(train)
    for doc, models in needs.items():
        if doc in cached or doc not in wanted:
            continue
        models = used if "*" in models else models
        after = tuple(f"execute {d}" for d in chapter_after(doc) if d in needs and d not in cached)
        tasks.append(Task("execute", doc, tuple(f"train {m}" for m in models if m in waiting) + after))
    return tasks


def priorities(tasks: Sequence[Task]) -> dict[str, float]:
    """Each task's estimate plus the longest chain of estimates waiting on it."""
    waiting: dict[str, list[Task]] = {}
    for task in tasks:
        for need in task.needs:
            waiting.setdefault(need, []).append(task)
    memo: dict[str, float] = {}

    def chain(task: Task) -> float:
        if task.name not in memo:
            memo[task.name] = task.estimate + max((chain(t) for t in waiting.get(task.name, [])), default=0.0)
        return memo[task.name]

    return {task.name: chain(task) for task in tasks}


# --- doing it ---------------------------------------------------------------------------------


def _command(task: Task, root: Path, profile: str, out: Path) -> list[str]:
    if task.kind == "train":
        return [sys.executable, "-m", "optim_hunter.book.cli", "train", task.target, "--profile", profile]
    return [sys.executable, "-m", "optim_hunter.book.book_executor", str(root / f"{task.target}.md"), str(out)]


def run(
    root: Path,
    profile: str,
    *,
    lanes: int = 2,
    tasks: Sequence[Task] | None = None,
    progress: bool = True,
    command: Any = None,
    only: Sequence[str] | None = None,
) -> list[Outcome]:
    """Run the plan (or `tasks`) `lanes` at a time; executed chapters go into the execution cache.

    Each lane gets `cpu_count // lanes` threads (at least one). When the language model runs on a
    GPU (`devices.validated()`, or a placement across devices), the chapters that load it (their
    records' `language_model`) run one after another in one more lane of their own, so one copy of
    the model is on the GPU at a time; the `lanes` CPU lanes keep the trained toys and every other
    chapter. `only`: just those chapters (and the models they load; see `plan`). Returns every
    task's outcome and writes them to `_build/schedule.json`; raises `RuntimeError` naming the
    failed tasks.
    """
    if lanes < 1:
        raise ValueError(f"lanes must be >= 1, got {lanes}")
    device = devices.validated()  # a device this machine lacks stops the build before any work
    gpu_lane = lanes if devices.is_accelerator(device) or devices.placed() else None
    (root / "_build" / "logs").mkdir(parents=True, exist_ok=True)
    if tasks is None:
        tasks = _remaining(root, profile, only)
    _check_needs(tasks)
    threads = str(max(1, (os.cpu_count() or 1) // lanes))
    if gpu_lane is not None and any(_on_gpu(t) for t in tasks):
        print(f"{'placed model' if devices.placed() else device}: the language-model chapters run one at a "
              f"time in lane {gpu_lane} (one copy of the model per GPU); CPU lane"
              f"{'s' if lanes > 1 else ''} {', '.join(map(str, range(lanes)))} run the trained toys and "
              f"the other chapters", flush=True)
    pool = _Lanes(root, profile, tasks, lanes, gpu_lane, _task_env(profile, threads), command or _command, progress)
    try:
        pool.run()
    finally:
        if pool.outcomes:  # a run with nothing to do keeps the record of the last one that did work
            _write_schedule(root / "_build" / "schedule.json", pool.outcomes, lanes, threads, pool.elapsed())
    if pool.failed:
        raise RuntimeError(f"failed: {', '.join(sorted(pool.failed))} (logs in {root / '_build' / 'logs'})")
    return pool.outcomes


def _remaining(root: Path, profile: str, only: Sequence[str] | None) -> list[Task]:
    """The plan for what is not trained or cached yet."""
    docs = {p.relative_to(root).with_suffix("").as_posix(): p for p in chapters(root)}
    trained = [name for name in zoo.names() if zoo.status(name, profile).cached]
    cached = [doc for doc, path in docs.items() if is_cached(execution_cache(root, profile, doc), path)]
    return plan(root, profile, trained=trained, cached=cached, only=only)


def _check_needs(tasks: Sequence[Task]) -> None:
    names = {task.name for task in tasks}
    for task in tasks:
        unknown = [need for need in task.needs if need not in names]
        if unknown:
            raise ValueError(f"{task.name} needs {unknown}, which are not among the tasks")


def task_log(root: Path, task: Task, suffix: str = ".log") -> Path:
    """A task's file in `_build/logs`: its output (`.log`), or the tally of its language-model
    passes (`.flops.json`, `optim_hunter.analysis.flops`)."""
    return root / "_build" / "logs" / f"{task.name.replace(' ', '-').replace('/', '-')}{suffix}"


def flops_log(root: Path, task: Task) -> Path:
    """Where a task's language-model passes are tallied."""
    return task_log(root, task, ".flops.json")


def _task_env(profile: str, threads: str) -> dict[str, str]:
    return {**os.environ, "OPTIM_HUNTER_PROFILE": profile, plots.BOOK_ENV: "1",
            # A task uses its lane's cores and no more: torch/BLAS threads, and joblib's worker
            # processes (n_jobs=-1 means this many).
            "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "LOKY_MAX_CPU_COUNT": threads,
            "TQDM_MININTERVAL": "10"}  # progress bars go to log files: a line every 10 s is enough


class _Lanes:
    """The lanes of one `run`: tasks waiting, running (lane -> task, process, start, log, output),
    done and failed, and every outcome so far."""

    def __init__(self, root: Path, profile: str, tasks: Sequence[Task], lanes: int, gpu_lane: int | None,
                 env: dict[str, str], command: Any, progress: bool) -> None:
        self.root, self.profile, self.lanes, self.gpu_lane, self.env, self.command = \
            root, profile, lanes, gpu_lane, env, command
        rank = priorities(tasks)
        self.pending = sorted(tasks, key=lambda t: -rank[t.name])
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.running: dict[int, tuple[Task, subprocess.Popen, float, Path, Path]] = {}
        self.outcomes: list[Outcome] = []
        self.began = time.perf_counter()
        self.bar = tqdm(total=len(tasks), desc="train and execute", disable=not progress, dynamic_ncols=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    def run(self) -> None:
        try:
            while self.pending or self.running:
                self.start_ready()
                time.sleep(0.2)
                self.reap()
        except BaseException:
            for _, process, *_ in self.running.values():  # SIGTERM: a trainer saves a resume point first
                _stop(process)
            raise
        finally:
            self.bar.close()

    def start_ready(self) -> None:
        """Start a ready task in every free lane (a GPU lane takes only language-model chapters)."""
        for lane in range(self.lanes if self.gpu_lane is None else self.lanes + 1):
            if lane in self.running:
                continue
            ready = [t for t in self.pending if all(n in self.done for n in t.needs)
                     and (self.gpu_lane is None or _on_gpu(t) == (lane == self.gpu_lane))]
            for task in [t for t in self.pending if any(n in self.failed for n in t.needs)]:
                self.pending.remove(task)  # what needs a failed model cannot run
                self.failed.add(task.name)
                self.outcomes.append(Outcome(task.name, lane, 0.0, 0.0, "failed", "a task it needs failed"))
                self.bar.update(1)
            if not ready:
                if self.gpu_lane is None:
                    break
                continue  # the other kind of lane may have work
            self.start(lane, ready[0])

    def start(self, lane: int, task: Task) -> None:
        self.pending.remove(task)
        logs = self.root / "_build" / "logs"
        log = task_log(self.root, task)
        out = logs / f"{task.target.replace('/', '-')}.executed.ipynb"
        argv = self.command(task, self.root, self.profile, out)
        counted = flops_log(self.root, task)  # the language model's FLOPs in this task, for `make bench`
        counted.unlink(missing_ok=True)
        env = {**self.env, flops.LOG_ENV: str(counted)}
        with open(log, "w") as handle:
            process = subprocess.Popen(argv, cwd=self.root, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                       start_new_session=True, preexec_fn=_die_with(os.getpid()))
        self.running[lane] = (task, process, self.elapsed(), log, out)
        self.bar.set_postfix_str(", ".join(t.target for t, *_ in self.running.values()))

    def reap(self) -> None:
        """Record every finished task (an executed chapter goes into its cache)."""
        for lane, (task, process, start, log, out) in list(self.running.items()):
            if process.poll() is None:
                continue
            del self.running[lane]
            ok = process.returncode == 0
            if ok and task.kind == "execute":
                _store(execution_cache(self.root, self.profile, task.target), out)
            (self.done if ok else self.failed).add(task.name)
            end = self.elapsed()
            self.outcomes.append(Outcome(task.name, lane, start, end, "done" if ok else "failed", str(log)))
            self.bar.write(f"{task.name}: {'done' if ok else 'FAILED'} in {end - start:.0f} s"
                           + ("" if ok else f" (see {log})"))
            self.bar.update(1)


def _on_gpu(task: Task) -> bool:
    """Whether `task` loads the language model (runs in the GPU lane when there is one)."""
    return task.kind == "execute" and record(task.target).language_model


def _die_with(parent: int) -> Any:
    """For a task's process, before it starts: a SIGTERM when the executor dies, even by SIGKILL
    (Linux `PR_SET_PDEATHSIG`), so no training or chapter runs on as an orphan (a trainer writes
    its resume point on SIGTERM; a chapter's kernel exits with its parent)."""

    def arm() -> None:
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # not Linux: the next run's lock keeps orphans harmless
            return
        if os.getppid() != parent:  # the executor died before the line above
            os._exit(1)

    return arm


def _stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _store(cache: Any, executed: Path) -> None:
    """Put an executed notebook (written by `_execute`) into the execution cache, as myst-nb does."""
    import nbformat
    from jupyter_cache.base import CacheBundleIn

    record = json.loads(executed.with_suffix(".json").read_text())
    notebook = nbformat.read(executed, as_version=4)
    cache.cache_notebook_bundle(CacheBundleIn(notebook, record["uri"], data={"execution_seconds": record["seconds"]}),
                                check_validity=False, overwrite=True)
    executed.unlink()
    executed.with_suffix(".json").unlink()


def _write_schedule(target: Path, outcomes: Sequence[Outcome], lanes: int, threads: str, seconds: float) -> None:
    data = {"lanes": lanes, "threads_per_lane": int(threads), "seconds": seconds,
            "tasks": [dataclasses.asdict(o) for o in outcomes]}
    temporary = target.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(temporary, target)


def _execute(path: Path, out: Path) -> int:
    """Worker: execute one chapter as the Sphinx build would; the executed notebook goes to `out`."""
    import nbformat
    import yaml
    from jupyter_cache.executors.utils import single_nb_execution

    root = path.parent
    while not (root / ROOT_CONFIG).exists() and root != root.parent:
        root = root.parent
    execute = (yaml.safe_load((root / ROOT_CONFIG).read_text()) or {}).get("execute", {}) if (root / ROOT_CONFIG).exists() else {}
    notebook = read_notebook(path)
    result = single_nb_execution(notebook, cwd=str(path.parent), allow_errors=bool(execute.get("allow_errors", False)),
                                 timeout=int(execute.get("timeout", 1800)), meta_override=True)
    if result.err is not None:
        print(result.exc_string, file=sys.stderr)
        return 1
    temporary = out.with_suffix(".tmp")
    nbformat.write(notebook, temporary)
    out.with_suffix(".json").write_text(json.dumps({"uri": str(path), "seconds": result.time}))
    os.replace(temporary, out)
    print(f"executed {path} in {result.time:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(_execute(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()))
