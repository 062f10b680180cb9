"""``DatamintDataModule``: a project's cases, split and sampled for Lightning.

The split is by case (never by slice, so no case feeds two splits), seeded, and recorded:
``datamodule.splits`` holds each split's case ids, and each split is logged as an input of
the training run (a :class:`~datamint_lightning.DatamintMLflowDataset` with contexts
training / validation / test) as soon as the Trainer sets the data module up with an
``MLFlowLogger``.

What each loader gives::

    train  random samples, ``samples_per_case`` per case an epoch: 2-D slices resized to
           ``image_size`` (``spatial_dims=2``) or 3-D patches of ``patch_size``
           (``spatial_dims=3``), a share of them centred on labelled voxels
           (``foreground_fraction``); then ``train_transforms``
           {"image": (C, S, S) float32, "label": (1, S, S) int64, "case_id", "slice_index"}
    val    the same sampling, with a fixed seed, so every epoch is scored on the same samples
    test   whole cases, one a batch: {"image": (1, D, H, W, C), "label": (1, D, H, W),
           "spacing": (1, 3), "case_id": [id]}

Memory stays bounded: cases are read when first sampled, the samples of one case are drawn
together (the sampler orders an epoch case by case, in a random case order), and at most
``cache_cases`` read cases are held per loader process.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, Sampler
from typing_extensions import override

from datamint_core.dataset import DatamintMLflowDataset
from datamint_core.training import ImageDataset, TrainingCase
from datamint_torch.segmentation import normalize, prepare_slices, resize_labels

#: The splits a data module knows, in order.
SPLITS = ("train", "val", "test")
DEFAULT_SPLIT: Mapping[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
_SPLIT_TOLERANCE = 1e-6


class DatamintDataModule(pl.LightningDataModule):
    """A LightningDataModule over an :class:`~datamint_core.training.ImageDataset`.

    Example::

        dataset = ImageDataset(project="Liver Segmentation")
        datamodule = DatamintDataModule(dataset, batch_size=16,
                                        split={"train": 0.8, "val": 0.1, "test": 0.1})
        datamodule.splits["test"]          # the test cases' ids

    Args:
        dataset: the project's cases.
        batch_size: samples per training and validation batch.
        split: the share of cases per split (``train``, ``val``, ``test``; they sum to 1).
            Every split with a share gets at least one case.
        seed: seeds the split and the validation samples.
        spatial_dims: ``2`` (slices) or ``3`` (patches).
        image_size: the side slices are resized to (``spatial_dims=2``).
        patch_size: ``(D, H, W)`` of the patches (``spatial_dims=3``); smaller volumes are
            padded.
        samples_per_case: slices or patches drawn from each case per epoch.
        foreground_fraction: the share of samples centred on a labelled voxel.
        train_transforms: a callable applied to each training sample dict (tensors,
            channels first: MONAI's dictionary transforms fit).
        num_workers: DataLoader worker processes.
        cache_cases: read cases each loader process keeps.

    Raises:
        ValueError: a bad split (unknown name, shares not summing to 1, too few cases for
            the splits asked), or a bad sampling argument; the message repeats it.
        TypeError: ``dataset`` is not an ``ImageDataset``.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int = 16,
        split: Mapping[str, float] | None = None,
        *,
        seed: int = 0,
        spatial_dims: int = 2,
        image_size: int = 256,
        patch_size: Sequence[int] = (16, 96, 96),
        samples_per_case: int = 16,
        foreground_fraction: float = 0.5,
        train_transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        num_workers: int = 0,
        cache_cases: int = 2,
    ) -> None:
        super().__init__()
        if not isinstance(dataset, ImageDataset):
            raise TypeError(
                f"DatamintDataModule takes an ImageDataset, got {type(dataset).__name__}; make "
                "one with datamint_core.training.ImageDataset(project=...)."
            )
        _positive("batch_size", batch_size)
        _positive("samples_per_case", samples_per_case)
        _positive("cache_cases", cache_cases)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims={spatial_dims!r} is not accepted; give 2 (slices) or 3 "
                             "(patches).")
        if spatial_dims == 2:
            from datamint_torch.segmentation import check_image_size

            check_image_size(image_size)
        if len(patch_size) != 3 or not all(isinstance(p, int) and p > 0 for p in patch_size):
            raise ValueError(f"patch_size={tuple(patch_size)!r} is not accepted; give three "
                             "positive integers (D, H, W).")
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction={foreground_fraction!r} is not in [0, 1].")
        if train_transforms is not None and not callable(train_transforms):
            raise TypeError(f"train_transforms={train_transforms!r} is not callable.")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers={num_workers!r} is not accepted; give 0 or more.")
        self.dataset = dataset
        self.batch_size = batch_size
        self.split_fractions = check_split(split if split is not None else DEFAULT_SPLIT)
        self.seed = seed
        self.spatial_dims = spatial_dims
        self.image_size = image_size
        self.patch_size = tuple(patch_size)
        self.samples_per_case = samples_per_case
        self.foreground_fraction = foreground_fraction
        self.train_transforms = train_transforms
        self.num_workers = num_workers
        self.cache_cases = cache_cases
        #: The case ids of each split (seeded, reproducible): ``{"train": (...), ...}``.
        self.splits: dict[str, tuple[str, ...]] = split_cases(
            dataset.case_ids, self.split_fractions, seed
        )
        self._logged_runs: set[str] = set()

    # -- lineage ------------------------------------------------------------------------------

    def mlflow_datasets(self) -> dict[str, DatamintMLflowDataset]:
        """Each split as an MLflow dataset (the case ids, and how they were sampled)."""
        sampling = {
            "seed": self.seed, "split": dict(self.split_fractions),
            "spatial_dims": self.spatial_dims, "samples_per_case": self.samples_per_case,
            "source": self.dataset.source, "labels": list(self.dataset.label_names),
            "channels": list(self.dataset.channel_names),
        }
        if self.spatial_dims == 2:
            sampling["image_size"] = self.image_size
        else:
            sampling["patch_size"] = list(self.patch_size)
        return {
            name: DatamintMLflowDataset(self.dataset.project_id, self.dataset.project_name, name,
                                        list(case_ids), extra_params=sampling)
            for name, case_ids in self.splits.items()
            if case_ids
        }

    def _log_splits(self) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is None or not trainer.is_global_zero:
            return
        logger = next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)
        if logger is None:
            return
        from datamint_lightning.lineage import log_dataset_splits

        try:
            run_id = logger.run_id
            if run_id is None or run_id in self._logged_runs:
                return
            log_dataset_splits(logger, **self.mlflow_datasets())
            self._logged_runs.add(run_id)
        except Exception as error:
            rank_zero_warn(f"DatamintDataModule could not log the dataset splits to MLflow: "
                           f"{type(error).__name__}: {error}")

    # -- Lightning ----------------------------------------------------------------------------

    @override
    def setup(self, stage: str) -> None:
        self._log_splits()

    @override
    def train_dataloader(self) -> DataLoader:
        samples = self._samples(self.splits["train"], fixed_seed=None)
        return DataLoader(
            samples, batch_size=self.batch_size, num_workers=self.num_workers,
            sampler=CaseGroupedSampler(len(self.splits["train"]), self.samples_per_case),
            persistent_workers=self.num_workers > 0,
        )

    @override
    def val_dataloader(self) -> DataLoader:
        samples = self._samples(self.splits.get("val", ()), fixed_seed=self.seed)
        return DataLoader(samples, batch_size=self.batch_size, num_workers=self.num_workers,
                          shuffle=False)

    @override
    def test_dataloader(self) -> DataLoader:
        return DataLoader(WholeCases(self.dataset, self.splits.get("test", ())), batch_size=1,
                          num_workers=self.num_workers, shuffle=False)

    def _samples(self, case_ids: Sequence[str], fixed_seed: int | None) -> Dataset:
        kind = SliceSamples if self.spatial_dims == 2 else PatchSamples
        return kind(
            self.dataset, case_ids, samples_per_case=self.samples_per_case,
            foreground_fraction=self.foreground_fraction,
            transform=self.train_transforms if fixed_seed is None else None,
            fixed_seed=fixed_seed, cache_cases=self.cache_cases,
            size=self.image_size if self.spatial_dims == 2 else self.patch_size,
        )

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"splits": {k: list(v) for k, v in self.splits.items()}, "seed": self.seed}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = {k: tuple(v) for k, v in (state_dict.get("splits") or {}).items()}
        if saved and saved != self.splits:
            rank_zero_warn("The checkpoint was trained on another split of the cases; resuming "
                           "with the checkpoint's split.")
            self.splits = saved


def check_split(split: Mapping[str, float]) -> dict[str, float]:
    """The split's shares, checked: known names, each in (0, 1], summing to 1.

    Raises:
        ValueError: naming what is wrong and what is accepted.
    """
    if not isinstance(split, Mapping) or not split:
        raise ValueError(f"split={split!r} is not accepted; give shares of the cases such as "
                         f"{dict(DEFAULT_SPLIT)}.")
    unknown = sorted(set(split) - set(SPLITS))
    if unknown or "train" not in split:
        raise ValueError(f"split={dict(split)!r}: the splits are {SPLITS} and 'train' is needed; "
                         f"unknown: {unknown}.")
    bad = {k: v for k, v in split.items() if isinstance(v, bool) or not isinstance(v, (int, float))
           or not 0 < v <= 1}
    if bad:
        raise ValueError(
            f"split={dict(split)!r}: each share must be a number in (0, 1]; got {bad}."
        )
    total = sum(split.values())
    if abs(total - 1.0) > _SPLIT_TOLERANCE:
        raise ValueError(f"split={dict(split)!r}: the shares sum to {total:g}; they must sum to 1.")
    return {name: float(split[name]) for name in SPLITS if name in split}


def split_cases(case_ids: Sequence[str], fractions: Mapping[str, float],
                seed: int) -> dict[str, tuple[str, ...]]:
    """Shuffle the (sorted) case ids with ``seed`` and cut them by ``fractions``.

    Every split but ``train`` gets ``round(share x cases)`` cases, at least one; ``train``
    the rest. The same ids, fractions and seed always give the same split.

    Raises:
        ValueError: fewer cases than splits that need one.
    """
    ordered = sorted(case_ids)
    random.Random(seed).shuffle(ordered)
    others = [name for name in fractions if name != "train"]
    counts = {name: max(1, round(fractions[name] * len(ordered))) for name in others}
    if sum(counts.values()) >= len(ordered):
        raise ValueError(
            f"The project has {len(ordered)} case(s): too few to split into "
            f"{['train', *others]} with at least one case each; add cases or drop a split "
            "(for example split={'train': 0.8, 'val': 0.2})."
        )
    splits: dict[str, tuple[str, ...]] = {}
    start = 0
    for name in others:
        splits[name] = tuple(ordered[start:start + counts[name]])
        start += counts[name]
    splits = {"train": tuple(ordered[start:]), **splits}
    return {name: splits[name] for name in SPLITS if name in splits}


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is not accepted; give a positive integer.")


class CaseGroupedSampler(Sampler[int]):
    """An epoch's sample indices, case by case: cases in a random order, then each case's
    samples in a random order; one case is read once an epoch however small the cache."""

    def __init__(self, num_cases: int, samples_per_case: int) -> None:
        self.num_cases = num_cases
        self.samples_per_case = samples_per_case

    def __len__(self) -> int:
        return self.num_cases * self.samples_per_case

    def __iter__(self) -> Iterator[int]:
        for case in torch.randperm(self.num_cases).tolist():
            for sample in torch.randperm(self.samples_per_case).tolist():
                yield case * self.samples_per_case + sample


class _CaseSamples(Dataset):
    """Samples drawn from cases read on demand (a small cache of the last cases read)."""

    def __init__(self, dataset: ImageDataset, case_ids: Sequence[str], *, samples_per_case: int,
                 foreground_fraction: float, transform: Callable[..., Any] | None,
                 fixed_seed: int | None, cache_cases: int, size: Any) -> None:
        self.dataset = dataset
        self.case_ids = tuple(case_ids)
        self.samples_per_case = samples_per_case
        self.foreground_fraction = foreground_fraction
        self.transform = transform
        self.fixed_seed = fixed_seed
        self.size = size
        self._cache: collections.OrderedDict[str, TrainingCase] = collections.OrderedDict()
        self._cache_cases = cache_cases

    def __len__(self) -> int:
        return len(self.case_ids) * self.samples_per_case

    def case(self, case_id: str) -> TrainingCase:
        if case_id in self._cache:
            self._cache.move_to_end(case_id)
            return self._cache[case_id]
        case = self.dataset.load(case_id)
        if case.label is None:
            raise ValueError(f"Case {case_id!r} has no label map; training samples need one.")
        self._cache[case_id] = case
        while len(self._cache) > self._cache_cases:
            self._cache.popitem(last=False)
        return case

    def _rng(self, index: int) -> np.random.Generator:
        if self.fixed_seed is not None:
            return np.random.default_rng([self.fixed_seed, index])
        # The torch generator, which Lightning's seed_everything (and the worker seeding) set.
        return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))

    def _centre(self, case: TrainingCase, rng: np.random.Generator) -> tuple[int, int, int]:
        """A voxel to sample around: a labelled one (``foreground_fraction``) or any."""
        label = case.label
        assert label is not None
        if rng.random() < self.foreground_fraction:
            slices = np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))
            if slices.size:
                d = int(rng.choice(slices))
                rows, columns = np.nonzero(label[d])
                pick = int(rng.integers(rows.size))
                return d, int(rows[pick]), int(columns[pick])
        return tuple(int(rng.integers(n)) for n in label.shape)  # type: ignore[return-value]

    def __getitem__(self, index: int) -> dict[str, Any]:
        case = self.case(self.case_ids[index // self.samples_per_case])
        sample = self._sample(case, self._centre(case, self._rng(index)))
        return self.transform(sample) if self.transform is not None else sample

    def _sample(self, case: TrainingCase, centre: tuple[int, int, int]) -> dict[str, Any]:
        raise NotImplementedError


def _channels_last(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 4 else image[..., None]


class SliceSamples(_CaseSamples):
    """Axial slices, resized to ``size`` x ``size``."""

    def _sample(self, case: TrainingCase, centre: tuple[int, int, int]) -> dict[str, Any]:
        slice_index = centre[0]
        pixels = _channels_last(case.image)[slice_index]
        image = torch.as_tensor(np.ascontiguousarray(pixels), dtype=torch.float32)
        image = prepare_slices(image.permute(2, 0, 1)[None], self.size)[0]
        label = torch.as_tensor(case.label[slice_index].astype(np.int64))  # type: ignore[index]
        return {"image": image, "label": resize_labels(label[None], self.size)[0],
                "case_id": case.case_id, "slice_index": slice_index}


class PatchSamples(_CaseSamples):
    """3-D patches of ``size`` = ``(D, H, W)`` around the centre, normalised, zero-padded
    where the volume is smaller."""

    def _sample(self, case: TrainingCase, centre: tuple[int, int, int]) -> dict[str, Any]:
        image = _channels_last(case.image)
        label = case.label
        assert label is not None
        starts = [min(max(c - s // 2, 0), max(n - s, 0))
                  for c, s, n in zip(centre, self.size, label.shape, strict=True)]
        window = tuple(slice(a, a + s) for a, s in zip(starts, self.size, strict=True))
        cropped = torch.as_tensor(np.ascontiguousarray(image[window]), dtype=torch.float32)
        # Normalised over the voxels the volume has; the padding is the mean (zero).
        cropped = normalize(cropped.permute(3, 0, 1, 2)[None])[0]
        inside = (slice(None), *(slice(0, n) for n in cropped.shape[1:]))
        patch = torch.zeros((image.shape[-1], *self.size), dtype=torch.float32)
        patch[inside] = cropped
        patch_label = torch.zeros((1, *self.size), dtype=torch.int64)
        patch_label[inside] = torch.as_tensor(label[window].astype(np.int64))
        return {"image": patch, "label": patch_label, "case_id": case.case_id,
                "slice_index": starts[0]}


class WholeCases(Dataset):
    """Whole cases, one an item, channels last; read when asked for, never kept."""

    def __init__(self, dataset: ImageDataset, case_ids: Sequence[str]) -> None:
        self.dataset = dataset
        self.case_ids = tuple(case_ids)

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case = self.dataset.load(self.case_ids[index])
        if case.label is None:
            raise ValueError(f"Case {case.case_id!r} has no label map; the test split needs one.")
        return {
            "image": torch.as_tensor(np.ascontiguousarray(_channels_last(case.image)),
                                     dtype=torch.float32),
            "label": torch.as_tensor(case.label.astype(np.int64)),
            "spacing": torch.tensor(case.spacing, dtype=torch.float64),
            "case_id": case.case_id,
        }

