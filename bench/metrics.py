"""Segmentation metrics of clinical-size cases: ``datamint_core.metrics`` vs MONAI.

Each case is a generated CT-like pair of label maps of ``--shape`` (default 300x512x512,
spacing 2.5 x 0.8 x 0.8 mm): an organ-sized ellipsoid (label 1) with a lesion inside it
(label 2) as the truth, and a prediction whose ellipsoids are shifted and resized a little.
Per case, both sides compute Dice, IoU, HD95, ASSD and the normalized surface Dice (2 mm)
for both labels:

- ours: one ``segmentation_metrics(prediction, truth, labels=…, spacing=…)`` call on the
  label maps;
- MONAI: ``DiceMetric``, ``MeanIoU``, ``HausdorffDistanceMetric(percentile=95)``,
  ``SurfaceDistanceMetric(symmetric=True)`` and ``SurfaceDiceMetric`` on one-hot float
  tensors of the same masks (one channel per label, ``include_background=True``). Building
  the one-hot tensors is NOT counted in MONAI's time (generous to the anchor).

The two are run interleaved per case; the values are checked to agree. Figures: medians of
the per-case seconds, and their ratio. Anchor: MONAI. Target (issue #19): <= 1x.

Run: ``.venv/full/bin/python bench/metrics.py`` (``--cases 20 --shape 300 512 512``).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from functools import partial

import numpy as np
from _common import Summary, print_header, print_ratio, print_table

SPACING = (2.5, 0.8, 0.8)
TOLERANCE_MM = 2.0


def ellipsoid(label_map: np.ndarray, centre, radii, value: int) -> None:
    """Paint an ellipsoid into ``label_map``, computing only inside its bounding box."""
    box = tuple(
        slice(max(int(c - r) - 1, 0), min(int(c + r) + 2, n))
        for c, r, n in zip(centre, radii, label_map.shape, strict=True)
    )
    grid = np.ogrid[box]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1
    label_map[box][inside] = value


def case(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    depth, height, width = shape
    organ_centre = np.array([depth * 0.5, height * 0.45, width * 0.55])
    organ_radii = np.array([depth * 0.2, height * 0.22, width * 0.25])
    lesion_centre = organ_centre + rng.uniform(-0.3, 0.3, 3) * organ_radii
    lesion_radii = organ_radii * rng.uniform(0.12, 0.25)
    truth = np.zeros(shape, dtype=np.uint8)
    prediction = np.zeros(shape, dtype=np.uint8)
    ellipsoid(truth, organ_centre, organ_radii, 1)
    ellipsoid(truth, lesion_centre, lesion_radii, 2)
    ellipsoid(prediction, organ_centre + rng.uniform(-3, 3, 3),
              organ_radii * rng.uniform(0.95, 1.05, 3), 1)
    ellipsoid(prediction, lesion_centre + rng.uniform(-2, 2, 3),
              lesion_radii * rng.uniform(0.8, 1.2, 3), 2)
    return prediction, truth


def ours(prediction: np.ndarray, truth: np.ndarray) -> dict[str, dict[str, float]]:
    from datamint_core.metrics import segmentation_metrics

    return segmentation_metrics(prediction, truth, labels={1: "organ", 2: "lesion"},
                                spacing=SPACING, tolerance_mm=TOLERANCE_MM)


def monai(y_pred, y) -> dict[str, list[float]]:
    from monai import metrics

    spacing = list(SPACING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = {
            "dice": metrics.DiceMetric(include_background=True, reduction="none")(y_pred, y),
            "iou": metrics.MeanIoU(include_background=True, reduction="none")(y_pred, y),
            "hd95": metrics.HausdorffDistanceMetric(
                include_background=True, percentile=95, reduction="none"
            )(y_pred, y, spacing=spacing),
            "assd": metrics.SurfaceDistanceMetric(
                include_background=True, symmetric=True, reduction="none"
            )(y_pred, y, spacing=spacing),
            "nsd": metrics.SurfaceDiceMetric(
                class_thresholds=[TOLERANCE_MM] * 2, include_background=True, reduction="none"
            )(y_pred, y, spacing=spacing),
        }
    return {name: [float(v) for v in result[0]] for name, result in values.items()}


def one_hot(label_map: np.ndarray):
    import torch

    return torch.from_numpy(np.stack([label_map == 1, label_map == 2])[None].astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512])
    args = parser.parse_args()
    shape = tuple(args.shape)

    print_header(f"Segmentation metrics, {args.cases} cases of {shape[0]}x{shape[1]}x{shape[2]}"
                 f" voxels, spacing {SPACING} mm: datamint_core.metrics vs MONAI")
    import torch

    torch.set_num_threads(1)  # as scipy's k-d tree: one core each
    rng = np.random.default_rng(19)
    small_prediction, small_truth = case(rng, (20, 32, 32))  # imports and first calls, untimed
    ours(small_prediction, small_truth)
    monai(one_hot(small_prediction), one_hot(small_truth))
    ours_seconds, monai_seconds, worst = [], [], 0.0
    for index in range(args.cases):
        prediction, truth = case(rng, shape)
        y_pred, y = one_hot(prediction), one_hot(truth)
        runs = [("ours", partial(ours, prediction, truth)), ("monai", partial(monai, y_pred, y))]
        if index % 2:  # alternate which goes first
            runs.reverse()
        results = {}
        for name, run in runs:
            start = time.perf_counter()
            results[name] = run()
            elapsed = time.perf_counter() - start
            (ours_seconds if name == "ours" else monai_seconds).append(elapsed)
        for metric, reference in results["monai"].items():
            for label, expected in zip(("organ", "lesion"), reference, strict=True):
                got = results["ours"][label][metric]
                if math.isfinite(expected):
                    worst = max(worst, abs(got - expected))
        print(f"case {index + 1:>2}: ours {ours_seconds[-1]:.2f} s, MONAI {monai_seconds[-1]:.2f} s"
              f"  (organ dice {results['ours']['organ']['dice']:.4f}, "
              f"hd95 {results['ours']['organ']['hd95']:.2f} mm)", flush=True)
    print()
    print_table([("datamint_core.metrics", Summary.of(ours_seconds)),
                 ("MONAI (5 metrics)", Summary.of(monai_seconds))], "s per case")
    print(f"largest difference from MONAI over all values: {worst:.2e}")
    print_ratio("time per case, ours / MONAI", ours_seconds, monai_seconds, target=1.0)


if __name__ == "__main__":
    main()
