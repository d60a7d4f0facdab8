"""Compare two builds' `_build/claims.json`, row for row: which verdicts flip, which values move
more than their interval (the interval is then too narrow to describe the run-to-run spread).

    python bench/compare_claims.py A/_build/claims.json B/_build/claims.json

Exit status 1 when a verdict differs or a row is in one build only; 0 otherwise. Used to check that
the same commit gives the same verdicts on another CPU (e.g. a second build with
ATEN_CPU_CAPABILITY=avx2: other float kernels, as on a machine without AVX-512).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(path: str) -> dict[str, dict]:
    return {row["id"]: row for row in json.loads(Path(path).read_text())}


def compare(a: dict[str, dict], b: dict[str, dict]) -> tuple[list[str], list[str]]:
    """(problems, notes): a verdict flip or a missing row is a problem; a value that moves more
    than the width of its interval is a note."""
    problems, notes = [], []
    for claim_id in sorted(set(a) | set(b)):
        if claim_id not in a or claim_id not in b:
            problems.append(f"{claim_id}: only in {'A' if claim_id in a else 'B'}")
            continue
        ra, rb = a[claim_id], b[claim_id]
        if ra["verdict"] != rb["verdict"]:
            problems.append(f"{claim_id}: {ra['verdict']} -> {rb['verdict']} "
                            f"({ra['measured']} {ra.get('interval')} vs {rb['measured']} {rb.get('interval')})")
        va, vb = ra["measured"], rb["measured"]
        if isinstance(va, float) and isinstance(vb, float) and va != vb:
            interval = ra.get("interval")
            width = (interval[1] - interval[0]) if interval else None
            if width is not None and abs(va - vb) > width:
                notes.append(f"{claim_id}: moved {va:.4g} -> {vb:.4g}, more than its interval's width {width:.3g}")
    return problems, notes


def main(argv: list[str]) -> int:
    a, b = load(argv[0]), load(argv[1])
    problems, notes = compare(a, b)
    same_value = sum(1 for i in set(a) & set(b) if a[i]["measured"] == b[i]["measured"])
    print(f"{len(a)} rows in A, {len(b)} in B; {same_value} with identical values; "
          f"{len(problems)} verdict differences; {len(notes)} values moved more than their interval")
    for line in problems:
        print("DIFF", line)
    for line in notes:
        print("MOVE", line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
