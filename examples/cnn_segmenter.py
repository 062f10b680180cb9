"""A tiny CNN lesion segmenter: the network, its Datamint model and its Lightning module.

``cnn_model.py`` builds the Datamint model from this file, so a registered version loads
from code (no pickle); ``train_segmenter.py`` trains it.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn

from datamint_core import AnnotationSpec, AnnotationType, SegmentationAnnotation, TaskType
from datamint_torch import DatamintModel, as_tensor


class TinySegNet(nn.Module):
    """Two convolutions: one logit per pixel."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 1)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


class CnnSegmenter(DatamintModel):
    """Segments lesions slice by slice; ``volume`` mode is bridged through ``image``."""

    task_type = TaskType.VOLUME_SEGMENTATION
    annotation_specs = [
        AnnotationSpec("lesion", AnnotationType.SEGMENTATION, description="learned lesion mask")
    ]

    def predict_image(self, model_input, **kwargs):
        net = self.get_pytorch_model()
        batch = torch.stack(
            [as_tensor(r, self.inference_device, torch.float32) for r in model_input]
        )[:, None]
        probabilities = net(batch)[:, 0].sigmoid()
        results = []
        for probability in probabilities:
            mask = (probability > 0.5).cpu().numpy()
            confidence = float(probability[probability > 0.5].mean()) if mask.any() else None
            results.append([SegmentationAnnotation("lesion", mask, confidence=confidence)])
        return results


class LitSegmenter(pl.LightningModule):
    """Trains ``net``; ``segmenter`` wraps the same network for MLflow."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.net = TinySegNet()
        self.segmenter = CnnSegmenter(torch_model=self.net)
        self.lr = lr
        self.register_buffer("lesion_weight", torch.tensor(3.0), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def _loss(self, batch) -> torch.Tensor:
        images, masks = batch
        # Lesions are a few percent of the pixels: weigh them up, or "all background" wins.
        return nn.functional.binary_cross_entropy_with_logits(
            self(images), masks, pos_weight=self.lesion_weight
        )

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch))

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)
