"""Peak memory of a 14-class sliding window: the bridge vs MONAI's ``sliding_window_inference``.

Both turn the same float32 volume (default 256x512x512) into a uint8 label map with the
same network (a seeded 3-D conv net with 14 output channels), window (64x128x128), overlap
(0.25), patch batch (1) and constant blending:

- bridge: ``datamint_core.sliding_window.run_sliding_window`` with the torch backend
  (``datamint_torch.TorchPatchArrays``): per-class sums in one slab of 64 planes, reduced to
  labels as each slab finishes;
- MONAI: ``sliding_window_inference`` (a float32 volume per class, plus the count map), then
  ``argmax`` over the classes, as a user of MONAI writes it.

Each run is a fresh process (so no allocator cache of one run serves the next); the growth
of its peak resident set (VmHWM) over its size before the run is its peak memory. The label
maps of the two are checked equal. Runs alternate (bridge, MONAI, bridge, ...); medians.

Target (issue #18 (b)): bridge peak memory <= 0.5x MONAI's, at equal or better time.

Run: ``.venv/full/bin/python bench/sliding_window_memory.py [--shape 256 512 512] [--runs 3]``
(``--shape 96 256 256`` for a quick look on a busy machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLASSES = 14
ROI = (64, 128, 128)

_ONE_RUN = """
import hashlib, json, sys, time
import numpy as np, torch
from torch import nn

side, shape = sys.argv[1], tuple(int(s) for s in sys.argv[2:5])
torch.manual_seed(0)
net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, {classes}, 1)).eval()
volume = np.random.default_rng(0).normal(size=shape).astype(np.float32)
roi, overlap, batch = {roi}, 0.25, 1


def status_bytes(field):
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


with torch.inference_mode():
    net(torch.zeros((1, 1, 8, 8, 8)))  # kernels initialised before the measurement
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # the peak resident size starts again from the current one
    before = status_bytes("VmRSS")
    started = time.perf_counter()
    if side == "bridge":
        from datamint_core.sliding_window import SlidingWindow, run_sliding_window
        from datamint_torch import TorchPatchArrays

        window = SlidingWindow(roi_size=roi, overlap=overlap, sw_batch_size=batch)
        labels = run_sliding_window(volume, net, window, TorchPatchArrays("cpu"))
    else:
        from monai.inferers import sliding_window_inference

        scores = sliding_window_inference(torch.from_numpy(volume)[None, None], roi, batch, net,
                                          overlap=overlap)
        labels = scores[0].argmax(0).to(torch.uint8).numpy()
        del scores
    seconds = time.perf_counter() - started
print(json.dumps({{"seconds": seconds, "peak": status_bytes("VmHWM") - before,
                  "labels": hashlib.sha256(labels.tobytes()).hexdigest()}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 512, 512))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import Summary, print_header, print_ratio, print_table

    shape = tuple(args.shape)
    print_header(
        f"{CLASSES}-class sliding window on a {'x'.join(map(str, shape))} float32 volume, "
        f"window {'x'.join(map(str, ROI))}: the bridge vs MONAI sliding_window_inference"
    )
    code = _ONE_RUN.format(classes=CLASSES, roi=ROI)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    results: dict[str, list[dict]] = {"bridge": [], "MONAI": []}
    for _ in range(args.runs):
        for side in results:
            output = subprocess.run(
                [sys.executable, "-c", code, side.lower(), *map(str, shape)],
                capture_output=True, text=True, env=env, check=True,
            ).stdout
            results[side].append(json.loads(output.splitlines()[-1]))
    digests = {run["labels"] for runs in results.values() for run in runs}
    print(f"label maps identical across sides and runs: {len(digests) == 1}")
    volume_mib = 4 * shape[0] * shape[1] * shape[2] / 2**20
    print(f"volume: {volume_mib:.0f} MiB float32; MONAI's per-class output alone: "
          f"{CLASSES * volume_mib:.0f} MiB\n")
    peaks = {side: [run["peak"] / 2**20 for run in runs] for side, runs in results.items()}
    times = {side: [run["seconds"] for run in runs] for side, runs in results.items()}
    print_table([(f"{side} peak", Summary.of(values)) for side, values in peaks.items()], "MiB",
                digits=0)
    print_table([(f"{side} time", Summary.of(values)) for side, values in times.items()], "s")
    print()
    print_ratio("peak memory, bridge / MONAI", peaks["bridge"], peaks["MONAI"], target=0.5)
    print_ratio("time, bridge / MONAI", times["bridge"], times["MONAI"], target=1.0)


if __name__ == "__main__":
    main()
