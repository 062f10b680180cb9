"""Hypothesis strategies for hostile requests: pixel encodings, files and envelopes.

Every strategy builds what an attacker could send: well-formed parts mixed with lies (a
header declaring a huge shape over a few bytes, a sub-array or object dtype, a zip whose
directory lies about sizes), broken bytes, and JSON of every shape.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
from typing import Any

from hypothesis import strategies as st

NPY_MAGIC = b"\x93NUMPY"

#: dtypes a header may declare: plain ones, and every kind the server must refuse.
DESCRS = [
    "<f4", "<f8", "|u1", "<i2", "|b1", ">f4", "<f2",
    "(6000,6000)f8", "(2,)<i4", "|O", "<c16", "<M8[s]", "<m8[ns]", "|V8", "<U5", "|S3",
    "", "<f3", "object", "[('a', '<f4')]",
]  # fmt: skip

JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


def npy_header(descr: str, fortran: bool, shape: tuple[int, ...]) -> str:
    return f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}"


@st.composite
def npy_bytes(draw: st.DrawFn) -> bytes:
    """``.npy`` bytes: honest small arrays, lying headers, broken headers, random tails."""
    kind = draw(st.sampled_from(["honest", "lying", "garbage_header", "random"]))
    if kind == "random":
        tail = st.binary(max_size=300)
        return draw(st.one_of(tail, tail.map(NPY_MAGIC.__add__)))
    descr = draw(st.sampled_from(DESCRS))
    fortran = draw(st.booleans())
    small = st.lists(st.integers(0, 6), min_size=0, max_size=4)
    huge = st.lists(st.integers(0, 2**70), min_size=1, max_size=12)
    shape = tuple(draw(small if kind == "honest" else st.one_of(small, huge)))
    header = (
        draw(st.text(max_size=80))
        if kind == "garbage_header"
        else npy_header(descr, fortran, shape)
    )
    version = draw(st.sampled_from([1, 2, 3, 7]))
    encoded = header.encode("utf-8" if version == 3 else "latin-1", errors="replace")
    length = struct.pack("<H" if version == 1 else "<I", min(len(encoded), 0xFFFF))
    prefix = NPY_MAGIC + bytes([version, 0]) + length + encoded
    count = 1
    for size in shape:
        count *= size
    wanted = count * 8 if kind == "honest" and count * 8 <= 4096 else draw(st.integers(0, 400))
    return prefix + draw(st.binary(min_size=wanted, max_size=wanted))


@st.composite
def npz_bytes(draw: st.DrawFn) -> bytes:
    """``.npz`` archives: members of :func:`npy_bytes`, odd names, lying sizes, junk."""
    if draw(st.booleans()) and draw(st.booleans()):
        return b"PK\x03\x04" + draw(st.binary(max_size=300))
    buffer = io.BytesIO()
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name in draw(st.lists(st.sampled_from(["pixels.npy", "x.npy", "a.txt", "../up.npy"]),
                                  min_size=0, max_size=3, unique=True)):
            archive.writestr(name, draw(npy_bytes()))
    data = bytearray(buffer.getvalue())
    if draw(st.booleans()):  # lie about the uncompressed sizes, in both directories
        lie = struct.pack("<I", draw(st.integers(0, 2**32 - 1)))
        for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
            start = data.find(signature)
            while start != -1:
                data[start + offset : start + offset + 4] = lie
                start = data.find(signature, start + 4)
    return bytes(data)


def pixel_file_bytes() -> st.SearchStrategy[tuple[str, bytes]]:
    """``(suffix, bytes)`` of a hostile pixel file."""
    return st.one_of(
        npy_bytes().map(lambda data: (".npy", data)), npz_bytes().map(lambda data: (".npz", data))
    )


def list_pixel_data() -> st.SearchStrategy[dict[str, Any]]:
    """``{"encoding": "list", ...}`` with nested lists of any JSON values and any dtype."""
    nested = st.recursive(
        st.one_of(
            st.integers(-(2**70), 2**70),
            st.floats(allow_nan=False, allow_infinity=False),
            st.booleans(),
            st.text(max_size=3),
            st.none(),
        ),
        lambda children: st.lists(children, max_size=5),
        max_leaves=60,
    )
    dtype = st.one_of(st.none(), st.sampled_from([*DESCRS, "uint8", "int8", "float16", "bool"]))
    return st.builds(
        lambda data, dtype: {"encoding": "list", "data": data}
        | ({} if dtype is None else {"dtype": dtype}),
        nested,
        dtype,
    )


def base64_pixel_data() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        npy_bytes().map(
            lambda data: {"encoding": "npy_base64", "data": base64.b64encode(data).decode()}
        ),
        st.builds(lambda data: {"encoding": "npy_base64", "data": data}, JSON_VALUES),
        st.builds(lambda encoding: {"encoding": encoding, "data": "AAAA"}, JSON_VALUES),
    )


def resource_fields() -> st.SearchStrategy[dict[str, Any]]:
    """Descriptor fields of a resource, sometimes of the wrong type or unknown."""
    return st.fixed_dictionaries(
        {},
        optional={
            "kind": st.one_of(st.sampled_from(["image", "volume", "video"]), JSON_VALUES),
            "id": JSON_VALUES,
            "modality": JSON_VALUES,
            "metadata": JSON_VALUES,
            "spacing": JSON_VALUES,
            "affine": JSON_VALUES,
            "path": st.one_of(st.text(max_size=12), JSON_VALUES, st.just("/etc/passwd\x00.npy")),
            "surprise": JSON_VALUES,
        },
    )


PARAM_KEYS = ["mode", "axis", "slice_index", "frame_index", "start_index", "end_index",
              "start_frame", "end_frame", "confidence_threshold", "anything"]  # fmt: skip
MODES_AND_AXES = ["image", "slice", "volume", "frame", "all_frames", "sideways", "axial",
                  "coronal", "sagittal", "default"]  # fmt: skip
PARAMS = st.dictionaries(
    st.sampled_from(PARAM_KEYS),
    st.one_of(
        JSON_VALUES,
        st.sampled_from(MODES_AND_AXES),
        st.integers(-3, 40),
    ),
    max_size=4,
)


def deeply_nested(depth: int) -> bytes:
    """A JSON request whose params nest ``depth`` lists deep."""
    return b'{"resources": [], "params": {"x": ' + b"[" * depth + b"]" * depth + b"}}"


def envelope(records: list[Any], params: Any, form: str) -> Any:
    """``records`` in one of the accepted envelope forms."""
    if form == "dataframe_split":
        columns = sorted({key for record in records if isinstance(record, dict) for key in record})
        rows = [[record.get(c) if isinstance(record, dict) else None for c in columns]
                for record in records]  # fmt: skip
        return {"dataframe_split": {"columns": columns, "data": rows}, "params": params}
    return {form: records, "params": params}


def to_json(value: Any) -> bytes:
    return json.dumps(value).encode()
