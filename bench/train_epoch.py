"""UNetPPTrainer: wall time of a training epoch against a hand-written Lightning loop.

The same network (MONAI's ``BasicUNetPlusPlus``, 2-D, default widths), loss
(``DiceCELoss``), optimizer (AdamW), batch size and data: a generated Decathlon project of
10 cases of 16 x 32 x 32 voxels, 9 for training and 1 for validation.

- ours:   ``UNetPPTrainer.fit()``: cases read lazily from the NIfTI files, 8 slices drawn
          per case per epoch, normalised and resized to 32 x 32 as they are drawn; MLflow
          tracking and ``MLflowModelCheckpoint`` (uploads in its background thread);
- anchor: a LightningModule written by hand over the same slices, read once into memory
          beforehand (``TensorDataset``, shuffled), with Lightning's ``MLFlowLogger`` and its
          plain ``ModelCheckpoint`` on the same SQLite store.

The epoch is timed from ``on_train_epoch_start`` to ``on_train_epoch_end`` (the validation
pass included on both sides); the end of ``fit`` (logging the best model) is outside it.
7 runs each, interleaved, after one warm-up each; medians of the wall time, and of the
process's CPU time in the epoch (less moved by other load on a shared machine).
Target (issue #19): ours <= 1.05x.
Threads: one (``OMP_NUM_THREADS``, default 1 here), so runs do not fight a shared machine.

Run: ``.venv/full/bin/python bench/train_epoch.py``
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

N_RUNS = 7
CASES = 10
SHAPE = (16, 32, 32)
IMAGE_SIZE = 32
SAMPLES_PER_CASE = 8
BATCH_SIZE = 16
SPLIT = {"train": 0.9, "val": 0.1}

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    import lightning.pytorch as pl
    import numpy as np
    import torch
    from _common import Summary, print_header, print_ratio, print_table
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import MLFlowLogger
    from monai.losses import DiceCELoss
    from torch.utils.data import DataLoader, TensorDataset

    from datamint_core.training import ImageDataset
    from datamint_lightning import DatamintDataModule, UNetPPTrainer
    from datamint_torch.segmentation import build_unetpp, prepare_slices, resize_labels
    from tests.training_projects import write_msd_project

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    class EpochClock(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.start = time.perf_counter()
            self.start_cpu = time.process_time()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.seconds = time.perf_counter() - self.start
            self.cpu_seconds = time.process_time() - self.start_cpu

    class HandWritten(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = build_unetpp(1, 3)
            self.loss = DiceCELoss(to_onehot_y=True, softmax=True)

        def training_step(self, batch, batch_idx):
            loss = self.loss(self.net(batch[0]), batch[1])
            self.log("train_loss", loss, batch_size=len(batch[0]))
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self.loss(self.net(batch[0]), batch[1]),
                     batch_size=len(batch[0]))

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    work = Path(tempfile.mkdtemp(prefix="datamint-bench-train-"))
    root = write_msd_project(work / "projects" / "Liver", cases=CASES, shape=SHAPE,
                             name="Bench Liver", test_cases=0)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    print_header(
        f"UNetPPTrainer epoch ({CASES - 1} training cases x {SAMPLES_PER_CASE} slices, "
        f"{IMAGE_SIZE}px, batch {BATCH_SIZE}) vs a hand-written Lightning loop"
    )

    # The anchor's data: the same number of slices from the same cases, read once, prepared.
    dataset = ImageDataset(root)
    splits = DatamintDataModule(dataset, split=SPLIT).splits

    def slices(case_ids: tuple[str, ...]) -> TensorDataset:
        rng = np.random.default_rng(0)
        images, labels = [], []
        for case_id in case_ids:
            case = dataset.load(case_id)
            for index in rng.integers(0, SHAPE[0], SAMPLES_PER_CASE):
                images.append(torch.as_tensor(case.image[index], dtype=torch.float32)[None])
                labels.append(torch.as_tensor(case.label[index].astype(np.int64)))
        return TensorDataset(prepare_slices(torch.stack(images), IMAGE_SIZE),
                             resize_labels(torch.stack(labels), IMAGE_SIZE))

    train_data, val_data = slices(splits["train"]), slices(splits["val"])

    def ours(run: int) -> EpochClock:
        clock = EpochClock()
        UNetPPTrainer(
            project=root, image_size=IMAGE_SIZE, batch_size=BATCH_SIZE, max_epochs=1,
            accelerator="cpu", register_model=False, split=SPLIT,
            samples_per_case=SAMPLES_PER_CASE, work_dir=work / f"ours-{run}",
            trainer_kwargs={"callbacks": [clock]},
        ).fit()
        return clock

    def anchor(run: int) -> EpochClock:
        clock = EpochClock()
        pl.seed_everything(0, verbose=False)
        trainer = pl.Trainer(
            max_epochs=1, accelerator="cpu", devices=1, default_root_dir=work / f"anchor-{run}",
            logger=MLFlowLogger(experiment_name="Bench Liver", tracking_uri=uri),
            callbacks=[ModelCheckpoint(dirpath=work / f"anchor-{run}" / "checkpoints",
                                       monitor="val_loss", save_top_k=1), clock],
            log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(HandWritten(),
                    DataLoader(train_data, batch_size=BATCH_SIZE, shuffle=True),
                    DataLoader(val_data, batch_size=BATCH_SIZE))
        return clock

    ours(-1)  # warm-up: imports, the SQLite schema, first-call costs
    anchor(-1)
    epochs: dict[str, list[float]] = {"ours": [], "anchor": []}
    cpu: dict[str, list[float]] = {"ours": [], "anchor": []}
    for run in range(N_RUNS):
        for kind in ("ours", "anchor") if run % 2 == 0 else ("anchor", "ours"):
            clock = (ours if kind == "ours" else anchor)(run)
            epochs[kind].append(clock.seconds * 1000)
            cpu[kind].append(clock.cpu_seconds * 1000)

    print_table(
        [
            ("epoch, UNetPPTrainer", Summary.of(epochs["ours"])),
            ("epoch, hand-written Lightning loop (anchor)", Summary.of(epochs["anchor"])),
            ("epoch CPU time, UNetPPTrainer", Summary.of(cpu["ours"])),
            ("epoch CPU time, hand-written loop", Summary.of(cpu["anchor"])),
        ],
        unit="ms",
        digits=0,
    )
    print()
    print_ratio("epoch wall time", epochs["ours"], epochs["anchor"], target=1.05)
    print_ratio("epoch CPU time (this process)", cpu["ours"], cpu["anchor"], None)

if __name__ == "__main__":
    main()
