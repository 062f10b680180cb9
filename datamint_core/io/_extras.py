"""Import an optional reader's package, or say which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

#: The extra that brings each optional package.
_EXTRA_OF = {
    "pydicom": "dicom",
    "nibabel": "nifti",
    "PIL": "images",
    "highdicom": "dicom",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise an ``ImportError`` naming the extra to install.

    Args:
        module: the top-level package (``pydicom``, ``nibabel``, ``PIL``, ``highdicom``).
        purpose: what needs it, for the message ("reading DICOM").

    Raises:
        ImportError: the package is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = _EXTRA_OF[module.split(".")[0]]
        raise ImportError(
            f"{purpose} needs the {module.split('.')[0]!r} package, which is not installed: "
            f'pip install "datamint[{extra}]"'
        ) from None
