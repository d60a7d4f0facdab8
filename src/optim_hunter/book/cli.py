"""The `optim-hunter` command line: list datasets and regressors, run the evaluation harness,
train the zoo's models and list them with their cache status, and train-and-execute everything the
book needs before its Sphinx build (`execute`)."""

from __future__ import annotations

import argparse
import sys

from optim_hunter.analysis import evaluation, regressors
from optim_hunter.core import diskspace, settings
from optim_hunter.data import datasets, prompts

# The commands that need models import the zoo (torch, TransformerLens) and the executor when they
# run: `optim-hunter --help`, `datasets`, `regressors` and a mistyped command answer in half the time
# (3.4 s against 6.8 s measured); tests/test_layout.py lists these imports with this reason.

MAX_SEEDS = 100_000


def _cmd_datasets(args: argparse.Namespace) -> int:
    for name in datasets.names():
        spec = datasets.spec(name)
        print(f"{name:14s} {spec.n_features} features  {spec.description}")
    return 0


def _cmd_regressors(args: argparse.Namespace) -> int:
    for name in regressors.names():
        print(name)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from optim_hunter import zoo  # start-up: see the note at the imports

    if not 1 <= args.seeds <= MAX_SEEDS:
        raise ValueError(f"--seeds must be between 1 and {MAX_SEEDS:,}, got {args.seeds:,}")
    if args.round is not None and not 0 <= args.round <= 15:
        raise ValueError(f"--round must be between 0 and 15 decimals, got {args.round}")
    if args.jobs == 0 or args.jobs < -1:
        raise ValueError(f"--jobs must be a number of workers >= 1, or -1 for every core; got {args.jobs}")
    methods = args.methods.split(",") if args.methods else regressors.names()
    for dataset in args.dataset:
        datasets.spec(dataset)  # an unknown name is refused before any model loads
    model_name = None
    if args.model:
        model_name = zoo.model_name(args.model)  # validated before the (slow) load
    results = evaluation.evaluate(
        methods,
        args.dataset,
        n_examples=args.examples,
        seeds=range(args.seeds),
        round_to=args.round,
        n_jobs=args.jobs,
    ) if methods != ["none"] else None
    if model_name is not None:
        results = _with_language_model(results, model_name, args)
    table = evaluation.summarize(results)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def _with_language_model(results, name: str, args: argparse.Namespace):
    """`results` with the language model's rows (and, with --shuffled, its shuffled-y control's:
    the same x's with the example outputs permuted) on the same problems."""
    import pandas as pd

    from optim_hunter import zoo  # start-up: see the note at the imports
    from optim_hunter.analysis import llm_regressor

    model = zoo.load(name)
    regressor = llm_regressor.LLMRegressor(model, model.tokenizer,
                                           round_to=prompts.DEFAULT_ROUND if args.round is None else args.round)
    parts = [] if results is None else [results]
    for shuffled in (False, True) if args.shuffled else (False,):
        parts.append(llm_regressor.evaluate(regressor, f"{name} (shuffled y)" if shuffled else name, args.dataset,
                                            n_examples=args.examples, seeds=range(args.seeds),
                                            round_to=regressor.round_to, shuffle_y=shuffled))
    return pd.concat(parts, ignore_index=True)


def _size(n_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1024 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return ""  # pragma: no cover


def _cmd_models(args: argparse.Namespace) -> int:
    from optim_hunter import zoo  # start-up: see the note at the imports
    from optim_hunter.zoo import pretrained

    profiles = settings.PROFILES if args.profile == "all" else (settings.profile(args.profile),)
    width = max(len(name) for name in zoo.names() + zoo.pretrained_names())
    print(f"{'name':{width}s} {'profile':8s} {'status':8s} {'size':>9s}  path")
    for name in zoo.names():
        for profile in profiles:
            status = zoo.status(name, profile)
            print(f"{name:{width}s} {profile:8s} {status.state:8s} {_size(status.size_bytes):>9s}  {status.path}")

    for name, spec in pretrained.MODELS.items():
        try:
            state, where = "verified", str(pretrained.verify(spec))
        except pretrained.PretrainedNotAvailable:
            state, where = "missing", f"(install: {spec.install})"
        except pretrained.PretrainedCorrupt:
            state, where = "corrupt", f"(reinstall: {spec.install})"
        print(f"{name:{width}s} {'any':8s} {state:8s} {_size(spec.size):>9s}  {where}")
    print("(and any hf:<name-or-path>: a Hugging Face model from a local folder or the HF cache)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from optim_hunter import zoo  # start-up: see the note at the imports

    profile = settings.profile(args.profile)
    names = zoo.names() if args.name == "all" else [args.name]
    for name in names:
        _trainable(name)  # an unknown name fails here, before anything is imported or trained
    for name in names:
        was_cached = not args.force and zoo.status(name, profile).cached
        path = zoo.train(name, profile, force=args.force, progress=not args.quiet)
        meta = zoo.metadata(name, profile)
        if was_cached:
            print(f"{name} ({profile}): already trained ({meta['steps']} steps), cached -> {path.parent}")
            continue
        before = int(meta.get("resumed_from", 0))
        done = f"{meta['steps'] - before} steps" + (f" (resumed at step {before} of {meta['steps']})" if before else "")
        print(f"{name} ({profile}): {done} in {meta['train_seconds']:.0f} s "
              f"({meta['tokens_per_second']:.0f} tokens/s) -> {path.parent}")
    return 0


def _trainable(name: str) -> None:
    """A ValueError unless the package trains `name`: lists the trainable models only, and says what
    to do with a pretrained or Hugging Face model instead."""
    from optim_hunter import zoo  # start-up: see the note at the imports

    trained = ", ".join(zoo.names())
    if name in zoo.pretrained_names():
        raise ValueError(f"{name!r} is pretrained (shipped in a package): it is loaded, not trained; a chapter uses it "
                         f"with OPTIM_HUNTER_MODEL={name} (`optim-hunter models` shows whether it is installed). "
                         f"The models the package trains: {trained}")
    if name.startswith(zoo.HF_PREFIX):
        raise ValueError(f"{name!r} is a Hugging Face model: it is loaded, not trained (from a local copy); a chapter "
                         f"uses it with OPTIM_HUNTER_MODEL={name}. The models the package trains: {trained}")
    if name not in zoo.names():
        raise ValueError(f"unknown model {name!r}: the models the package trains are {trained} (or `all`)")


def _cmd_execute(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from optim_hunter import zoo  # start-up: see the note at the imports
    from optim_hunter.book import book_executor

    root = Path(args.root).resolve()
    if not (root / book_executor.TOC).exists():
        raise ValueError(f"{root} has no {book_executor.TOC}: run this in the book's folder or pass --root")
    if args.lanes < 1:
        raise ValueError(f"--lanes must be >= 1, got {args.lanes}")
    if args.model is not None:  # this run's language model, checked as OPTIM_HUNTER_MODEL is
        zoo.model_name(args.model)
        os.environ["OPTIM_HUNTER_MODEL"] = args.model  # the chapters' kernels inherit it
    if args.only:
        book_executor.selected(root, args.only)  # an unknown chapter stops here, before any work
    try:
        outcomes = book_executor.run(root, settings.profile(args.profile), lanes=args.lanes, progress=not args.quiet,
                                     only=args.only or None)
    except RuntimeError as err:
        print(f"optim-hunter: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("optim-hunter: interrupted; trainings saved resume points, finished chapters are cached: "
              "run it again to go on", file=sys.stderr)
        return 130
    if not outcomes:
        print("every model trained and every chapter executed already (cached)")
    return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush finds no closed pipe to complain
    about (Python's documented remedy for SIGPIPE)."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file descriptor (a test's capture)
        pass
    finally:
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="optim-hunter", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("datasets", help="list the regression datasets").set_defaults(func=_cmd_datasets)
    sub.add_parser("regressors", help="list the baseline regressors").set_defaults(func=_cmd_regressors)
    ev = sub.add_parser("eval", help="evaluate baselines on a dataset")
    ev.add_argument("dataset", nargs="+")
    ev.add_argument("--methods", default="", help="comma-separated regressor names (default: all; `none` for the "
                                                  "language model alone)")
    ev.add_argument("--model", default=None, help="also a language model: a zoo name (e.g. smollm2-135m) or "
                                                  "hf:<name-or-path>, prompted with the same examples")
    ev.add_argument("--shuffled", action="store_true", help="with --model: also its shuffled-y control")
    ev.add_argument("--examples", type=int, default=25, help="in-context examples per problem")
    ev.add_argument("--seeds", type=int, default=100, help="number of seeds (0..N-1)")
    ev.add_argument("--round", type=int, default=None, help="round features/targets to N decimals")
    ev.add_argument("--jobs", type=int, default=-1, help="parallel workers (joblib)")
    ev.set_defaults(func=_cmd_eval)
    tr = sub.add_parser("train", help="train a zoo model (cached: a no-op when already trained)")
    tr.add_argument("name", help="zoo model name (see `optim-hunter models`), or `all`")
    tr.add_argument("--profile", default=None, help="full or smoke (default: $OPTIM_HUNTER_PROFILE or full)")
    tr.add_argument("--force", action="store_true", help="discard the cached model and train again")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=_cmd_train)
    ex = sub.add_parser("execute", help="train the zoo and execute the book's chapters, in parallel lanes, "
                                        "into the cache `jupyter-book build` reads (`make book` runs this)")
    ex.add_argument("--profile", default=None, help="full or smoke (default: $OPTIM_HUNTER_PROFILE or full)")
    ex.add_argument("--lanes", type=int, default=2, help="tasks at a time (each gets cores/lanes threads)")
    ex.add_argument("--root", default=".", help="the book's folder (with _toc.yml)")
    ex.add_argument("--quiet", action="store_true", help="no progress bar")
    ex.add_argument("--only", action="append", metavar="CHAPTER", help="execute only this chapter (e.g. linear_fn; "
                    "repeatable), with the chapters it reads and the models it loads")
    ex.add_argument("--model", default=None, help="the language model for this run (as OPTIM_HUNTER_MODEL)")
    ex.set_defaults(func=_cmd_execute)
    mo = sub.add_parser("models", help="list the zoo models with their cache status, path and size")
    mo.add_argument("--profile", default=None, help="full, smoke or all (default: the current profile)")
    mo.set_defaults(func=_cmd_models)
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except ValueError as err:  # bad input: one clear line, no traceback
        print(f"optim-hunter: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `optim-hunter models | head`: the reader left, nothing to say
        _silence_stdout()
        return 0
    except diskspace.DiskFullError as err:  # a full disk: the folder and the space needed, no traceback
        print(f"optim-hunter: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a folder that cannot be written or read: name it, no traceback
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"optim-hunter: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
