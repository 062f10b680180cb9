"""Read NIfTI (``.nii``, ``.nii.gz``) volumes, either byte order, with their affine.

nibabel's ``(i, j, k)`` array is returned as ``(k, j, i)`` = ``(D, H, W)``: NIfTI stores ``i``
fastest, so the transposed array is C-contiguous with no copy (a big-endian file is swapped
to native order, which is one copy). The affine is nibabel's (sform or qform, RAS), with its
columns reordered to ``(D, H, W)``; scaling (``scl_slope``/``scl_inter``) is applied.
"""

from __future__ import annotations

import numpy as np

from datamint_core.io._decoded import Decoded, check_decoded_size
from datamint_core.io._extras import require
from datamint_core.io.geometry import WORLD_FRAME, nifti_to_dhw, spacing_of
from datamint_core.resources import ResourceError


def decode_nifti(path: str) -> Decoded:
    """Read a NIfTI-1/NIfTI-2 file into a ``(D, H, W)`` volume and its RAS affine.

    Raises:
        ResourceError: not NIfTI, or more than 3 dimensions with more than one volume.
        ImportError: nibabel is not installed (``pip install "datamint[nifti]"``).
    """
    nibabel = require("nibabel", "Reading NIfTI")
    try:
        image = nibabel.load(path, mmap=False)
    except Exception as error:  # nibabel raises many types for a bad file
        raise ResourceError(
            f"Cannot read {path!r} as NIfTI: {error}. Accepted: a NIfTI-1 or NIfTI-2 file "
            "(.nii or .nii.gz)."
        ) from None
    if not isinstance(image, (nibabel.Nifti1Image, nibabel.Nifti2Image)):
        raise ResourceError(
            f"{path!r} is a {type(image).__name__}, not NIfTI; accepted: .nii or .nii.gz."
        )
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
    check_decoded_size(image.shape, itemsize, path)
    data = np.asanyarray(image.dataobj)
    data = data.reshape(shape + (1,) * (3 - len(shape)), order="A")
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="), order="F")
    pixels = data.transpose(2, 1, 0)
    affine = nifti_to_dhw(image.affine)
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
