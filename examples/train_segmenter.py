"""Train the tiny CNN on synthetic phantom slices; checkpoint and register it through MLflow.

Lightning trains for a few steps; ``MLflowModelCheckpoint`` logs every kept checkpoint to
the run, logs the best one as a ``datamint`` model (from ``cnn_model.py``, with the trained
weights) and registers it; ``MLflowDatasetLineage`` records the train/val/test splits as
the run's inputs.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import MLFlowLogger
from torch.utils.data import DataLoader, TensorDataset

from datamint_core import ImageResource
from datamint_lightning import DatamintMLflowDataset, MLflowDatasetLineage, MLflowModelCheckpoint

HERE = Path(__file__).resolve().parent


def phantom_slices(count: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Noisy slices, each with a bright disc 'lesion' (like the quickstart phantom's)."""
    rng = np.random.default_rng(seed)
    y, x = np.ogrid[:size, :size]
    images, masks = [], []
    for _ in range(count):
        cy, cx = rng.integers(8, size - 8, 2)
        radius = rng.integers(3, 7)
        mask = (y - cy) ** 2 + (x - cx) ** 2 <= radius**2
        images.append(rng.normal(0.2, 0.05, (size, size)) + 0.6 * mask)
        masks.append(mask)
    return np.stack(images).astype(np.float32), np.stack(masks).astype(np.float32)


def split(name: str, count: int, seed: int) -> tuple[DataLoader, DatamintMLflowDataset]:
    images, masks = phantom_slices(count, seed)
    loader = DataLoader(
        TensorDataset(torch.from_numpy(images)[:, None], torch.from_numpy(masks)[:, None]),
        batch_size=8,
        shuffle=name == "train",
    )
    resources = [
        ImageResource(image, id=f"phantom-{name}-{i}", modality="CT")
        for i, image in enumerate(images)
    ]
    return loader, DatamintMLflowDataset("demo", "synthetic phantoms", name, resources)


def train_and_register(model_name: str, tracking_uri: str, workdir: Path) -> int:
    """Train, checkpoint, register; return the registered version."""
    from cnn_segmenter import LitSegmenter

    pl.seed_everything(0, verbose=False)
    (train, train_data), (val, val_data), (test, test_data) = (
        split("train", 64, 1),
        split("val", 16, 2),
        split("test", 16, 3),
    )
    logger = MLFlowLogger(experiment_name="datamint-quickstart", tracking_uri=tracking_uri)
    # One directory per run, named by its MLflow run id: a rerun keeps and lists only its own
    # checkpoints, never the ones an earlier run left on disk.
    checkpoint_dir = workdir / "checkpoints" / logger.run_id
    checkpoint = MLflowModelCheckpoint(
        dirpath=checkpoint_dir,
        monitor="val_loss",
        save_top_k=2,
        save_last=True,
        filename="{epoch:02d}-{val_loss:.2f}",
        model_name=model_name,
        model_code=HERE / "cnn_model.py",
    )
    trainer = pl.Trainer(
        max_epochs=6,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[checkpoint, MLflowDatasetLineage(train_data, val_data, test_data)],
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=4,
    )
    module = LitSegmenter()
    trainer.fit(module, train, val)
    trainer.test(module, test, ckpt_path="best", verbose=False)
    if checkpoint.registered_model_version is None:
        raise RuntimeError("training finished but the model was not registered; see the warnings")
    kept = sorted(p.name for p in checkpoint_dir.glob("*.ckpt"))
    print(
        f"trained {trainer.global_step} steps; checkpoints kept and logged in "
        f"{checkpoint_dir.relative_to(workdir)}: {', '.join(kept)}"
    )
    print(
        f"best: {Path(checkpoint.best_model_path).name} (test_loss "
        f"{trainer.callback_metrics['test_loss'].item():.3f})"
    )
    return checkpoint.registered_model_version
