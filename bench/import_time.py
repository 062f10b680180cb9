"""Cold import time of ``datamint_core`` against ``mlflow.pyfunc``, which it builds on.

Measures: the time ``import X`` takes in a fresh interpreter (``time.perf_counter`` around
the import statement, interpreter start-up excluded), for X = ``datamint_core`` (ours) and
X = ``mlflow.pyfunc`` (the anchor). Runs are interleaved, alternating which goes first, after
one untimed warm-up of each, so both see the same warm OS file cache and compiled ``.pyc``
files. "Cold" means a fresh process, not a cold disk.

Then, from one ``python -X importtime`` run of ``import mlflow.pyfunc; import datamint_core``,
lists the ten modules with the largest cumulative time among those ``datamint_core`` imports
beyond what ``mlflow.pyfunc`` already imported (a single run: indicative, not a statistic).

Target (from the issue): ``import datamint_core`` <= 1.15x ``import mlflow.pyfunc``.
The script reports whether the target is met; it never fails on the number.

Run from the repository root::

    .venv/core/bin/python bench/import_time.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from _common import Summary, print_header, print_ratio, print_table

REPO_ROOT = Path(__file__).resolve().parent.parent
OURS = "datamint_core"
ANCHOR = "mlflow.pyfunc"
TARGET_RATIO = 1.15
_SPLIT_MARKER = "--- datamint bench: anchor imported ---"


def _child_env() -> dict[str, str]:
    """The environment of every child: this checkout first on the path, for both modules."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def time_import(module: str) -> float:
    """Return the seconds ``import module`` takes in a fresh interpreter."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    completed = subprocess.run(
        [sys.executable, "-c", code], env=_child_env(), cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=120, check=True,
    )
    return float(completed.stdout.strip().splitlines()[-1])


def extra_import_profile(top: int = 10) -> tuple[float, list[tuple[int, int, int, str]]]:
    """Profile what importing ours adds once the anchor is imported.

    Returns:
        The cumulative microseconds of ``import datamint_core`` after the anchor, and the
        ``top`` modules it imported by cumulative time as ``(cumulative_us, self_us, level,
        name)``.
    """
    code = (
        f"import sys; import {ANCHOR}; sys.stderr.write({_SPLIT_MARKER!r} + '\\n'); "
        f"sys.stderr.flush(); import {OURS}"
    )
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], env=_child_env(), cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=120, check=True,
    )
    lines = completed.stderr.splitlines()
    extra = lines[lines.index(_SPLIT_MARKER) + 1:]
    modules = []
    for line in extra:
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative_us, package = line[len("import time:"):].split("|")
        indent = len(package) - len(package.lstrip(" ")) - 1
        modules.append((int(cumulative_us), int(self_us), indent // 2, package.strip()))
    total = next((cum for cum, _, level, name in modules if name == OURS and level == 0), 0)
    return total, sorted(modules, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs of each import")
    args = parser.parse_args()

    print_header(f"Cold import: {OURS} (ours) vs {ANCHOR} (anchor), fresh interpreter per run")
    time_import(OURS)  # warm-up: compile .pyc files and warm the file cache, untimed
    time_import(ANCHOR)
    ours: list[float] = []
    anchor: list[float] = []
    for run in range(args.runs):
        order = [(OURS, ours), (ANCHOR, anchor)]
        for module, samples in order if run % 2 == 0 else reversed(order):
            samples.append(time_import(module) * 1000.0)

    print_table([(f"ours:   import {OURS}", Summary.of(ours)),
                 (f"anchor: import {ANCHOR}", Summary.of(anchor))], unit="ms", digits=1)
    print()
    print_ratio(f"import {OURS} / import {ANCHOR}", ours, anchor, TARGET_RATIO)

    total_us, top_modules = extra_import_profile()
    print()
    print(f"Imported by {OURS} beyond {ANCHOR} (python -X importtime, one run): "
          f"{total_us / 1000.0:.1f} ms in all; top {len(top_modules)} by cumulative time:")
    print(f"  {'cumulative':>10}  {'self':>8}  module")
    for cumulative_us, self_us, level, name in top_modules:
        print(f"  {cumulative_us / 1000.0:>8.1f}ms  {self_us / 1000.0:>6.1f}ms  "
              f"{'  ' * level}{name}")


if __name__ == "__main__":
    main()
