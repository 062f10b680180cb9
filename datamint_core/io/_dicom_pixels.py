"""DICOM pixels: stored values read into a preallocated volume, frame by frame, rescaled.

Uncompressed pixel data is read from the file straight into the volume's memory; compressed
transfer syntaxes go through pydicom's decoders one frame at a time, within the request's
decode budget and deadline. The rescale's output type is chosen here (see
:mod:`datamint_core.io.dicom` for the rule).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from datamint_core._extras import install_command
from datamint_core._limits import check_deadline
from datamint_core.errors import RequestDeadlineExceeded, ResourceError
from datamint_core.io._checks import file_name, reason
from datamint_core.io._decoded import check_decoded_size
from datamint_core.io._dicom_header import (
    _NATIVE_SYNTAXES,
    _PIXEL_DATA_TAG,
    _full,
    _functional,
    _get,
    _Header,
    _invalid,
    _tag_values,
    _values,
)


def _stored_dtype(dataset: Any) -> np.dtype:
    bits = int(dataset.get("BitsAllocated", 16))
    signed = int(dataset.get("PixelRepresentation", 0) or 0) == 1
    if bits not in (8, 16, 32):
        raise ResourceError(
            f"DICOM BitsAllocated={bits} is not supported; accepted: 8, 16 or 32 bits."
        )
    return np.dtype(f"{'i' if signed else 'u'}{bits // 8}")


def _rescale_of(dataset: Any, where: str) -> tuple[float, float]:
    """The (slope, intercept) that turns stored values into real ones.

    RescaleSlope/RescaleIntercept (CT Hounsfield units, PET activity, ...); for RT dose,
    DoseGridScaling (stored values times it are the dose in DoseUnits).
    """
    if str(_get(dataset, "Modality", where) or "") == "RTDOSE":
        scaling = _tag_values(dataset, "DoseGridScaling", 1, where)
        if scaling is not None:
            if not scaling[0] > 0:
                raise _invalid("DoseGridScaling", where, scaling)
            return (float(scaling[0]), 0.0)
    return _rescale_values(
        _get(dataset, "RescaleSlope", where), _get(dataset, "RescaleIntercept", where), where
    )


def _rescale_values(slope: Any, intercept: Any, where: str) -> tuple[float, float]:
    slopes = _values(slope, "RescaleSlope", 1, where)
    intercepts = _values(intercept, "RescaleIntercept", 1, where)
    if slopes is not None and slopes[0] == 0:
        raise _invalid("RescaleSlope", where, slopes, accepted="one finite, non-zero number")
    return (
        float(slopes[0]) if slopes is not None else 1.0,
        float(intercepts[0]) if intercepts is not None else 0.0,
    )


def _frame_rescales(header: _Header, frames: int) -> list[tuple[float, float]]:
    """Each frame's (slope, intercept): its functional groups', else the file's."""
    dataset, name = header.dataset, file_name(header.path)
    shared = _rescale_of(dataset, name)
    per_frame = _get(dataset, "PerFrameFunctionalGroupsSequence", name)

    def frame_rescale(index: int) -> tuple[float, float]:
        slope = _functional(dataset, index, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _functional(
            dataset, index, "PixelValueTransformationSequence", "RescaleIntercept"
        )
        if slope is None and intercept is None:
            return shared
        return _rescale_values(slope, intercept, f"frame {index + 1} of {name}")

    if per_frame is None:  # one rescale (maybe a shared functional group's) for every frame
        return [frame_rescale(0)] * frames
    rescales = []
    for index in range(frames):
        check_deadline()
        rescales.append(frame_rescale(index))
    return rescales


def _output_dtype(dataset: Any, rescales: Sequence[tuple[float, float]]) -> np.dtype:
    """The narrowest type that holds every rescaled value exactly (float32 otherwise)."""
    stored = _stored_dtype(dataset)
    if all(slope == 1.0 and intercept == 0.0 for slope, intercept in rescales):
        return stored
    if not all(float(s).is_integer() and float(b).is_integer() for s, b in rescales):
        return np.dtype(np.float32)
    bits_stored = int(dataset.get("BitsStored", stored.itemsize * 8) or stored.itemsize * 8)
    if stored.kind == "i":
        low, high = -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    else:
        low, high = 0, 2**bits_stored - 1
    ends = [value * s + b for s, b in rescales for value in (low, high)]
    for candidate in (np.int16, np.int32):
        info = np.iinfo(candidate)
        if info.min <= min(ends) and max(ends) <= info.max:
            return np.dtype(candidate)
    return np.dtype(np.float32)


def _read_volume(
    headers: Sequence[_Header],
    rescales: Sequence[tuple[float, float]],
    frame_indices: Sequence[int] | None = None,
) -> np.ndarray:
    """Read frames into one preallocated volume, slot ``k`` from ``headers[k]``.

    The volume's type is :func:`_output_dtype`'s, except that an integer rescale keeps the
    stored width (``int16`` for 16-bit data) when every rescaled value the frames hold fits
    it: the stored values are read first, and rescaled in place once they are known to fit
    (a CT's -1024 intercept on 16-bit data would otherwise double the volume's bytes).
    The declared type is charged to the decode budget once, before anything is allocated;
    the request's deadline is checked before every slice or frame. A compressed multi-frame
    file is decoded one frame at a time, straight into its slot.
    """
    first = headers[0].dataset
    shape = (len(headers), int(first.Rows), int(first.Columns))
    out_dtype = _output_dtype(first, rescales)
    check_decoded_size(shape, out_dtype.itemsize, file_name(headers[0].path))
    stored = _stored_dtype(first)
    if out_dtype.kind == "i" and out_dtype.itemsize > stored.itemsize:
        narrow = _read_narrow(headers, rescales, frame_indices, shape, stored)
        if narrow is not None:
            return narrow
    volume = np.empty(shape, dtype=out_dtype)
    # Reading into the volume itself works when its type has the stored bytes' meaning.
    direct = out_dtype == stored or (
        out_dtype == np.int16 and stored == np.uint16 and int(first.get("BitsStored", 16)) <= 15
    )
    scratch = None if direct else np.empty(shape[1:], dtype=stored)

    def target_of(slot: int) -> np.ndarray:
        target = volume[slot].view(stored) if direct else scratch
        assert target is not None
        return target

    def rescale(slot: int) -> bool:
        slope, intercept = rescales[slot]
        if direct and (slope, intercept) == (1.0, 0.0):
            return True
        source = volume[slot] if direct else scratch
        np.multiply(source, slope, out=volume[slot], dtype=out_dtype, casting="unsafe")
        if intercept:
            np.add(volume[slot], intercept, out=volume[slot], dtype=out_dtype, casting="unsafe")
        return True

    _read_frames(headers, frame_indices, stored, target_of, rescale)
    return volume


def _read_narrow(
    headers: Sequence[_Header],
    rescales: Sequence[tuple[float, float]],
    frame_indices: Sequence[int] | None,
    shape: tuple[int, int, int],
    stored: np.dtype,
) -> np.ndarray | None:
    """The volume in a signed type of the stored width, when every rescaled value fits it.

    Reads the stored values into the volume, stopping at the first frame whose rescaled
    values do not fit (``None``: the caller reads again into the wider type, so memory never
    holds both); then rescales in place, one slot at a time.
    """
    narrow = np.dtype(f"i{stored.itemsize}")
    volume = np.empty(shape, dtype=narrow)
    as_stored = volume.view(stored)

    def fits(slot: int) -> bool:
        values = as_stored[slot]
        low, high = _rescaled_range(float(values.min()), float(values.max()), rescales[slot])
        return _holds(narrow, low, high)

    if not _read_frames(headers, frame_indices, stored, as_stored.__getitem__, fits):
        return None
    for slot, rescale in enumerate(rescales):
        _rescale_wrapping(volume[slot], rescale)
    return volume


def _rescale_wrapping(values: np.ndarray, rescale: tuple[float, float]) -> None:
    """Rescale integers in place, in their own (signed) type, by an integer rescale whose
    results are known to fit that type.

    The arithmetic wraps around (modulo 2**bits), which is exact for products and sums: a
    result that fits the type is the true one, whatever the intermediate values were, and
    the stored bits (unsigned ones included) are the stored value modulo 2**bits.
    """
    slope, intercept = (np.array(int(value)).astype(values.dtype) for value in rescale)
    if slope != 1:
        np.multiply(values, slope, out=values)
    if intercept:
        np.add(values, intercept, out=values)


def _rescaled_range(low: float, high: float, rescale: tuple[float, float]) -> tuple[float, float]:
    """The smallest and largest of ``low`` and ``high`` once rescaled (a slope may be < 0)."""
    slope, intercept = rescale
    ends = (low * slope + intercept, high * slope + intercept)
    return min(ends), max(ends)


def _holds(dtype: np.dtype, low: float, high: float) -> bool:
    """Whether the integer type ``dtype`` holds every integer from ``low`` to ``high``."""
    info = np.iinfo(dtype)
    return info.min <= low and high <= info.max


def _read_frames(
    headers: Sequence[_Header],
    frame_indices: Sequence[int] | None,
    stored: np.dtype,
    target_of: Callable[[int], np.ndarray],
    done: Callable[[int], bool],
) -> bool:
    """Read each slot's stored values into ``target_of(slot)``, then call ``done(slot)``.

    Returns:
        ``False`` as soon as ``done`` does (the frames after it are not read), else ``True``.
    """
    if frame_indices is not None and not _reads_natively(headers[0], stored):
        slot_of = {frame: slot for slot, frame in enumerate(frame_indices)}
        for frame, pixels in enumerate(_iter_frames(headers[0], len(frame_indices))):
            slot = slot_of[frame]
            _put(target_of(slot), pixels, headers[0])
            if not done(slot):
                return False
        return True
    for slot, header in enumerate(headers):
        check_deadline()
        frame = 0 if frame_indices is None else frame_indices[slot]
        target = target_of(slot)
        if not _read_native_frame(header, frame, target):
            _put(target, _frames_array(header, charge_budget=False), header)  # charged above
        if not done(slot):
            return False
    return True


def _put(target: np.ndarray, pixels: np.ndarray, header: _Header) -> None:
    """Put one decoded frame's stored values in its slot."""
    if pixels.shape != target.shape:
        raise ResourceError(
            f"The pixel data of {file_name(header.path)} decodes to frames of "
            f"{pixels.shape}, not the declared Rows x Columns {target.shape}."
        )
    target[...] = pixels


def _reads_natively(header: _Header, stored: np.dtype) -> bool:
    """Whether :func:`_read_native_frame` can read this file's frames straight from disk."""
    dataset = header.dataset
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or str(syntax) not in _NATIVE_SYNTAXES:
        return False
    if int(dataset.get("SamplesPerPixel", 1) or 1) != 1:
        return False
    bits_stored = int(dataset.get("BitsStored", stored.itemsize * 8) or stored.itemsize * 8)
    if stored.kind == "i" and bits_stored < stored.itemsize * 8:
        return False  # needs sign extension: pydicom's decoder does it
    element = dataset.get_item(_PIXEL_DATA_TAG, keep_deferred=True)
    return getattr(element, "value_tell", None) is not None and element.value is None


def _read_native_frame(header: _Header, frame: int, target: np.ndarray) -> bool:
    """Read one uncompressed frame from the file straight into ``target``; False if not native."""
    if not _reads_natively(header, target.dtype):
        return False
    dataset = header.dataset
    syntax = str(dataset.file_meta.TransferSyntaxUID)
    element = dataset.get_item(_PIXEL_DATA_TAG, keep_deferred=True)
    frame_bytes = target.nbytes
    if element.length is not None and element.length < (frame + 1) * frame_bytes:
        raise ResourceError(
            f"The pixel data of {file_name(header.path)} is truncated: {element.length} "
            f"bytes for frame {frame + 1} of {frame_bytes} bytes each."
        )
    with open(header.path, "rb") as file:
        file.seek(element.value_tell + frame * frame_bytes)
        read = file.readinto(memoryview(target).cast("B"))
    if read != frame_bytes:
        raise ResourceError(f"The pixel data of {file_name(header.path)} is truncated.")
    if _NATIVE_SYNTAXES[syntax] == ">" and target.dtype.itemsize > 1:
        target.byteswap(inplace=True)
    return True


def _iter_frames(header: _Header, frames: int) -> Iterator[np.ndarray]:
    """Decode a file's frames one at a time with pydicom (compressed syntaxes, colour), in
    stored order, checking the request's deadline before each.

    Raises:
        ResourceError: pydicom cannot decode them, or they are not ``frames`` frames.
    """
    from pydicom.pixels import iter_pixels

    frames_seen = 0
    try:
        decoded = iter_pixels(_full(header).dataset)
        while True:
            check_deadline()
            try:
                pixels = next(decoded)
            except StopIteration:
                break
            frames_seen += 1
            if frames_seen > frames:
                break
            yield pixels if pixels.dtype.isnative else pixels.astype(pixels.dtype.newbyteorder("="))
    except (RequestDeadlineExceeded, ResourceError, MemoryError):
        raise
    except Exception as error:  # pydicom raises many types for undecodable pixel data
        syntax = getattr(getattr(header.dataset, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise ResourceError(
            f"Cannot decode the pixel data of {file_name(header.path)} (transfer syntax "
            f"{name}): {reason(error, header.path)}. Compressed DICOM needs the decoders of "
            f"the dicom extra: {install_command('dicom')}."
        ) from None
    if frames_seen != frames:
        raise ResourceError(
            f"The pixel data of {file_name(header.path)} holds "
            f"{'more' if frames_seen > frames else frames_seen} frames, not the declared "
            f"NumberOfFrames={frames}."
        )


def _frames_array(header: _Header, *, charge_budget: bool = True) -> np.ndarray:
    """Decode every frame of a file with pydicom (compressed syntaxes, colour), one at a
    time into one array: ``(H, W[, C])`` for one frame, ``(frames, H, W[, C])`` for more."""
    dataset = header.dataset
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if charge_budget:
        declared = [
            frames,
            int(dataset.get("Rows", 0)),
            int(dataset.get("Columns", 0)),
            int(dataset.get("SamplesPerPixel", 1) or 1),
        ]
        itemsize = max(1, int(dataset.get("BitsAllocated", 8)) // 8)
        check_decoded_size(declared, itemsize, file_name(header.path))
    pixels: np.ndarray | None = None
    for index, frame in enumerate(_iter_frames(header, frames)):
        if pixels is None:
            pixels = np.empty((frames, *frame.shape), dtype=frame.dtype)
        if frame.shape != pixels.shape[1:]:
            raise ResourceError(
                f"The frames of {file_name(header.path)} decode to different shapes "
                f"({pixels.shape[1:]} and {frame.shape})."
            )
        pixels[index] = frame
    assert pixels is not None  # _iter_frames yields exactly `frames` frames, or raises
    return pixels[0] if frames == 1 else pixels


def _rescaled(
    pixels: np.ndarray, rescales: Sequence[tuple[float, float]], header: _Header
) -> tuple[np.ndarray, np.dtype]:
    """Apply one rescale (or the Modality LUT) to an image or video (colour images are never
    rescaled)."""
    if int(header.get("SamplesPerPixel", 1) or 1) != 1:
        return pixels, pixels.dtype
    if "ModalityLUTSequence" in header.dataset:
        from pydicom.pixels import apply_modality_lut

        mapped = apply_modality_lut(pixels, header.dataset)
        return mapped, mapped.dtype
    out_dtype = _output_dtype(header.dataset, rescales[:1])
    slope, intercept = rescales[0]
    if (slope, intercept) == (1.0, 0.0):
        return pixels, pixels.dtype
    if out_dtype.kind == "i" and out_dtype.itemsize > pixels.dtype.itemsize and pixels.size:
        narrow = np.dtype(f"i{pixels.dtype.itemsize}")  # as a volume's: see _read_narrow
        low, high = _rescaled_range(float(pixels.min()), float(pixels.max()), rescales[0])
        if _holds(narrow, low, high):
            result = pixels.astype(narrow)  # the stored bits, wrapped: see _rescale_wrapping
            _rescale_wrapping(result, rescales[0])
            return result, narrow
    result = np.multiply(pixels, slope, dtype=out_dtype, casting="unsafe")
    if intercept:
        np.add(result, intercept, out=result, dtype=out_dtype, casting="unsafe")
    return result, out_dtype
