"""The README's main job, run as a user runs it: a script, a fresh SQLite store, two processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_registers_the_model_and_a_fresh_process_finds_the_phantom_lesion(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "quickstart.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    out = completed.stdout
    assert "registered models:/quickstart-segmenter/1 in sqlite:///mlflow.db" in out
    assert "lesion: 10493 voxels on 21 slices" in out
    assert "mask [48, 96, 96], spacing [2.5, 0.8, 0.8]" in out
    assert "truth: 10493 voxels on 21 slices" in out
    assert (tmp_path / "mlflow.db").is_file()
