"""The README's main job, run as a user runs it: a script, a fresh SQLite store, new processes.

It runs in both environments: the core one (no torch) runs the threshold model and skips
the training step, saying how to enable it; the full one also trains, checkpoints and
registers the CNN through Lightning.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Its outcome depends on what the environment holds (torch, Lightning, the full mlflow).
pytestmark = pytest.mark.both_envs

REPO_ROOT = Path(__file__).resolve().parents[2]
HAS_LIGHTNING = importlib.util.find_spec("lightning") is not None


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Run examples/quickstart.py once in a fresh directory; return (stdout, directory)."""
    workdir = tmp_path_factory.mktemp("quickstart")
    return run_quickstart(workdir), workdir


def run_quickstart(workdir: Path) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "quickstart.py")],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_quickstart_registers_the_model_and_a_fresh_process_finds_the_phantom_lesion(quickstart):
    out, workdir = quickstart
    assert "registered models:/quickstart-segmenter/1 in sqlite:///mlflow.db" in out
    assert "lesion: 10493 voxels on 21 slices" in out
    assert "mask [48, 96, 96], spacing [2.5, 0.8, 0.8]" in out
    assert "truth: 10493 voxels on 21 slices" in out
    assert (workdir / "mlflow.db").is_file()


def test_quickstart_ends_by_drawing_its_prediction_over_the_busiest_slice(quickstart):
    pytest.importorskip("PIL", reason="the overlay picture needs the [images] extra")
    out, workdir = quickstart
    assert "overlay picture: quickstart-segmenter-overlay.png" in out
    from PIL import Image

    from datamint_core.io.writers import PALETTE

    picture = Image.open(workdir / "quickstart-segmenter-overlay.png").convert("RGB")
    assert picture.width >= 384 and picture.height > picture.width  # the legend is below
    outline = (np.asarray(picture) == PALETTE[0]).all(axis=2)
    assert outline.sum() > 200  # the lesion's outline, in its label's colour


@pytest.mark.skipif(HAS_LIGHTNING, reason="Lightning is installed here: the step runs")
def test_without_lightning_the_training_step_is_skipped_with_the_install_command(quickstart):
    out, _ = quickstart
    assert (
        'training step skipped: Lightning is not installed (pip install "datamint[lightning]")'
        in out
    )


def test_quickstart_trains_checkpoints_and_registers_a_cnn_that_finds_the_lesion(quickstart):
    pytest.importorskip("lightning", reason="the training step needs the [lightning] extra")
    out, workdir = quickstart
    (run_dir,) = (workdir / "checkpoints").iterdir()  # one directory per training run
    kept = sorted(p.name for p in run_dir.glob("*.ckpt"))
    assert len(kept) == 3 and "last.ckpt" in kept
    assert f"checkpoints kept and logged in checkpoints/{run_dir.name}: {', '.join(kept)}" in out
    assert "registered models:/quickstart-cnn/1 in sqlite:///mlflow.db" in out
    after = out.split("loaded models:/quickstart-cnn/1 in a fresh process; volume mode found:")[1]
    voxels, slices = map(int, re.search(r"lesion: (\d+) voxels on (\d+) slices", after).groups())
    assert 0.8 * 10493 <= voxels <= 1.2 * 10493 and 15 <= slices <= 25
    assert "mask [48, 96, 96], spacing [2.5, 0.8, 0.8]" in after


def test_a_second_run_lists_only_its_own_checkpoints_and_gitignore_covers_all_it_writes(
    quickstart,
):
    """What ``scripts/demo`` run twice in a checkout leaves: the checkout's ``.gitignore``
    ignores every file, and the second run's listing holds none of the first's."""
    _, workdir = quickstart
    first_runs = set((workdir / "checkpoints").iterdir()) if HAS_LIGHTNING else set()
    second_out = run_quickstart(workdir)

    assert "registered models:/quickstart-segmenter/2 in sqlite:///mlflow.db" in second_out
    if HAS_LIGHTNING:
        (second_run,) = set((workdir / "checkpoints").iterdir()) - first_runs
        kept = sorted(p.name for p in second_run.glob("*.ckpt"))
        listed = re.search(r"checkpoints kept and logged in (\S+): (.*)", second_out).groups()
        assert listed == (f"checkpoints/{second_run.name}", ", ".join(kept))
        assert len(kept) == 3
        assert "registered models:/quickstart-cnn/2 in sqlite:///mlflow.db" in second_out
    shutil.copy(REPO_ROOT / ".gitignore", workdir / ".gitignore")
    subprocess.run(["git", "init", "-q"], cwd=workdir, check=True)
    subprocess.run(["git", "add", ".gitignore"], cwd=workdir, check=True)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                            cwd=workdir, capture_output=True, text=True, check=True).stdout
    assert status.splitlines() == ["A  .gitignore"]
