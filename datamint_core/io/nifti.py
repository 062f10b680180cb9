"""Read NIfTI (``.nii``, ``.nii.gz``) volumes, either byte order, with their affine.

nibabel's ``(i, j, k)`` array is returned as ``(k, j, i)`` = ``(D, H, W)``: NIfTI stores ``i``
fastest, so the transposed array is C-contiguous with no copy (a big-endian file is swapped
to native order, which is one copy). The affine is nibabel's (sform or qform, RAS), with its
columns reordered to ``(D, H, W)``; scaling (``scl_slope``/``scl_inter``) is applied.

**A 4-D file** ``(i, j, k, n)`` holds ``n`` volumes on one grid; its fourth axis is read as
channels or as time (``fourth_axis``; :data:`FOURTH_AXES`):

- ``"auto"`` (the default): **time** when the header gives the fourth axis a time unit
  (``xyzt_units`` seconds, milliseconds or microseconds) and a step (``pixdim[4] > 0``);
  otherwise **channels**, if ``n`` is at most :data:`MAX_AUTO_CHANNELS`; a longer axis
  without a time unit is refused (name ``fourth_axis``).
- ``"channels"``: a ``(D, H, W, C)`` volume, ``metadata["fourth_axis"] = "channels"``.
- ``"time"``: a ``(D, H, W, T)`` volume (the last axis is time, ``metadata["fourth_axis"] =
  "time"``, ``metadata["time_step_s"]`` the step in seconds); with a single slice
  (``k == 1``, a cine) a ``(T, H, W)`` video.

A 5-D file ``(i, j, k, 1, c)`` (NIfTI's vector layout: components on the fifth axis) reads
as ``c`` channels. The channel axis is last in indexing but each channel is contiguous in
memory (the file's own layout, no copy): ``pixels.transpose(3, 0, 1, 2)`` is the
``(C, D, H, W)`` array a network takes, still without a copy.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

import numpy as np

from datamint_core._extras import require
from datamint_core.errors import ResourceError
from datamint_core.io._checks import DEFLATE_MAX_RATIO, check_held, file_name, reason
from datamint_core.io._decoded import Decoded, check_decoded_size
from datamint_core.io.geometry import WORLD_FRAME, affine_problem, nifti_to_dhw, spacing_of

_GZIP_MAGIC = b"\x1f\x8b"
# nibabel's own tolerance for a quaternion whose b, c, d squares sum a little above 1.
_QUATERNION_TOLERANCE = 1e-6

#: How a 4-D NIfTI's fourth axis may be read (see the module docstring).
FOURTH_AXES = ("auto", "channels", "time")
#: The longest fourth axis ``"auto"`` reads as channels when the header names no time unit.
MAX_AUTO_CHANNELS = 16
_TIME_UNITS_S = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


def decode_nifti(path: str, fourth_axis: str = "auto") -> Decoded:
    """Read a NIfTI-1/NIfTI-2 file into a ``(D, H, W[, C])`` volume and its RAS affine.

    Args:
        path: the ``.nii``/``.nii.gz`` file.
        fourth_axis: how a 4-D file's fourth axis is read: one of :data:`FOURTH_AXES`.

    The header is checked before the voxels are read: its dimensions must be positive and
    fit in the file (a ``.nii.gz`` can hold at most :data:`DEFLATE_MAX_RATIO` times its own
    size), and the affine nibabel builds (sform, else qform, else pixdim) must be finite and
    invertible.

    Raises:
        ResourceError: not NIfTI, more dimensions than a 4-D (or 5-D vector) file, a long
            fourth axis that ``auto`` cannot tell, or a header that does not describe the
            file (named: ``dim``, ``vox_offset``, ``pixdim``, the qform's or sform's fields).
        ImportError: nibabel is not installed (``pip install "datamint[nifti]"``).
    """
    if fourth_axis not in FOURTH_AXES:
        raise ResourceError(
            f"fourth_axis={fourth_axis!r} is not valid; accepted: {list(FOURTH_AXES)}."
        )
    nibabel = require("nibabel", "Reading NIfTI")
    _check_raw_header(nibabel, path)
    try:
        image = nibabel.load(path, mmap=False)
    except Exception as error:  # nibabel raises many types for a bad file
        raise ResourceError(
            f"Cannot read {file_name(path)} as NIfTI: {reason(error, path)}. Accepted: a "
            "NIfTI-1 or NIfTI-2 file (.nii or .nii.gz)."
        ) from None
    if not isinstance(image, (nibabel.Nifti1Image, nibabel.Nifti2Image)):
        raise ResourceError(
            f"{path!r} is a {type(image).__name__}, not NIfTI; accepted: .nii or .nii.gz."
        )
    _check_declared_size(image, path)
    affine = nifti_to_dhw(_checked_affine(image, path))
    shape = tuple(image.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    vector = len(shape) == 5 and shape[3] == 1  # (i, j, k, 1, c): components on dim 5
    if len(shape) > 4 and not vector:
        raise ResourceError(
            f"{path!r} is a {len(image.shape)}-D NIfTI of shape {image.shape}; accepted: a "
            "3-D volume, a 4-D file (channels or time, see fourth_axis) or a 5-D vector file "
            "of shape (i, j, k, 1, c)."
        )
    header = image.header
    axis = None
    if len(shape) > 3:
        axis = "channels" if vector else _fourth_axis(header, shape, fourth_axis, path)
    scaled = image.dataobj.slope != 1 or image.dataobj.inter != 0
    itemsize = max(image.get_data_dtype().itemsize, 8 if scaled else 1)
    check_decoded_size(image.shape, itemsize, file_name(path))
    try:
        data = np.asanyarray(image.dataobj)
    except (OSError, EOFError, ValueError) as error:  # truncated or corrupt voxel data
        raise ResourceError(
            f"Cannot read the voxels of {file_name(path)}: {reason(error, path)}. Accepted: a "
            "NIfTI file holding every voxel its header declares."
        ) from None
    count = shape[-1] if axis is not None else 0
    spatial = shape[:3] if axis is not None else shape
    spatial = spatial + (1,) * (3 - len(spatial))
    data = data.reshape(spatial + ((count,) if axis is not None else ()), order="A")
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="), order="F")
    metadata = {
        "format": "nifti",
        "space": WORLD_FRAME,
        "qform_code": int(header["qform_code"]),
        "sform_code": int(header["sform_code"]),
        "stored_dtype": str(header.get_data_dtype().newbyteorder("=")),
    }
    description = header["descrip"].item()
    if description:
        metadata["description"] = description.decode("latin-1").strip("\x00 ")
    if axis is not None:
        metadata["fourth_axis"] = axis
    if axis == "time":
        step = _time_step_s(header)
        if step is not None:
            metadata["time_step_s"] = step
        if spatial[2] == 1:  # one slice over time: a cine, (T, H, W)
            return Decoded(
                pixels=data[:, :, 0, :].transpose(2, 1, 0),
                kind="video",
                mimetype="application/x-nifti",
                metadata=metadata,
            )
    pixels = data.transpose(2, 1, 0, 3) if axis is not None else data.transpose(2, 1, 0)
    return Decoded(
        pixels=pixels,
        kind="volume",
        mimetype="application/x-nifti",
        spacing=spacing_of(affine),
        affine=affine,
        metadata=metadata,
    )


def _check_declared_size(image: Any, path: str) -> None:
    """Refuse a header whose ``dim`` is not positive or declares more voxels than the file
    can hold, before any voxel is read."""
    shape = tuple(int(size) for size in image.shape)
    if not shape or any(size < 1 for size in shape):
        raise ResourceError(
            f"The NIfTI header of {file_name(path)} declares dim {list(shape)}; accepted: "
            "positive sizes."
        )
    offset = int(image.dataobj.offset)  # where nibabel reads the voxels from
    header_size = int(getattr(image.header, "single_vox_offset", 352))
    single = image.header["magic"].item() in (b"n+1", b"n+2")  # not a .hdr/.img pair
    if single and offset < header_size:
        raise ResourceError(
            f"The NIfTI header of {file_name(path)} puts its voxels at vox_offset {offset}, "
            f"inside the {header_size}-byte header; accepted: a vox_offset of at least "
            f"{header_size}."
        )
    dtype = image.get_data_dtype()
    declared = math.prod(shape) * dtype.itemsize
    file_size = os.path.getsize(path)
    with open(path, "rb") as file:
        compressed = file.read(2) == _GZIP_MAGIC
    if compressed:
        held = file_size * DEFLATE_MAX_RATIO
    else:
        held = file_size - offset
    check_held(declared, held, f"dim {list(shape)} of {dtype.name} voxels", path)


def _checked_affine(image: Any, path: str) -> np.ndarray:
    """nibabel's affine, once it is finite and invertible; names the fields it came from."""
    header = image.header
    if int(header["sform_code"]) > 0:
        source = "the sform (srow_x, srow_y, srow_z)"
    elif int(header["qform_code"]) > 0:
        source = "the qform (quatern_b/c/d, qoffset_x/y/z, pixdim)"
    else:
        source = "pixdim (the file has no sform or qform)"
    problem = affine_problem(image.affine)
    if problem is not None:
        raise ResourceError(
            f"The affine of {file_name(path)}, from {source}, {problem}; accepted: finite "
            "values, voxel sizes above 0 and axes that are not parallel."
        )
    return image.affine


def _check_raw_header(nibabel: Any, path: str) -> None:
    """Check the geometry fields as the file holds them, before nibabel reads the header.

    nibabel repairs some fields on load (a voxel size of 0 becomes 1, a negative one its
    absolute value), which would give a volume of other geometry than the file declares; the
    fields that build the affine are checked here first, and a bad one is named.
    """
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(path) as file:
            block = file.read(540)
    except Exception:  # not readable (a broken gzip stream): nibabel.load says why
        return
    if block[344:347] in (b"n+1", b"ni1"):
        header_class = nibabel.Nifti1Header
    elif block[4:7] in (b"n+2", b"ni2"):
        header_class = nibabel.Nifti2Header
    else:
        return
    try:
        header = header_class.from_fileobj(io.BytesIO(block), check=False)
    except Exception:  # nibabel.load says what is wrong
        return
    fields = header.structarr
    name = file_name(path)
    if int(fields["sform_code"]) > 0:
        return  # the sform alone gives the affine: checked once nibabel has built it
    spatial = max(1, min(3, int(fields["dim"][0])))
    voxel_sizes = [float(value) for value in fields["pixdim"][1 : 1 + spatial]]
    form = "its qform" if int(fields["qform_code"]) > 0 else "a file with no sform or qform"
    if not all(math.isfinite(size) and size > 0 for size in voxel_sizes):
        raise ResourceError(
            f"pixdim of {name} is {voxel_sizes} (the voxel sizes of {form}); accepted: finite "
            "numbers above 0."
        )
    if int(fields["qform_code"]) > 0:
        quaternion = [float(fields[key]) for key in ("quatern_b", "quatern_c", "quatern_d")]
        offset = [float(fields[key]) for key in ("qoffset_x", "qoffset_y", "qoffset_z")]
        if not all(math.isfinite(value) for value in quaternion + offset) or (
            sum(value * value for value in quaternion) > 1 + _QUATERNION_TOLERANCE
        ):
            raise ResourceError(
                f"The qform of {name} has quatern_b/c/d {quaternion} and qoffset_x/y/z "
                f"{offset}; accepted: finite numbers, quatern_b^2 + quatern_c^2 + "
                "quatern_d^2 at most 1 (a rotation)."
            )


def _fourth_axis(header: object, shape: tuple[int, ...], asked: str, path: str) -> str:
    """Channels or time for a 4-D file, by the rule of the module docstring."""
    if asked != "auto":
        return asked
    if _time_step_s(header) is not None:
        return "time"
    if shape[3] <= MAX_AUTO_CHANNELS:
        return "channels"
    raise ResourceError(
        f"{path!r} is a 4-D NIfTI of shape {shape} whose header gives the fourth axis no time "
        f"unit, and {shape[3]} volumes are more than the {MAX_AUTO_CHANNELS} read as channels "
        "without asking; say how to read it: fourth_axis='channels' or fourth_axis='time' "
        "(datamint predict: --fourth-axis)."
    )


def _time_step_s(header: object) -> float | None:
    """The fourth axis's step in seconds when the header gives it a time unit and a step."""
    unit = header.get_xyzt_units()[1]  # type: ignore[attr-defined]
    step = float(header["pixdim"][4])  # type: ignore[index]
    if unit not in _TIME_UNITS_S or not np.isfinite(step) or step <= 0:
        return None
    return float(f"{step * _TIME_UNITS_S[unit]:.6g}")  # pixdim is float32: no false digits
