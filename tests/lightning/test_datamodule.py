"""DatamintDataModule: seeded case splits, recorded and logged; slices and patches, lazily."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import mlflow
import pytest
import torch
from lightning.pytorch.loggers import MLFlowLogger

from datamint_core.training import ImageDataset
from datamint_lightning import DatamintDataModule
from tests.training_projects import write_msd_project


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_msd_project(tmp_path_factory.mktemp("projects") / "Liver", cases=10)


class CountingDataset(ImageDataset):
    """A real ImageDataset that counts the cases it reads."""

    reads: list[str]

    def load(self, case_id):
        self.reads.append(case_id)
        return super().load(case_id)


def counting(project: Path) -> CountingDataset:
    dataset = CountingDataset(project)
    dataset.reads = []
    return dataset


def test_the_split_is_by_case_seeded_reproducible_and_recorded(project):
    first = DatamintDataModule(ImageDataset(project), split={"train": 0.8, "val": 0.1, "test": 0.1})
    again = DatamintDataModule(ImageDataset(project), split={"train": 0.8, "val": 0.1, "test": 0.1})
    other = DatamintDataModule(ImageDataset(project), seed=7)

    assert first.splits == again.splits
    assert [len(first.splits[s]) for s in ("train", "val", "test")] == [8, 1, 1]
    every = [case for ids in first.splits.values() for case in ids]
    assert sorted(every) == sorted(ImageDataset(project).case_ids)  # each case once
    assert other.splits != first.splits


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ({"train": 0.5, "val": 0.2}, "sum to 0.7"),
        ({"train": 0.8, "holdout": 0.2}, r"unknown: \['holdout'\]"),
        ({"val": 0.5, "test": 0.5}, "'train' is needed"),
        ({"train": 1.2, "val": -0.2}, r"in \(0, 1\]"),
        ({"train": 0.02, "val": 0.49, "test": 0.49}, "too few to split"),
        ([0.8, 0.2], "give shares of the cases"),
    ],
)
def test_a_bad_split_is_refused_naming_what_is_accepted(project, split, message):
    with pytest.raises(ValueError, match=message):
        DatamintDataModule(ImageDataset(project), split=split)


def test_bad_sampling_arguments_are_refused(project):
    dataset = ImageDataset(project)
    with pytest.raises(ValueError, match="batch_size=0"):
        DatamintDataModule(dataset, batch_size=0)
    with pytest.raises(ValueError, match="image_size=100"):
        DatamintDataModule(dataset, image_size=100)
    with pytest.raises(ValueError, match="spatial_dims=4"):
        DatamintDataModule(dataset, spatial_dims=4)
    with pytest.raises(TypeError, match="takes an ImageDataset"):
        DatamintDataModule([1, 2, 3])


def test_training_slices_are_resized_and_each_case_is_read_once_an_epoch(project):
    dataset = counting(project)
    module = DatamintDataModule(dataset, batch_size=4, image_size=32, samples_per_case=3,
                                cache_cases=1)
    torch.manual_seed(0)
    batches = list(module.train_dataloader())
    assert sum(len(b["image"]) for b in batches) == 8 * 3
    batch = batches[0]
    assert batch["image"].shape == (4, 1, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (4, 1, 32, 32) and batch["label"].dtype == torch.int64
    assert set(batch["label"].unique().tolist()) <= {0, 1, 2}
    # One read per training case, though the cache holds one case: the sampler groups them.
    assert sorted(dataset.reads) == sorted(module.splits["train"])


def test_validation_samples_are_the_same_every_epoch(project):
    module = DatamintDataModule(ImageDataset(project), batch_size=4, image_size=32,
                                samples_per_case=4)
    first = [b["slice_index"].tolist() for b in module.val_dataloader()]
    second = [b["slice_index"].tolist() for b in module.val_dataloader()]
    assert first == second


def test_patches_are_three_dimensional_and_padded_when_the_volume_is_smaller(project):
    module = DatamintDataModule(ImageDataset(project), batch_size=2, spatial_dims=3,
                                patch_size=(12, 16, 16), samples_per_case=1,
                                foreground_fraction=1.0)
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (2, 1, 12, 16, 16)
    assert batch["label"].shape == (2, 1, 12, 16, 16)
    assert (batch["label"] > 0).any()
    assert (batch["image"][:, :, 8:] == 0).all()  # the volume has 8 slices: zero padding


def test_train_transforms_see_each_sample(project):
    seen = []

    def flip(sample):
        seen.append(sample["case_id"])
        return {**sample, "image": sample["image"].flip(-1), "label": sample["label"].flip(-1)}

    module = DatamintDataModule(ImageDataset(project), batch_size=8, image_size=32,
                                samples_per_case=1, train_transforms=flip)
    next(iter(module.train_dataloader()))
    assert len(seen) == 8 and set(seen) == set(module.splits["train"])


def test_test_batches_are_whole_cases_with_their_spacing(project):
    module = DatamintDataModule(ImageDataset(project))
    (batch,) = list(module.test_dataloader())
    assert batch["image"].shape == (1, 8, 32, 32, 1)
    assert batch["label"].shape == (1, 8, 32, 32)
    assert batch["spacing"][0].tolist() == pytest.approx([2.5, 0.8, 0.8])
    assert batch["case_id"] == list(module.splits["test"])


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Conv2d(1, 3, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch["image"]).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_each_split_is_logged_as_the_runs_dataset_input_without_being_asked(
    project, sqlite_tracking_uri, tmp_path
):
    module = DatamintDataModule(ImageDataset(project), batch_size=8, image_size=32,
                                samples_per_case=1)
    logger = MLFlowLogger(experiment_name="Liver", tracking_uri=sqlite_tracking_uri)
    trainer = pl.Trainer(max_epochs=1, logger=logger, accelerator="cpu", limit_val_batches=0,
                         enable_progress_bar=False, enable_checkpointing=False,
                         default_root_dir=tmp_path)
    trainer.fit(_Tiny(), datamodule=module)

    run = mlflow.get_run(logger.run_id)
    inputs = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset
        for i in run.inputs.dataset_inputs
    }
    assert set(inputs) == {"training", "validation", "test"}
    assert inputs["training"].name == "Liver Segmentation/train"
    import json

    source = json.loads(inputs["test"].source)
    assert source["resource_ids"] == sorted(module.splits["test"])
    assert source["extra_params"]["seed"] == 0
    assert source["extra_params"]["split"] == {"train": 0.8, "val": 0.1, "test": 0.1}
