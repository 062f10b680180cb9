"""Multi-modal cases: co-registered volumes (or images) stacked as the channels of one.

A case is given as ``{channel name: source}`` in channel order, e.g. the four MRI series of
a brain tumour study::

    case = read_case({"t1": "t1/", "t1c": "t1c.nii.gz", "t2": "t2.nii.gz", "flair": "fl/"})
    case.pixels.shape          # (D, H, W, 4)
    case.channel_names         # ('t1', 't1c', 't2', 'flair')

Each source is read as :func:`datamint_core.io.read` reads it (DICOM series, NIfTI, ...,
mixed freely) and must hold one channel. Their grids must agree before they are stacked:

- the same spatial shape ``(D, H, W)`` (``(H, W)`` for images), and
- where two sources both know their affine, the same affine within
  :data:`AFFINE_TOLERANCE_MM` (the largest difference of any entry of the 4x4 matrices,
  in mm: the voxel steps and the origin); a source without an affine (``.npy``) takes the
  others'. A grid that differs is named with both values.

The channels are read one at a time into one preallocated array, so the peak memory is
the case plus one channel. Each channel is contiguous in memory (``pixels.transpose(3, 0,
1, 2)`` is the ``(C, D, H, W)`` array a network takes, without a copy). The pixel type is
the one every channel's values fit (``numpy.result_type``). ``metadata["channels"]`` keeps
each source's file name, modality and metadata, by channel name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from datamint_core._limits import check_decoded_size
from datamint_core.errors import ResourceError
from datamint_core.io._decoded import Decoded
from datamint_core.io.geometry import WORLD_FRAME, spacing_of
from datamint_core.resources import BaseResource, VolumeResource, _checked_channel_names
from datamint_core.wire import record_with_file, resource_from_dict

#: Largest difference (mm) between two channels' affine entries that still counts as one grid.
AFFINE_TOLERANCE_MM = 1e-3

CaseSource = str | os.PathLike[str] | BaseResource


def read_case(
    channels: Mapping[str, CaseSource],
    *,
    affine_tolerance_mm: float = AFFINE_TOLERANCE_MM,
    fourth_axis: str = "auto",
) -> BaseResource:
    """Read co-registered sources and stack them as the named channels of one resource.

    Args:
        channels: ``{channel name: source}`` in channel order; a source is a path (a DICOM
            series directory or file, NIfTI, PNG, JPEG, ``.npy``) or a resource already read.
        affine_tolerance_mm: the largest affine difference, in mm, that still counts as
            the same grid (default :data:`AFFINE_TOLERANCE_MM`).
        fourth_axis: how a 4-D NIfTI source is read (see :mod:`datamint_core.io.nifti`); a
            source must hold one channel either way.

    Returns:
        A ``(D, H, W, C)`` :class:`VolumeResource` (or an ``(H, W, C)`` image for image
        sources) with ``channel_names`` the keys of ``channels``, the shared geometry, and
        ``metadata["channels"]`` describing each source.

    Raises:
        ResourceError: no channels, a bad name, a source that cannot be read or holds more
            than one channel, or grids that differ (the differing channel is named).
        ImportError: a source's format needs an extra that is not installed.

    Example:
        >>> case = read_case({"t1": "t1.nii.gz", "t2": "t2.nii.gz"})  # doctest: +SKIP
        >>> case.pixels.shape, case.channel_names                       # doctest: +SKIP
        ((155, 240, 240, 2), ('t1', 't2'))
    """
    decoded = decode_case(
        channels, affine_tolerance_mm=affine_tolerance_mm, fourth_axis=fourth_axis
    )
    return resource_from_dict(record_with_file({}, decoded))


def decode_case(
    channels: Mapping[str, CaseSource],
    *,
    affine_tolerance_mm: float = AFFINE_TOLERANCE_MM,
    fourth_axis: str = "auto",
) -> Decoded:
    """What :func:`read_case` reads, before it becomes a resource (same arguments, errors)."""
    from datamint_core.io._read import decode_path

    if not isinstance(channels, Mapping):
        raise ResourceError(
            f"read_case takes {{channel name: path}}, e.g. {{'t1': 't1.nii.gz', 't2': "
            f"'t2.nii.gz'}}; got a {type(channels).__name__}."
        )

    def loader(source: CaseSource) -> Callable[[], tuple[Decoded, str | None]]:
        def load() -> tuple[Decoded, str | None]:
            if isinstance(source, BaseResource):
                return decoded_of(source), source.filename
            path = os.fspath(source)
            name = os.path.basename(os.path.normpath(path))
            return decode_path(path, None, fourth_axis=fourth_axis), name

        return load

    return stack_channels(
        ((name, loader(source)) for name, source in channels.items()),
        affine_tolerance_mm=affine_tolerance_mm,
    )


def stack_channels(
    sources: Iterable[tuple[str, Callable[[], tuple[Decoded, str | None]]]],
    *,
    affine_tolerance_mm: float = AFFINE_TOLERANCE_MM,
) -> Decoded:
    """Read each named source (one at a time) and stack them as channels, grids checked.

    Args:
        sources: ``(channel name, load)`` pairs in channel order; ``load()`` returns the
            source's :class:`Decoded` and its file name.
        affine_tolerance_mm: see :func:`read_case`.

    Raises:
        ResourceError: see :func:`read_case`.
    """
    if not (isinstance(affine_tolerance_mm, (int, float)) and affine_tolerance_mm >= 0):
        raise ResourceError(
            f"affine_tolerance_mm={affine_tolerance_mm!r} is not valid; accepted: a number "
            ">= 0 (mm)."
        )
    sources = list(sources)
    names = _checked_channel_names([name for name, _ in sources] or None, "A multi-modal case")
    if names is None:
        raise ResourceError(
            "A multi-modal case needs at least one channel: {channel name: path}, e.g. "
            "{'t1': 't1.nii.gz', 't2': 't2.nii.gz'}."
        )
    planes: np.ndarray | None = None
    first: Decoded | None = None
    affine: np.ndarray | None = None
    affine_from = ""
    described: dict[str, Any] = {}
    for index, (name, load) in enumerate(sources):
        decoded, filename = load()
        channel = decoded.pixels
        spatial_ndim = 3 if decoded.kind == "volume" else 2
        if decoded.kind == "video" or channel.ndim != spatial_ndim:
            raise ResourceError(
                f"Channel {name!r} ({filename}) holds {_shape_words(decoded)}; each channel "
                "of a case is one grayscale volume (D, H, W) or image (H, W). Split "
                "multi-channel files, or name the fourth axis (fourth_axis)."
            )
        if first is None:
            # Its description only: the channel's pixels must not outlive this iteration.
            first = Decoded(
                np.empty((0,) * channel.ndim, channel.dtype),
                decoded.kind,
                decoded.mimetype,
                spacing=decoded.spacing,
            )
            # Charged to a request's decode budget before it is allocated (no budget in a
            # user's own process): a request naming thousands of parts must get its 413.
            check_decoded_size(
                (len(sources), *channel.shape), channel.dtype.itemsize, "the stacked channels"
            )
            planes = np.empty((len(sources), *channel.shape), dtype=channel.dtype)
        else:
            if decoded.kind != first.kind or channel.shape != planes.shape[1:]:  # type: ignore[union-attr]
                raise ResourceError(
                    f"Channel {name!r} ({filename}) is {_shape_words(decoded)}, but channel "
                    f"{names[0]!r} is {_shape_words(first, planes.shape[1:])}; the channels "  # type: ignore[union-attr]
                    "of a case must be co-registered on one grid (resample them first)."
                )
            wanted = np.result_type(planes.dtype, channel.dtype)  # type: ignore[union-attr]
            if wanted != planes.dtype:  # type: ignore[union-attr]
                planes = planes.astype(wanted)  # type: ignore[union-attr]
        if decoded.affine is not None:
            if affine is None:
                affine, affine_from = np.asarray(decoded.affine, dtype=float), name
            else:
                difference = float(np.max(np.abs(np.asarray(decoded.affine) - affine)))
                if not difference <= affine_tolerance_mm:
                    raise ResourceError(
                        f"Channel {name!r} ({filename}) is not on the grid of channel "
                        f"{affine_from!r}: their affines differ by up to {difference:.4g} mm "
                        f"(tolerance {affine_tolerance_mm:g} mm).\n{name}: "
                        f"{np.round(decoded.affine, 4).tolist()}\n{affine_from}: "
                        f"{np.round(affine, 4).tolist()}\nResample the channels onto one "
                        "grid, or raise affine_tolerance_mm."
                    )
        planes[index] = channel  # type: ignore[index]
        described[name] = {
            key: value
            for key, value in (
                ("filename", filename),
                ("modality", decoded.modality),
                ("metadata", decoded.metadata),
            )
            if value not in (None, {})
        }
        del decoded, channel  # one channel in memory at a time
    assert first is not None and planes is not None
    modalities = {entry.get("modality") for entry in described.values()}
    metadata: dict[str, Any] = {"channels": described}
    if affine is not None:
        metadata["space"] = WORLD_FRAME
    spatial_axes = tuple(range(1, planes.ndim))
    return Decoded(
        pixels=planes.transpose(*spatial_axes, 0),  # channel-last view, channel-planar memory
        kind=first.kind,
        mimetype=first.mimetype,
        spacing=spacing_of(affine) if affine is not None else first.spacing,
        affine=affine if first.kind == "volume" else None,
        modality=modalities.pop() if len(modalities) == 1 else None,
        metadata=metadata,
        channel_names=names,
    )


def decoded_of(resource: BaseResource) -> Decoded:
    """A resource already read, as a reader's result (geometry included)."""
    return Decoded(
        pixels=resource.pixels,
        kind=resource.kind,
        mimetype=resource.mimetype or "application/octet-stream",
        spacing=getattr(resource, "spacing", None),
        affine=resource.affine if isinstance(resource, VolumeResource) else None,
        modality=resource.modality,
        metadata=dict(resource.metadata),
        channel_names=resource.channel_names,
    )


def _shape_words(decoded: Decoded, shape: tuple[int, ...] | None = None) -> str:
    article = "an" if decoded.kind == "image" else "a"
    return f"{article} {decoded.kind} of shape {tuple(shape or decoded.pixels.shape)}"
