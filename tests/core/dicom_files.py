"""Real DICOM and NIfTI files for the reader tests: the test data pydicom and nibabel ship,
and series written with pydicom from a real file's header."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np


def pydicom_file(name: str) -> str:
    """A file from pydicom's bundled test data (never downloaded)."""
    import pydicom.data

    path = Path(pydicom.data.__file__).parent / "test_files" / name
    assert path.exists(), f"pydicom no longer ships {name}"
    return str(path)


def nibabel_file(name: str) -> str:
    """A file from nibabel's bundled test data."""
    import nibabel

    path = Path(nibabel.__file__).parent / "tests" / "data" / name
    assert path.exists(), f"nibabel no longer ships {name}"
    return str(path)


def philips_multiframe(directory: Path) -> str:
    """nibabel's enhanced multi-frame MR (Philips MPRAGE, 176 frames), unpacked."""
    import nibabel

    source = Path(nibabel.__file__).parent / "nicom" / "tests" / "data" / "philips_mprage.dcm.gz"
    target = directory / "philips_mprage.dcm"
    if not target.exists():
        with gzip.open(source) as packed, open(target, "wb") as unpacked:
            shutil.copyfileobj(packed, unpacked)
    return str(target)


def write_series(
    directory: str | os.PathLike[str],
    slices: int,
    size: int = 64,
    *,
    seed: int = 0,
    step: tuple[float, float, float] = (0.0, 0.0, 1.25),
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    series_uid: str | None = None,
    names: list[str] | None = None,
) -> np.ndarray:
    """Write a CT series from CT_small.dcm's header, files named and numbered in shuffled
    order; return the stored pixels in true slice order (along ``step``)."""
    import pydicom
    from pydicom.uid import generate_uid

    source = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    series_uid = series_uid or generate_uid()
    shuffled = rng.permutation(slices)
    names = names or [f"IM{int(number):05d}.dcm" for number in shuffled]
    _, y, x = np.ogrid[:1, :size, :size]
    volume = np.empty((slices, size, size), dtype=np.int16)
    for index in range(slices):
        dataset = source.copy()
        dataset.Rows = dataset.Columns = size
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.InstanceNumber = int(shuffled[index]) + 1
        dataset.ImageOrientationPatient = list(orientation)
        dataset.ImagePositionPatient = [
            -100.0 + step[0] * index,
            -120.0 + step[1] * index,
            50.0 + step[2] * index,
        ]
        disc = ((y - size // 2) ** 2 + (x - size // 2) ** 2) < (size // 8 + index) ** 2
        volume[index] = rng.integers(-50, 50, (size, size)) + 400 * disc[0] + index
        dataset.PixelData = volume[index].tobytes()
        dataset.save_as(directory / names[index], enforce_file_format=True)
    return volume
