"""Read NIfTI (``.nii``, ``.nii.gz``) volumes, either byte order, with their affine.

nibabel's ``(i, j, k)`` array is returned as ``(k, j, i)`` = ``(D, H, W)``: NIfTI stores ``i``
fastest, so the transposed array is C-contiguous with no copy (a big-endian file is swapped
to native order, which is one copy). The affine is nibabel's (sform or qform, RAS), with its
columns reordered to ``(D, H, W)``; scaling (``scl_slope``/``scl_inter``) is applied.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

import numpy as np

from datamint_core.io._checks import DEFLATE_MAX_RATIO, check_held, file_name, reason
from datamint_core.io._decoded import Decoded, check_decoded_size
from datamint_core.io._extras import require
from datamint_core.io.geometry import WORLD_FRAME, affine_problem, nifti_to_dhw, spacing_of
from datamint_core.resources import ResourceError

_GZIP_MAGIC = b"\x1f\x8b"
# nibabel's own tolerance for a quaternion whose b, c, d squares sum a little above 1.
_QUATERNION_TOLERANCE = 1e-6


def decode_nifti(path: str) -> Decoded:
    """Read a NIfTI-1/NIfTI-2 file into a ``(D, H, W)`` volume and its RAS affine.

    The header is checked before the voxels are read: its dimensions must be positive and
    fit in the file (a ``.nii.gz`` can hold at most :data:`DEFLATE_MAX_RATIO` times its own
    size), and the affine nibabel builds (sform, else qform, else pixdim) must be finite and
    invertible.

    Raises:
        ResourceError: not NIfTI, more than 3 dimensions with more than one volume, a
            header that does not describe the file (named: ``dim``, the affine's fields).
        ImportError: nibabel is not installed (``pip install "datamint[nifti]"``).
    """
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
    shape = image.shape
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise ResourceError(
            f"{path!r} is a {len(image.shape)}-D NIfTI of shape {image.shape}; accepted: one "
            "3-D volume (a 4-D file with one volume is fine). Split it into 3-D files first."
        )
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
    data = data.reshape(shape + (1,) * (3 - len(shape)), order="A")
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="), order="F")
    pixels = data.transpose(2, 1, 0)
    header = image.header
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
