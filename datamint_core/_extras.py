"""Optional dependencies: import one when a feature needs it, or say which extra installs it.

Importing ``datamint_core`` never fails for a missing extra (httpx's way): only the feature
that needs the package raises :func:`missing_extra`'s ``ImportError``, which names what is
missing and the one command that installs it, ``pip install "datamint[<extra>]"``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: The extra that brings each optional package (by its top-level import name).
EXTRA_OF = {
    "PIL": "images",
    "highdicom": "dicom",
    "lightning": "lightning",
    "mlserver": "mlserver",
    "monai": "train",
    "nibabel": "nifti",
    "pyarrow": "batch",
    "pydicom": "dicom",
    "pyspark": "spark",
    "scipy": "metrics",
    "torch": "torch",
}


def install_command(extra: str) -> str:
    """The command that installs ``extra``: ``pip install "datamint[<extra>]"``."""
    return f'pip install "datamint[{extra}]"'


def missing_extra(needs: str, extra: str, *, module: str | None = None) -> ImportError:
    """The error for a feature whose optional package is not installed.

    Args:
        needs: what needs which package, as a sentence start ("Reading DICOM needs pydicom").
        extra: the extra that installs it.
        module: the missing module's import name (the error's ``name``).

    Example::

        raise missing_extra("The Spark engine needs pyspark", "spark") from None
        # ImportError: The Spark engine needs pyspark, which is not installed:
        #              pip install "datamint[spark]"
    """
    return ImportError(f"{needs}, which is not installed: {install_command(extra)}", name=module)


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise :func:`missing_extra`'s error naming the extra to install.

    Args:
        module: the module (``pydicom``, ``scipy.spatial``, ``pyarrow.parquet``).
        purpose: what needs it, for the message ("Reading DICOM").

    Raises:
        ImportError: the package is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = (error.name or module).split(".")[0]
        if package not in EXTRA_OF:  # a broken install, not a missing extra: say so as it is
            raise
        raise missing_extra(
            f"{purpose} needs the {package!r} package", EXTRA_OF[package], module=package
        ) from None


__all__ = ["EXTRA_OF", "install_command", "missing_extra", "require"]
