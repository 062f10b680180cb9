"""A tiny segmentation network, its Lightning module and synthetic phantom data."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from datamint_core import (
    AnnotationSpec,
    AnnotationType,
    ImageResource,
    SegmentationAnnotation,
    TaskType,
)
from datamint_lightning import DatamintMLflowDataset
from datamint_torch import DatamintModel, as_tensor

SIZE = 16


class TinySegNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


class PhantomSegmenter(DatamintModel):
    task_type = TaskType.IMAGE_SEGMENTATION
    annotation_specs = [AnnotationSpec("lesion", AnnotationType.SEGMENTATION)]

    def predict_image(self, model_input, **kwargs):
        net = self.get_pytorch_model()
        batch = torch.stack(
            [as_tensor(r, self.inference_device, torch.float32) for r in model_input]
        )[:, None]
        masks = (net(batch)[:, 0] > 0).cpu().numpy()
        return [[SegmentationAnnotation("lesion", mask)] for mask in masks]


class LitSegmenter(pl.LightningModule):
    """Trains ``net``; ``datamint_model`` wraps the same network for MLflow."""

    def __init__(
        self, wrap_datamint: bool = True, lr: float = 0.05, val_offset: float = 0.0
    ) -> None:
        super().__init__()
        self.net = TinySegNet()
        self.lr = lr
        self.val_offset = val_offset
        if wrap_datamint:
            self.datamint_model = PhantomSegmenter(torch_model=self.net)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def _loss(self, batch) -> torch.Tensor:
        images, masks = batch
        return nn.functional.binary_cross_entropy_with_logits(self(images), masks)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch) + self.val_offset)

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self._loss(batch))

    def predict_step(self, batch, batch_idx):
        return self(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class BrokenForward(LitSegmenter):
    """Trains through ``net`` but its own forward fails, as on the signature batch."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raise ValueError("this forward expects a dict of tensors")

    def _loss(self, batch) -> torch.Tensor:
        images, masks = batch
        return nn.functional.binary_cross_entropy_with_logits(self.net(images), masks)


def phantoms(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images with one bright disc each; returns (images, masks), float32."""
    rng = np.random.default_rng(seed)
    y, x = np.ogrid[:SIZE, :SIZE]
    images, masks = [], []
    for _ in range(count):
        cy, cx, r = rng.integers(4, SIZE - 4), rng.integers(4, SIZE - 4), rng.integers(2, 4)
        mask = ((y - cy) ** 2 + (x - cx) ** 2 <= r * r).astype(np.float32)
        images.append(rng.normal(0.2, 0.05, (SIZE, SIZE)).astype(np.float32) + 0.6 * mask)
        masks.append(mask)
    return np.stack(images), np.stack(masks)


class PhantomData:
    """Train/val/test splits: loaders and the matching Datamint datasets."""

    def __init__(self, train: int = 16, val: int = 8, test: int = 8, batch_size: int = 4) -> None:
        self.batch_size = batch_size
        self.arrays = {
            "train": phantoms(train, seed=1),
            "val": phantoms(val, seed=2),
            "test": phantoms(test, seed=3),
        }

    def loader(self, split: str) -> DataLoader:
        images, masks = (torch.from_numpy(a)[:, None] for a in self.arrays[split])
        return DataLoader(
            TensorDataset(images, masks), batch_size=self.batch_size, shuffle=split == "train"
        )

    def resources(self, split: str) -> list[ImageResource]:
        images, _ = self.arrays[split]
        return [
            ImageResource(image, id=f"{split}-{i}", modality="CT") for i, image in enumerate(images)
        ]

    def dataset(self, split: str) -> DatamintMLflowDataset:
        return DatamintMLflowDataset("proj-1", "phantoms", split, self.resources(split))
