"""Training the zoo's models and executing the book's chapters in parallel lanes, before Sphinx runs.

`make book` calls `optim-hunter execute` and then `jupyter-book build`. This module does the first
step: every model a chapter loads is trained (or found cached), and every chapter whose executed
notebook is not in its execution cache is executed and stored there, in the chapter's own cache
(`optim_hunter.chapter_cache`) that `optim_hunter.sphinx_ext` points myst-nb at. The Sphinx build
then only renders.

Why lanes: on the book's 2-core machine, most of the work (small models, per-prompt decoding)
gains far less than 2x from a second thread (measured on the Performance page), so two tasks with
one thread each finish sooner than the same tasks one after another with two threads. A task
starts when the models it needs are trained; among ready tasks the one with the longest remaining
chain (its own estimate plus what waits on it) goes first, so the long trainings start at once.

Dependencies only order the work: a chapter that loads a model still being trained would wait on
the model's lock (`training.exclusive`) and then read it, so a missing entry costs time, never
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

ROOT_CONFIG = "_config.yml"
TOC = "_toc.yml"

# Zoo models each chapter loads (pretrained models ship installed: nothing to train), with their
# other training seeds (`zoo.seed_names`). The language-model chapters load the chosen model and
# the contrasts (`LLM_CHAPTERS`: trained here only when one of them is a zoo model). The model zoo
# chapter lists every model the book uses, so it comes after them all. Only what some chapter needs
# is trained.
CHAPTER_NEEDS: dict[str, tuple[str, ...]] = {
    "book/model_zoo": ("*",),
    "book/induction_heads": ("attn-only-1l", "attn-only-2l", "attn-only-3l", "smeared-1l", "smeared-2l",
                             "attn-only-2l-code"),
    "book/affine_recurrences": ("affine-recurrence", "affine-every-position"),
}
# Chapters that read what another chapter computed and cached (the competence map): they start
# after it, so the work is done once (reading it before would compute it again, under a lock).
CHAPTER_AFTER: dict[str, tuple[str, ...]] = {"book/inside_regressor": ("book/competence",)}
LLM_CHAPTERS = ("book/llm_regressor", "book/linear_fn", "book/competence", "book/inside_regressor")


def chapter_needs(doc: str) -> tuple[str, ...]:
    """The zoo models chapter `doc` loads under the current settings (`*`: all the book's)."""
    from optim_hunter import settings, zoo

    needs = list(CHAPTER_NEEDS.get(doc, ()))
    if doc in LLM_CHAPTERS:
        needs += [m for m in (settings.model(), *settings.contrasts()) if m in zoo.names()]
    out: list[str] = []
    for name in needs:
        out += zoo.seed_names(name) if name in zoo.names() else [name]
    return tuple(dict.fromkeys(out))


# Seconds on one thread of the book's 2-core machine, full profile, beside another task (the
# cold build of `make bench`, 2026-11-30, then the cuts and fixes measured after it): only the
# order of the work depends on them. Unknown tasks count as a minute.
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
    "execute book/llm_regressor": 670.0,  # with shuffled-y controls: extrapolated from 4.2 s per 25-example prompt
    "execute book/competence": 300.0,
    "execute book/inside_regressor": 90.0,  # on the competence map's chosen setting (cached map; 410 s on Friedman #2 at 19 examples)
    "execute book/induction_heads": 350.0,  # three training seeds of the Markov models (195 s with one)
    "execute book/gd_in_attention": 205.0,  # three training seeds: 202 s measured (one seed: 125 s)
    "execute book/linear_fn": 170.0,  # with the shuffled-y controls of the sweep (extrapolated)
    "execute book/regressors_friedman2": 95.0,
    "execute book/affine_recurrences": 170.0,  # five training seeds (100 s with three, 69 s with two, 45 s with one)
    "execute book/model_zoo": 50.0,
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

    from optim_hunter import chapter_cache

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
    chapters they read results from (`CHAPTER_AFTER`); an unknown name is a ValueError listing the
    book's chapters."""
    docs = [p.relative_to(root).with_suffix("").as_posix() for p in chapters(root)]
    by_name = {**{d.rsplit("/", 1)[-1]: d for d in docs}, **{d: d for d in docs}}
    unknown = [name for name in only if name.removesuffix(".md") not in by_name]
    if unknown:
        raise ValueError(f"no chapter named {', '.join(map(repr, unknown))}: the book's chapters are "
                         f"{', '.join(d.rsplit('/', 1)[-1] for d in docs)}")
    chosen = [by_name[name.removesuffix(".md")] for name in only]
    for doc in list(chosen):  # what a chosen chapter reads must exist first
        chosen += [d for d in CHAPTER_AFTER.get(doc, ()) if d in docs]
    return [d for d in docs if d in chosen]


def plan(root: Path, profile: str, *, trained: Sequence[str] = (), cached: Sequence[str] = (),
         only: Sequence[str] | None = None) -> list[Task]:
    """The tasks left: zoo models not in `trained`, chapters not in `cached` (docnames); with
    `only`, just those chapters (see `selected`) and the models they load."""
    from optim_hunter import zoo

    names = zoo.names()
    needs = {}
    for path in chapters(root):
        doc = path.relative_to(root).with_suffix("").as_posix()
        needs[doc] = chapter_needs(doc)
        unknown = [m for m in needs[doc] if m != "*" and m not in names]
        if unknown:
            raise ValueError(f"CHAPTER_NEEDS[{doc!r}] names {unknown}, not zoo models (see `optim-hunter models`)")
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
        after = tuple(f"execute {d}" for d in CHAPTER_AFTER.get(doc, ()) if d in needs and d not in cached)
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
        return [sys.executable, "-m", "optim_hunter.cli", "train", task.target, "--profile", profile]
    return [sys.executable, "-m", "optim_hunter.book_executor", str(root / f"{task.target}.md"), str(out)]


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
    GPU (`devices.validated()`, or a placement across devices), the chapters that load it
    (`LLM_CHAPTERS`) run one after another in one more lane of their own, so one copy of the
    model is on the GPU at a time; the `lanes` CPU lanes keep the trained toys and every other
    chapter. `only`: just those chapters (and the models they load; see `plan`). Returns every
    task's outcome and writes them to `_build/schedule.json`; raises `RuntimeError` naming the
    failed tasks.
    """
    from tqdm.auto import tqdm

    from optim_hunter import devices, plots, zoo

    if lanes < 1:
        raise ValueError(f"lanes must be >= 1, got {lanes}")
    device = devices.validated()  # a device this machine lacks stops the build before any work
    gpu_lane = lanes if devices.is_accelerator(device) or devices.placed() else None
    build = root / "_build"
    logs = build / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if tasks is None:
        docs = {p.relative_to(root).with_suffix("").as_posix(): p for p in chapters(root)}
        trained = [name for name in zoo.names() if zoo.status(name, profile).cached]
        cached = [doc for doc, path in docs.items() if is_cached(execution_cache(root, profile, doc), path)]
        tasks = plan(root, profile, trained=trained, cached=cached, only=only)
    threads = str(max(1, (os.cpu_count() or 1) // lanes))
    env = {**os.environ, "OPTIM_HUNTER_PROFILE": profile, plots.BOOK_ENV: "1",
           # A task uses its lane's cores and no more: torch/BLAS threads, and joblib's worker
           # processes (n_jobs=-1 means this many).
           "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "LOKY_MAX_CPU_COUNT": threads,
           "TQDM_MININTERVAL": "10"}  # progress bars go to log files: a line every 10 s is enough
    names = {task.name for task in tasks}
    for task in tasks:
        unknown = [need for need in task.needs if need not in names]
        if unknown:
            raise ValueError(f"{task.name} needs {unknown}, which are not among the tasks")
    rank = priorities(tasks)
    pending = sorted(tasks, key=lambda t: -rank[t.name])
    if gpu_lane is not None and any(_on_gpu(t) for t in tasks):
        print(f"{'placed model' if devices.placed() else device}: the language-model chapters run one at a "
              f"time in lane {gpu_lane} (one copy of the model per GPU); CPU lane"
              f"{'s' if lanes > 1 else ''} {', '.join(map(str, range(lanes)))} run the trained toys and "
              f"the other chapters", flush=True)
    done: set[str] = set()
    failed: set[str] = set()
    running: dict[int, tuple[Task, subprocess.Popen, float, Path, Path]] = {}
    outcomes: list[Outcome] = []
    began = time.perf_counter()
    bar = tqdm(total=len(tasks), desc="train and execute", disable=not progress, dynamic_ncols=True)
    try:
        while pending or running:
            for lane in range(lanes if gpu_lane is None else lanes + 1):
                if lane in running:
                    continue
                ready = [t for t in pending if all(n in done for n in t.needs)
                         and (gpu_lane is None or _on_gpu(t) == (lane == gpu_lane))]
                blocked = [t for t in pending if any(n in failed for n in t.needs)]
                for task in blocked:  # what needs a failed model cannot run
                    pending.remove(task)
                    failed.add(task.name)
                    outcomes.append(Outcome(task.name, lane, 0.0, 0.0, "failed", "a task it needs failed"))
                    bar.update(1)
                if not ready:
                    if gpu_lane is None:
                        break
                    continue  # the other kind of lane may have work
                task = ready[0]
                pending.remove(task)
                log = logs / f"{task.name.replace(' ', '-').replace('/', '-')}.log"
                out = logs / f"{task.target.replace('/', '-')}.executed.ipynb"
                argv = (command or _command)(task, root, profile, out)
                with open(log, "w") as handle:
                    process = subprocess.Popen(argv, cwd=root, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                               start_new_session=True, preexec_fn=_die_with(os.getpid()))
                running[lane] = (task, process, time.perf_counter() - began, log, out)
                bar.set_postfix_str(", ".join(t.target for t, *_ in running.values()))
            time.sleep(0.2)
            for lane, (task, process, start, log, out) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[lane]
                ok = process.returncode == 0
                if ok and task.kind == "execute":
                    _store(execution_cache(root, profile, task.target), out)
                (done if ok else failed).add(task.name)
                end = time.perf_counter() - began
                outcomes.append(Outcome(task.name, lane, start, end, "done" if ok else "failed", str(log)))
                bar.write(f"{task.name}: {'done' if ok else 'FAILED'} in {end - start:.0f} s"
                          + ("" if ok else f" (see {log})"))
                bar.update(1)
    except BaseException:
        for _, process, *_ in running.values():  # SIGTERM: a trainer saves a resume point first
            _stop(process)
        raise
    finally:
        bar.close()
        if outcomes:  # a run with nothing to do keeps the record of the last one that did work
            _write_schedule(build / "schedule.json", outcomes, lanes, threads, time.perf_counter() - began)
    if failed:
        raise RuntimeError(f"failed: {', '.join(sorted(failed))} (logs in {logs})")
    return outcomes


def _on_gpu(task: Task) -> bool:
    """Whether `task` loads the language model (runs in the GPU lane when there is one)."""
    return task.kind == "execute" and task.target in LLM_CHAPTERS


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
