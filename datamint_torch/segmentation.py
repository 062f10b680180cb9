"""A 2-D UNet++ segmenter (MONAI's ``BasicUNetPlusPlus``) as a Datamint model.

Training (``datamint_lightning.UNetPPTrainer``) and prediction share one preparation of the
slices, :func:`prepare_slices`, so what the model is scored on in the test step is what it
serves: each slice is normalised per channel (zero mean, unit variance over the slice),
resized to ``image_size`` x ``image_size`` (bilinear), run through the network, and its
logits resized back to the slice's own size before the labels are taken (argmax). A slice
mask therefore lies on its source slice, and ``volume`` mode (served through ``slice``,
then ``image``) gives a ``(D, H, W)`` mask with the volume's spacing and affine.

MONAI is imported when a network is built; without it the error names
``pip install "datamint[train]"``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from datamint_core import AnnotationSpec, AnnotationType, SegmentationAnnotation, TaskType
from datamint_core._extras import require
from datamint_torch.model import DatamintModel

#: MONAI's default UNet++ widths (five encoder levels, then the decoder's last).
DEFAULT_FEATURES = (32, 32, 64, 128, 256, 32)
#: The network halves the image four times: a side must be a multiple of this.
SIZE_MULTIPLE = 16
#: Slices per forward pass when a volume is segmented.
SLICES_PER_PASS = 16


def build_unetpp(in_channels: int, num_classes: int,
                 features: Sequence[int] = DEFAULT_FEATURES) -> UNetPlusPlus2d:
    """MONAI's ``BasicUNetPlusPlus`` (2-D) with ``num_classes`` logits (background included).

    Raises:
        ImportError: MONAI is not installed (the message names the extra).
    """
    return UNetPlusPlus2d(in_channels, num_classes, tuple(features))


class UNetPlusPlus2d(nn.Module):
    """``BasicUNetPlusPlus(spatial_dims=2)`` returning its logits tensor (not a list)."""

    def __init__(self, in_channels: int, num_classes: int, features: tuple[int, ...]) -> None:
        super().__init__()
        nets = require("monai.networks.nets", "The UNet++ network (MONAI's)")
        self.unetpp = nets.BasicUNetPlusPlus(
            spatial_dims=2, in_channels=in_channels, out_channels=num_classes,
            features=features, deep_supervision=False,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.unetpp(images)[0]


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per sample and channel over the spatial axes (``(N, C, ...)``);
    a constant channel becomes zeros."""
    axes = tuple(range(2, images.ndim))
    mean = images.mean(dim=axes, keepdim=True)
    std = images.std(dim=axes, keepdim=True, unbiased=False)
    return (images - mean) / std.clamp_min(1e-6)


def prepare_slices(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """``(N, C, H, W)`` slices -> normalised ``(N, C, image_size, image_size)`` float32."""
    prepared = normalize(images.float())
    if prepared.shape[-2:] != (image_size, image_size):
        prepared = functional.interpolate(
            prepared, size=(image_size, image_size), mode="bilinear", align_corners=False
        )
    return prepared


def resize_labels(labels: torch.Tensor, image_size: int) -> torch.Tensor:
    """``(N, H, W)`` label maps -> ``(N, 1, image_size, image_size)`` int64 (nearest)."""
    resized = labels[:, None].float()
    if resized.shape[-2:] != (image_size, image_size):
        resized = functional.interpolate(resized, size=(image_size, image_size), mode="nearest")
    return resized.long()


def slice_probabilities(net: nn.Module, images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Class probabilities ``(N, K, H, W)`` of ``(N, C, H, W)`` slices, at their own size."""
    logits = net(prepare_slices(images, image_size))
    if logits.shape[-2:] != images.shape[-2:]:
        logits = functional.interpolate(
            logits, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False
        )
    return logits.softmax(dim=1)


def segment_volume(net: nn.Module, volume: torch.Tensor, image_size: int,
                   slices_per_pass: int = SLICES_PER_PASS) -> torch.Tensor:
    """The label map ``(D, H, W)`` of a ``(D, H, W, C)`` volume, slice by slice."""
    labels = []
    for start in range(0, volume.shape[0], slices_per_pass):
        chunk = volume[start:start + slices_per_pass].permute(0, 3, 1, 2)
        labels.append(slice_probabilities(net, chunk, image_size).argmax(dim=1))
    return torch.cat(labels)


class UNetPPSegmenter(DatamintModel):
    """Segments images and slices with a 2-D UNet++; ``slice`` and ``volume`` are bridged.

    Example::

        segmenter = UNetPPSegmenter(label_names=["liver", "tumour"], image_size=256)
        segmenter.predict([volume], params={"mode": "volume"})

    Args:
        torch_model: the network (by default a fresh :func:`build_unetpp`).
        label_names: the labels, background excluded; label ``i`` is ``label_names[i - 1]``.
        channel_names: the input channels (an image is ``(H, W)`` or ``(H, W, C)``).
        image_size: the side the network sees (a multiple of 16, at least 32).
        features: the network's widths (MONAI's ``features``).
        settings: deployment settings, as for any Datamint model.

    Raises:
        ValueError: no labels, or an ``image_size`` that is not a multiple of 16 of at least
            32.
    """

    task_type = TaskType.VOLUME_SEGMENTATION

    def __init__(
        self,
        torch_model: nn.Module | None = None,
        *,
        label_names: Sequence[str],
        channel_names: Sequence[str] = ("image",),
        image_size: int = 256,
        features: Sequence[int] = DEFAULT_FEATURES,
        settings: Any = None,
    ) -> None:
        check_image_size(image_size)
        if not label_names or not all(isinstance(n, str) and n for n in label_names):
            raise ValueError(
                f"UNetPPSegmenter(label_names={label_names!r}) needs at least one label name."
            )
        self.label_names = tuple(label_names)
        self.channel_names = tuple(channel_names)
        self.image_size = int(image_size)
        self.features = tuple(int(f) for f in features)
        net = torch_model or build_unetpp(len(self.channel_names), len(self.label_names) + 1,
                                          self.features)
        super().__init__(settings=settings, torch_model=net)
        self.annotation_specs = [
            AnnotationSpec(name, AnnotationType.SEGMENTATION, description="UNet++ mask")
            for name in self.label_names
        ]

    @property
    def config(self) -> dict[str, Any]:
        """What rebuilds this model (without its weights): :meth:`from_config` takes it."""
        return {
            "label_names": list(self.label_names),
            "channel_names": list(self.channel_names),
            "image_size": self.image_size,
            "features": list(self.features),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UNetPPSegmenter:
        """A fresh model (untrained network) from :attr:`config`."""
        return cls(**config)

    def code_file_text(self) -> str:
        """The text of a ``.py`` file that rebuilds this model, for logging it from code."""
        config = json.dumps(self.config)
        return (
            '"""A UNet++ segmenter, rebuilt from code; its trained weights load beside it."""\n\n'
            "import json\n\nimport mlflow\n\n"
            "from datamint_torch.segmentation import UNetPPSegmenter\n\n"
            f"mlflow.models.set_model(UNetPPSegmenter.from_config(json.loads({config!r})))\n"
        )

    def predict_image(self, model_input: list[Any], **kwargs: Any) -> list[list[Any]]:
        """One list of masks (one per label found) for each ``(H, W[, C])`` image."""
        net = self.get_pytorch_model()
        results = []
        for resource in model_input:
            pixels = np.asarray(resource.pixels)
            if pixels.ndim == 2:
                pixels = pixels[..., None]
            if pixels.ndim != 3 or pixels.shape[-1] != len(self.channel_names):
                raise ValueError(
                    f"This UNet++ takes images of shape (H, W) or (H, W, "
                    f"{len(self.channel_names)}) (channels {list(self.channel_names)}); got "
                    f"{tuple(resource.pixels.shape)}."
                )
            images = torch.as_tensor(np.ascontiguousarray(pixels), dtype=torch.float32)
            images = images.permute(2, 0, 1)[None].to(self.inference_device)
            probabilities = slice_probabilities(net, images, self.image_size)[0]
            labels = probabilities.argmax(dim=0)
            found = []
            for index, name in enumerate(self.label_names, start=1):
                mask = labels == index
                if bool(mask.any()):
                    confidence = float(probabilities[index][mask].mean())
                    found.append(SegmentationAnnotation(name, mask.cpu().numpy(),
                                                        confidence=confidence))
            results.append(found)
        return results


def check_image_size(image_size: Any) -> int:
    """``image_size`` if it is a multiple of 16 of at least 32 (the network halves it four
    times and normalises the smallest maps, which need more than one pixel).

    Raises:
        ValueError: naming the value and accepted ones near it.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < (
        2 * SIZE_MULTIPLE
    ) or image_size % SIZE_MULTIPLE:
        near = 2 * SIZE_MULTIPLE
        if isinstance(image_size, (int, float)) and not isinstance(image_size, bool):
            near = max(near, int(image_size) // SIZE_MULTIPLE * SIZE_MULTIPLE)
        raise ValueError(
            f"image_size={image_size!r} is not accepted: the UNet++ halves the image four times, "
            f"so give a multiple of {SIZE_MULTIPLE} of at least {2 * SIZE_MULTIPLE} (such as "
            f"{near} or {near + SIZE_MULTIPLE})."
        )
    return image_size
