"""The `optim-hunter` command line: list datasets and regressors, run the evaluation harness."""

from __future__ import annotations

import argparse
import sys

from optim_hunter import datasets, evaluation, regressors


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
    methods = args.methods.split(",") if args.methods else regressors.names()
    results = evaluation.evaluate(
        methods,
        args.dataset,
        n_examples=args.examples,
        seeds=range(args.seeds),
        round_to=args.round,
        n_jobs=args.jobs,
    )
    table = evaluation.summarize(results)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="optim-hunter", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("datasets", help="list the regression datasets").set_defaults(func=_cmd_datasets)
    sub.add_parser("regressors", help="list the baseline regressors").set_defaults(func=_cmd_regressors)
    ev = sub.add_parser("eval", help="evaluate baselines on a dataset")
    ev.add_argument("dataset", nargs="+")
    ev.add_argument("--methods", default="", help="comma-separated regressor names (default: all)")
    ev.add_argument("--examples", type=int, default=25, help="in-context examples per problem")
    ev.add_argument("--seeds", type=int, default=100, help="number of seeds (0..N-1)")
    ev.add_argument("--round", type=int, default=None, help="round features/targets to N decimals")
    ev.add_argument("--jobs", type=int, default=-1, help="parallel workers (joblib)")
    ev.set_defaults(func=_cmd_eval)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:  # bad input: one clear line, no traceback
        print(f"optim-hunter: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
