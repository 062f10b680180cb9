"""The one geometry convention of datamint, and conversions to and from the file formats.

- **Index order.** A volume's pixel array is ``(D, H, W)``: ``D`` the slice axis (slices in
  order along the slice normal), ``H`` the rows of a slice, ``W`` its columns. An image is
  ``(H, W[, C])``; its ``spacing`` is ``(H, W)``: row spacing, then column spacing.
- **Affine.** A 4x4 matrix mapping the index ``(d, h, w, 1)`` to world millimetres: its
  first three columns are the steps, in mm, of one voxel along ``D``, ``H`` and ``W``; the
  fourth is the world position of the centre of voxel ``(0, 0, 0)``. A volume's ``spacing``
  ``(D, H, W)`` is the lengths of those three columns.
- **World frame: RAS+**, as nibabel and MONAI: +x points to the patient's Right, +y to
  Anterior, +z to Superior. DICOM's LPS+ (+x Left, +y Posterior, +z Superior) is converted
  on read and back on write: a point's RAS coordinates are its LPS ones with x and y negated.

DICOM: ``W`` follows the row direction (the first three values of ImageOrientationPatient),
``H`` the column direction (the last three) and ``D`` the slice normal (row x column);
slices are ordered by ImagePositionPatient projected on that normal, never by file name or
InstanceNumber. NIfTI: nibabel's ``(i, j, k)`` array becomes ``(k, j, i)`` (a transposed
view, no copy), so ``W = i``, ``H = j``, ``D = k``, and the affine's columns are reordered to
match. SimpleITK's ``GetArrayFromImage`` has the same ``(D, H, W)`` order; its origin,
spacing and direction are given in ``(W, H, D)`` order and in LPS.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The world frame of every affine datamint reads or writes.
WORLD_FRAME = "RAS"
#: Multiplying an LPS affine by this (on the left) gives the RAS one, and back.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: nibabel's (i, j, k) axes in datamint's (D, H, W) order.
_NIFTI_AXES_AS_DHW = (2, 1, 0)
# Axes whose unit vectors span less volume than this are (nearly) parallel: about 0.06
# degrees between two of them.
_MIN_AXES_VOLUME_RATIO = 1e-3


def dicom_affine(
    first_position: Sequence[float],
    orientation: Sequence[float],
    pixel_spacing: Sequence[float],
    slice_step: Sequence[float],
) -> np.ndarray:
    """The RAS affine of a DICOM volume.

    Args:
        first_position: ImagePositionPatient of the first slice (LPS, mm).
        orientation: ImageOrientationPatient: row direction, then column direction (LPS).
        pixel_spacing: PixelSpacing: row spacing (between rows, along ``H``), then column
            spacing (along ``W``), in mm.
        slice_step: the LPS vector from one slice's position to the next one's, in mm.

    Returns:
        The 4x4 matrix mapping ``(d, h, w, 1)`` to RAS millimetres.
    """
    row_direction = np.asarray(orientation[:3], dtype=float)
    column_direction = np.asarray(orientation[3:6], dtype=float)
    lps = np.eye(4)
    lps[:3, 0] = np.asarray(slice_step, dtype=float)
    lps[:3, 1] = column_direction * float(pixel_spacing[0])
    lps[:3, 2] = row_direction * float(pixel_spacing[1])
    lps[:3, 3] = np.asarray(first_position, dtype=float)
    return LPS_TO_RAS @ lps


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """The unit normal (row x column) of a DICOM ImageOrientationPatient, in LPS."""
    row_direction = np.asarray(orientation[:3], dtype=float)
    column_direction = np.asarray(orientation[3:6], dtype=float)
    normal = np.cross(row_direction, column_direction)
    return normal / np.linalg.norm(normal)


def affine_problem(affine: np.ndarray) -> str | None:
    """What makes ``affine`` unusable as a volume's geometry, or ``None`` when it is usable.

    Usable: a 4x4 matrix of finite numbers whose three axis columns have a positive length
    and are not (nearly) parallel, so that the affine can be inverted.
    """
    matrix = np.asarray(affine, dtype=float)
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        return "is not a 4x4 matrix of finite numbers"
    axes = matrix[:3, :3]
    lengths = np.linalg.norm(axes, axis=0)
    if not (lengths > 0).all() or not np.isfinite(lengths).all():
        return f"has axes of length {[float(length) for length in lengths]} mm"
    # |det| / product of the lengths is 1 for perpendicular axes and 0 for parallel ones.
    with np.errstate(over="ignore", invalid="ignore"):
        volume_ratio = abs(float(np.linalg.det(axes / lengths[None, :])))
    if not volume_ratio > _MIN_AXES_VOLUME_RATIO:
        return "is singular: its axes are (nearly) parallel"
    return None


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size along ``(D, H, W)``: the lengths of the affine's first three columns."""
    lengths = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    return (float(lengths[0]), float(lengths[1]), float(lengths[2]))


def nifti_to_dhw(nifti_affine: np.ndarray) -> np.ndarray:
    """Turn a NIfTI affine (index ``(i, j, k)``) into one for the ``(k, j, i)`` array."""
    affine = np.asarray(nifti_affine, dtype=float)
    return affine[:, [*_NIFTI_AXES_AS_DHW, 3]]


def dhw_to_nifti(affine: np.ndarray) -> np.ndarray:
    """Inverse of :func:`nifti_to_dhw`: the NIfTI affine of a ``(D, H, W)`` array's transpose."""
    return np.asarray(affine, dtype=float)[:, [*_NIFTI_AXES_AS_DHW, 3]]
