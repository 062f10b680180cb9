"""The main job: log and register a model, then load it by name in a fresh process.

Run it with ``scripts/demo`` (which builds its own environment), or directly:
``python examples/quickstart.py``. Tracking goes to ``$MLFLOW_TRACKING_URI``, by default the
embedded SQLite store ``sqlite:///mlflow.db`` in the current directory.

1. Log ``examples/threshold_model.py`` (a numpy threshold segmenter saved from code) and
   register it as ``quickstart-segmenter``.
2. In a new Python process: ``load_model("models:/quickstart-segmenter/<version>")`` and
   predict on a synthetic 48-slice phantom in ``volume`` mode, which runs every axial slice
   through the slice -> image bridges.
3. Print what it found, check it against the phantom's truth, and draw it: an overlay
   picture of the slice where the model found the most (``quickstart-segmenter-overlay.png``,
   with the ``[images]`` extra, which ``scripts/demo`` installs).
4. With the ``[lightning]`` extra installed (``scripts/demo`` installs it): train a tiny CNN
   for a few steps on synthetic phantom slices (``train_segmenter.py``), checkpointed and
   registered as ``quickstart-cnn`` through ``MLflowModelCheckpoint`` with the train/val/test
   splits as the run's inputs; then load it by URI in a new process and predict the same
   phantom in ``volume`` mode. Without the extra this step says so and is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np

import datamint_core

MODEL_NAME = "quickstart-segmenter"
CNN_MODEL_NAME = "quickstart-cnn"
HERE = Path(__file__).resolve().parent


def phantom(depth: int = 48, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A noisy volume with a bright ellipsoid 'lesion'; returns (volume, true mask)."""
    rng = np.random.default_rng(7)
    z, y, x = np.ogrid[:depth, :size, :size]
    lesion = (((z - 20) / 10) ** 2 + ((y - 40) / 18) ** 2 + ((x - 55) / 14) ** 2) <= 1
    volume = rng.normal(0.2, 0.05, (depth, size, size)) + 0.6 * lesion
    return volume.astype(np.float32), lesion


def log_and_register() -> int:
    mlflow.set_experiment("datamint-quickstart")
    with mlflow.start_run(run_name="threshold-segmenter"):
        info = datamint_core.log_model(
            python_model=str(HERE / "threshold_model.py"),
            name="segmenter",
            registered_model_name=MODEL_NAME,
        )
    return int(info.registered_model_version)


def predict_in_this_process(model_uri: str, volume_path: str) -> None:
    """Step 2: runs in a fresh process, with nothing but the URI and a file."""
    model = datamint_core.load_model(model_uri)
    volume = datamint_core.VolumeResource(
        path=volume_path, id="phantom-ct", spacing=(2.5, 0.8, 0.8), modality="CT"
    )
    (annotations,) = model.predict([volume], params={"mode": "volume"})
    overlay = draw_overlay(model_uri, volume, annotations)
    print(
        json.dumps(
            [
                {
                    "identifier": a.identifier,
                    "scope": a.scope.value,
                    "shape": list(a.mask.shape),
                    "voxels": a.voxel_count,
                    "confidence": None if a.confidence is None else round(a.confidence, 3),
                    "spacing": list(a.spacing),
                    "slices": int(a.mask.any(axis=(1, 2)).sum()),
                    "overlay": overlay,
                }
                for a in annotations
            ]
        )
    )


def draw_overlay(model_uri: str, volume, annotations) -> str | None:
    """Write the prediction over its busiest slice as a PNG; None without Pillow."""
    if importlib.util.find_spec("PIL") is None:
        return None
    from datamint_core.io.writers import write_overlay_png

    name = model_uri.removeprefix("models:/").split("/")[0]
    return write_overlay_png(volume, annotations, f"{name}-overlay.png")


def predict_in_new_process(model_uri: str, volume_path: Path) -> dict | None:
    """Step 2 (and 4): load ``model_uri`` in a fresh process; return what it found."""
    completed = subprocess.run(
        [sys.executable, __file__, "--predict", model_uri, str(volume_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        print(completed.stderr, file=sys.stderr)
        return None
    (found,) = json.loads(completed.stdout.strip().splitlines()[-1])
    return found


def report(found: dict, truth: np.ndarray) -> None:
    print(
        f"  {found['identifier']}: {found['voxels']} voxels on {found['slices']} slices, "
        f"confidence {found['confidence']}, mask {found['shape']}, spacing {found['spacing']}"
    )
    print(f"  truth: {int(truth.sum())} voxels on {int(truth.any(axis=(1, 2)).sum())} slices")
    if found["overlay"]:
        print(f"  overlay picture: {found['overlay']}")
    else:
        print('  overlay picture skipped: Pillow is not installed (pip install "datamint[images]")')


def train_step(volume_path: Path, truth: np.ndarray) -> int:
    """Step 4: train, checkpoint and register the CNN, then predict with it by URI."""
    if importlib.util.find_spec("lightning") is None:
        print(
            'training step skipped: Lightning is not installed (pip install "datamint[lightning]")'
        )
        return 0
    from train_segmenter import train_and_register

    version = train_and_register(CNN_MODEL_NAME, mlflow.get_tracking_uri(), Path.cwd())
    model_uri = f"models:/{CNN_MODEL_NAME}/{version}"
    print(f"registered {model_uri} in {mlflow.get_tracking_uri()}")
    found = predict_in_new_process(model_uri, volume_path)
    if found is None:
        return 1
    print(f"loaded {model_uri} in a fresh process; volume mode found:")
    report(found, truth)
    return 0 if found["voxels"] > 0 else 1


def main() -> int:
    os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    # The model is saved from code, so loading it never unpickles anything.
    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    volume, truth = phantom()
    volume_path = Path("quickstart-phantom.npy").resolve()
    np.save(volume_path, volume)

    version = log_and_register()
    model_uri = f"models:/{MODEL_NAME}/{version}"
    print(f"registered {model_uri} in {mlflow.get_tracking_uri()}")

    found = predict_in_new_process(model_uri, volume_path)
    if found is None:
        return 1
    print(
        f"loaded {model_uri} in a fresh process; volume mode over {volume.shape[0]} slices found:"
    )
    report(found, truth)
    if found["voxels"] == 0:
        return 1
    return train_step(volume_path, truth)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--predict":
        predict_in_this_process(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
