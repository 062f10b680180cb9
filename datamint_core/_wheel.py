"""The exact ``datamint`` build in use, as a wheel that travels inside every saved model.

On the public index ``datamint`` is another project, so a saved model never asks an index
for this package: ``save_model`` puts the wheel of the running build in the model directory
(MLflow's wheeled-model layout) and its ``requirements.txt`` names it by relative path::

    <model dir>/
        requirements.txt          ./wheels/datamint-0.1.0-py3-none-any.whl[torch]
        wheels/datamint-0.1.0-py3-none-any.whl

The wheel is assembled in-process (no build backend, no subprocess) from the files of the
packages being imported (a source tree, an editable install, or an installed wheel) and the
installed distribution's own ``METADATA`` and entry points, so it declares the same
dependencies and extras as ``pip install -e .``. It is built once per content: the cache
holds ``<cache dir>/wheels/<version>-<sha256 of the content>/datamint-<version>-....whl``,
and a process builds or finds it once.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import BinaryIO

from mlflow.exceptions import MlflowException

from datamint_core._files import write_atomically
from datamint_core.artifact_cache import default_cache_dir
from datamint_core.version import __version__

DISTRIBUTION = "datamint"
#: The top-level packages of the distribution (``[tool.hatch.build.targets.wheel]``).
PACKAGES = ("datamint_core", "datamint_torch", "datamint_lightning")
#: Where the wheel goes inside a saved model (MLflow's ``WheeledModel`` uses this name too).
WHEELS_DIR = "wheels"
_TAG = "py3-none-any"
_SKIPPED_DIRS = frozenset({"__pycache__"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


def wheel_name() -> str:
    """The file name of the bundled wheel: ``datamint-<version>-py3-none-any.whl``."""
    return f"{DISTRIBUTION}-{__version__}-{_TAG}.whl"


def requirement_line(extras: tuple[str, ...] = ()) -> str:
    """The ``requirements.txt`` line installing the bundled wheel, relative to the model dir.

    pip and uv both resolve it against the directory they install from; MLflow's
    environment managers install from (a link farm of) the model directory.
    """
    suffix = f"[{','.join(sorted(extras))}]" if extras else ""
    return f"./{WHEELS_DIR}/{wheel_name()}{suffix}"


def datamint_wheel() -> Path:
    """The wheel of the running datamint build, from the cache or built into it once.

    Raises:
        MlflowException: the ``datamint`` distribution is not installed (its metadata is
            what the wheel declares), so no wheel can be built.
    """
    files, digest = _wheel_content()
    wheel = default_cache_dir() / WHEELS_DIR / f"{__version__}-{digest[:16]}" / wheel_name()
    if not wheel.is_file():
        _write_wheel(wheel, files)
    return wheel


@functools.cache
def _wheel_content() -> tuple[list[tuple[str, bytes]], str]:
    """The wheel's files and their digest: read once per process."""
    files = [*_package_files(), *_dist_info_files()]
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return files, digest.hexdigest()


def bundle_into(model_dir: str | os.PathLike[str]) -> Path:
    """Put the datamint wheel in ``model_dir/wheels/`` (a hard link where possible)."""
    source = datamint_wheel()
    wheels = Path(model_dir) / WHEELS_DIR
    wheels.mkdir(exist_ok=True)
    destination = wheels / source.name
    try:
        os.link(source, destination)
    except OSError:
        destination.write_bytes(source.read_bytes())
    return destination


def _package_files() -> list[tuple[str, bytes]]:
    root = Path(__file__).resolve().parent.parent
    files = []
    for package in PACKAGES:
        directory = root / package
        if not (directory / "__init__.py").is_file():
            continue
        for folder, subdirs, names in os.walk(directory):
            subdirs[:] = sorted(d for d in subdirs if d not in _SKIPPED_DIRS)
            for name in sorted(names):
                if name.endswith(_SKIPPED_SUFFIXES):
                    continue
                path = Path(folder, name)
                files.append((path.relative_to(root).as_posix(), path.read_bytes()))
    return files


def _dist_info_files() -> list[tuple[str, bytes]]:
    try:
        distribution = importlib_metadata.distribution(DISTRIBUTION)
    except importlib_metadata.PackageNotFoundError:
        raise MlflowException(
            "Cannot bundle datamint into the model: the 'datamint' distribution is not "
            "installed (only its source is importable). Install it from the repository with "
            "`pip install -e .` (or `pip install .`), then save again."
        ) from None
    info = f"{DISTRIBUTION}-{__version__}.dist-info"
    wheel_file = (
        f"Wheel-Version: 1.0\nGenerator: datamint {__version__}\n"
        f"Root-Is-Purelib: true\nTag: {_TAG}\n"
    )
    files = [
        (f"{info}/METADATA", (distribution.read_text("METADATA") or "").encode()),
        (f"{info}/WHEEL", wheel_file.encode()),
    ]
    entry_points = distribution.read_text("entry_points.txt")
    if entry_points:
        files.append((f"{info}/entry_points.txt", entry_points.encode()))
    return files


def _write_wheel(wheel: Path, files: list[tuple[str, bytes]]) -> None:
    """Write the wheel atomically: a temporary file in the target directory, then a rename."""
    import zipfile

    wheel.parent.mkdir(parents=True, exist_ok=True)
    record_name = f"{DISTRIBUTION}-{__version__}.dist-info/RECORD"
    record = [f"{name},sha256={_urlsafe_sha256(data)},{len(data)}" for name, data in files]
    record.append(f"{record_name},,")

    def write(raw: BinaryIO) -> None:
        with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in files:
                archive.writestr(name, data)
            archive.writestr(record_name, "\n".join(record) + "\n")

    write_atomically(wheel, write)


def _urlsafe_sha256(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
