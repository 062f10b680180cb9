"""The lightning extra: wall time of a training epoch with MLflowModelCheckpoint.

One epoch of a tiny segmentation CNN (200 steps on 32x32 synthetic slices, CPU) that saves
10 checkpoints (every 20 steps, top 3 by ``train_loss`` kept, plus ``last.ckpt``), with
Lightning's ``MLFlowLogger`` on the embedded SQLite store in both cases:

- ours:   ``MLflowModelCheckpoint`` (uploads and rotation deletes run in its background
          thread; the best model is logged when ``fit`` ends, after the timed epoch);
- anchor: Lightning's plain ``ModelCheckpoint``, same arguments.

The epoch is timed from ``on_train_epoch_start`` to ``on_train_epoch_end``; 7 runs each,
interleaved. The end of ``fit`` (draining the uploads, logging the model) is shown for
context. Target (issue #6): ours <= 1.05x the anchor.

Run: ``.venv/full/bin/python bench/lightning_epoch.py``
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from pathlib import Path

N_RUNS = 7
STEPS = 200
EVERY = 20


def main() -> None:
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    import lightning.pytorch as pl
    import torch
    from _common import Summary, print_header, print_ratio, print_table
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import MLFlowLogger
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from datamint_lightning import MLflowModelCheckpoint

    class TinySeg(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))

        def forward(self, images):
            return self.net(images)

        def training_step(self, batch, batch_idx):
            images, masks = batch
            loss = nn.functional.binary_cross_entropy_with_logits(self(images), masks)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    class EpochClock(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.seconds = time.perf_counter() - self.start

    print_header(
        f"lightning extra: one epoch ({STEPS} steps, {STEPS // EVERY} checkpoints) with "
        "MLflowModelCheckpoint vs ModelCheckpoint"
    )
    torch.manual_seed(0)
    images = torch.rand(STEPS * 8, 1, 32, 32)
    loader = DataLoader(TensorDataset(images, (images > 0.7).float()), batch_size=8)
    work = Path(tempfile.mkdtemp(prefix="datamint-bench-lightning-"))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    arguments = dict(monitor="train_loss", save_top_k=3, save_last=True, every_n_train_steps=EVERY)

    def one_epoch(kind: str, run: int) -> tuple[float, float]:
        checkpoint = (
            MLflowModelCheckpoint(**arguments) if kind == "ours" else ModelCheckpoint(**arguments)
        )
        clock = EpochClock()
        trainer = pl.Trainer(
            default_root_dir=work / f"{kind}-{run}",
            max_epochs=1,
            accelerator="cpu",
            devices=1,
            logger=MLFlowLogger(experiment_name=kind, tracking_uri=uri),
            callbacks=[checkpoint, clock],
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=50,
        )
        start = time.perf_counter()
        trainer.fit(TinySeg(), loader)
        total = time.perf_counter() - start
        return clock.seconds, total - clock.seconds

    one_epoch("ours", -1)  # warm-up: imports, the SQLite schema, first-call costs
    one_epoch("anchor", -1)
    epochs: dict[str, list[float]] = {"ours": [], "anchor": []}
    rest: dict[str, list[float]] = {"ours": [], "anchor": []}
    for run in range(N_RUNS):
        for kind in ("ours", "anchor") if run % 2 == 0 else ("anchor", "ours"):
            epoch, outside = one_epoch(kind, run)
            epochs[kind].append(epoch * 1000)
            rest[kind].append(outside * 1000)

    print_table(
        [
            ("epoch, MLflowModelCheckpoint", Summary.of(epochs["ours"])),
            ("epoch, ModelCheckpoint (anchor)", Summary.of(epochs["anchor"])),
            ("rest of fit, MLflowModelCheckpoint", Summary.of(rest["ours"])),
            ("rest of fit, ModelCheckpoint", Summary.of(rest["anchor"])),
        ],
        unit="ms",
        digits=1,
    )
    print()
    print_ratio("epoch wall time", epochs["ours"], epochs["anchor"], target=1.05)
    print_ratio("rest of fit (setup, drain, model logging)", rest["ours"], rest["anchor"], None)


if __name__ == "__main__":
    main()
