"""``datamint batch`` over clinical-size cases against a plain single-process loop.

Six CT volumes (``SLICES`` x ``SIZE`` x ``SIZE`` int16 NIfTI, distinct seeds) and a small
3-D torch network (two 3x3x3 convolutions on the whole volume, ``predict_volume``). Each
contender runs in a fresh process, from the model directory to a mask per case on disk:

- **loop** (the anchor): one process loads the model, then per case ``read`` ->
  ``predict`` -> ``np.savez_compressed`` of the mask, torch with its default threads;
- **batch**: ``datamint batch`` with its default workers (one per two cores; the CPU count
  before) and threads per worker (the cores shared out), writing Parquet and the ``.npz``
  masks;
- **batch, 1 worker** and **2 workers**; and with ``--baseline DIR`` (an older checkout)
  its ``datamint batch`` with default workers.

Wall time gives cases per minute; CPU time is user + system of the process and every child
(``RUSAGE_CHILDREN``). Medians over ``--runs`` rounds, interleaved.

Targets (issue #18): cases/min >= 1.0x the loop's with the default workers; CPU <= 1.05x.

Run: ``.venv/full/bin/python bench/clinical_batch.py [--slices 300 --size 512] [--runs 3]
[--baseline /path/to/old/checkout]``
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._common import Summary, print_header  # noqa: E402

CASES = 6
_LOOP = """
import sys, numpy as np
from pathlib import Path
from datamint_core import load_model
from datamint_core.io import read
model = load_model(sys.argv[1])
out = Path(sys.argv[3])
for path in sorted(Path(sys.argv[2]).glob("*.nii.gz")):
    (found,) = model.predict([read(path)], {"mode": "volume"})
    np.savez_compressed(out / (path.name + ".npz"), mask=found[0].mask)
"""


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system, the process and its children) seconds of a command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=96)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="an older checkout to measure beside")
    args = parser.parse_args()
    print_header(
        f"datamint batch vs a plain loop: {CASES} cases of {args.slices}x{args.size}x{args.size}"
    )
    import nibabel
    import numpy as np

    from bench._channel_models import conv3d_segmenter
    from datamint_core import save_model

    work = Path(tempfile.mkdtemp(prefix="datamint-bench-batch-"))
    cases = work / "cases"
    cases.mkdir()
    for seed in range(CASES):
        rng = np.random.default_rng(seed)
        volume = rng.integers(-1000, 1500, (args.size, args.size, args.slices), dtype=np.int16)
        nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), cases / f"case-{seed}.nii.gz")
    save_model(conv3d_segmenter(), work / "model")
    python = sys.executable

    def env_for(checkout: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAMINT_")}
        env["PYTHONPATH"] = os.pathsep.join([str(checkout), str(REPO)])
        env["DATAMINT_CACHE_DIR"] = str(work / "cache")
        return env

    def batch(checkout: Path, *extra: str) -> list[str]:
        output = work / f"out-{time.monotonic_ns()}"
        return [
            python,
            "-P",  # the checkout on PYTHONPATH is imported, not the working directory
            "-m",
            "datamint_core.cli",
            "batch",
            "-m",
            str(work / "model"),
            "-i",
            str(cases),
            "-o",
            str(output),
            "--mode",
            "volume",
            "--no-progress",
            *extra,
        ]

    def loop() -> list[str]:
        output = work / f"loop-{time.monotonic_ns()}"
        output.mkdir()
        return [python, "-P", "-c", _LOOP, str(work / "model"), str(cases), str(output)]

    contenders = {
        "loop": (loop, REPO),
        "batch (default workers)": (lambda: batch(REPO), REPO),
        "batch --workers 1": (lambda: batch(REPO, "--workers", "1"), REPO),
        "batch --workers 2": (lambda: batch(REPO, "--workers", "2"), REPO),
    }
    if args.baseline:
        contenders["baseline batch (default workers)"] = (
            lambda: batch(args.baseline),
            args.baseline,
        )
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    cpus: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.runs):
        for name, (command, checkout) in contenders.items():
            wall, cpu = timed(command(), env_for(checkout))
            walls[name].append(wall)
            cpus[name].append(cpu)
    anchor_wall = Summary.of(walls["loop"]).median
    anchor_cpu = Summary.of(cpus["loop"]).median
    for name in contenders:
        wall, cpu = Summary.of(walls[name]), Summary.of(cpus[name])
        rate = CASES * 60 / wall.median
        line = (
            f"{name:34} {rate:6.2f} cases/min (wall median {wall.median:6.1f} s, "
            f"p10-p90 {wall.p10:.1f}-{wall.p90:.1f}), CPU median {cpu.median:6.1f} s"
        )
        if name != "loop":
            line += (
                f"  -> {anchor_wall / wall.median:.2f}x the loop's cases/min, "
                f"{cpu.median / anchor_cpu:.2f}x its CPU"
            )
        print(line)
    target = anchor_wall / Summary.of(walls["batch (default workers)"]).median
    cpu_ratio = Summary.of(cpus["batch (default workers)"]).median / anchor_cpu
    print(
        f"target cases/min >= 1.0x: {'met' if target >= 1.0 else 'NOT met'} ({target:.2f}x); "
        f"CPU <= 1.05x: {'met' if cpu_ratio <= 1.05 else 'NOT met'} ({cpu_ratio:.2f}x)"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
