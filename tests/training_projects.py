"""Small synthetic segmentation projects on disk, in the layouts the field shares.

Each case is a noisy volume with a bright ellipsoid ("liver", label 1) holding a brighter
small sphere ("tumour", label 2), with anisotropic voxels (2.5 x 0.8 x 0.8 mm). Written with
nibabel, in the (i, j, k) = (W, H, D) order NIfTI stores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SPACING = (2.5, 0.8, 0.8)
LABELS = ("liver", "tumour")


def phantom_case(seed: int, shape: tuple[int, int, int] = (8, 32, 32),
                 channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(image, label)``: ``(D, H, W)`` (``(D, H, W, C)`` for several channels) and labels."""
    rng = np.random.default_rng(seed)
    depth, height, width = shape
    d, h, w = np.ogrid[:depth, :height, :width]
    centre = (depth / 2, rng.uniform(0.4, 0.6) * height, rng.uniform(0.4, 0.6) * width)
    radii = (depth / 3, rng.uniform(0.2, 0.3) * height, rng.uniform(0.2, 0.3) * width)
    liver = sum(((a - c) / r) ** 2 for a, c, r in zip((d, h, w), centre, radii, strict=True)) <= 1
    tumour = sum(((a - c) / r) ** 2 for a, c, r in
                 zip((d, h, w), centre, (radii[0] / 2, radii[1] / 3, radii[2] / 3),
                     strict=True)) <= 1
    label = np.zeros(shape, dtype=np.uint8)
    label[liver] = 1
    label[tumour] = 2
    images = []
    for channel in range(channels):
        noise = rng.normal(0.0, 0.1, shape)
        images.append((noise + 0.6 * liver + 0.4 * tumour * (1 + channel)).astype(np.float32))
    image = images[0] if channels == 1 else np.stack(images, axis=-1)
    return image, label


def nifti_affine(spacing: tuple[float, float, float] = SPACING) -> np.ndarray:
    """A NIfTI (i, j, k) affine with ``spacing`` given along (D, H, W)."""
    return np.diag([spacing[2], spacing[1], spacing[0], 1.0])


def write_nifti(path: Path, dhw: np.ndarray, spacing: tuple[float, float, float] = SPACING) -> None:
    import nibabel

    axes = (2, 1, 0) if dhw.ndim == 3 else (2, 1, 0, 3)
    nibabel.save(nibabel.Nifti1Image(np.ascontiguousarray(dhw.transpose(axes)),
                                     nifti_affine(spacing)), str(path))


def write_msd_project(root: Path, cases: int = 10, *, name: str = "Liver Segmentation",
                      shape: tuple[int, int, int] = (8, 32, 32), test_cases: int = 1) -> Path:
    """A Medical Segmentation Decathlon project: dataset.json, imagesTr, labelsTr, imagesTs."""
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    training = []
    for number in range(cases):
        image, label = phantom_case(number, shape)
        write_nifti(root / "imagesTr" / f"liver_{number}.nii.gz", image)
        write_nifti(root / "labelsTr" / f"liver_{number}.nii.gz", label)
        training.append({"image": f"./imagesTr/liver_{number}.nii.gz",
                         "label": f"./labelsTr/liver_{number}.nii.gz"})
    test = []
    for number in range(cases, cases + test_cases):
        image, _ = phantom_case(number, shape)
        write_nifti(root / "imagesTs" / f"liver_{number}.nii.gz", image)
        test.append(f"./imagesTs/liver_{number}.nii.gz")
    description = {
        "name": name, "description": "synthetic phantoms", "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": LABELS[0], "2": LABELS[1]},
        "numTraining": cases, "numTest": test_cases, "training": training, "test": test,
    }
    (root / "dataset.json").write_text(json.dumps(description, indent=2))
    return root


def write_nnunet_project(root: Path, cases: int = 4, *, channels: int = 2,
                         shape: tuple[int, int, int] = (6, 24, 24)) -> Path:
    """An nnU-Net v2 raw dataset: channel_names, file_ending, ``_0000`` channel files."""
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    names = ["T2", "ADC", "DWI", "T1"][:channels]
    for number in range(cases):
        image, label = phantom_case(number, shape, channels=channels)
        stack = image if channels > 1 else image[..., None]
        for channel in range(channels):
            write_nifti(root / "imagesTr" / f"case_{number:03d}_{channel:04d}.nii.gz",
                        stack[..., channel])
        write_nifti(root / "labelsTr" / f"case_{number:03d}.nii.gz", label)
    description = {
        "channel_names": {str(i): n for i, n in enumerate(names)},
        "labels": {"background": 0, LABELS[0]: 1, LABELS[1]: 2},
        "numTraining": cases, "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(description, indent=2))
    return root
