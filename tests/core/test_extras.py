"""The one "needs the extra" ImportError (datamint_core._extras), and that every feature uses it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import datamint_core
from datamint_core._extras import install_command, missing_extra, require


def test_missing_extra_says_what_is_missing_and_the_command_that_installs_it() -> None:
    error = missing_extra("The Spark engine needs pyspark", "spark", module="pyspark")
    assert isinstance(error, ImportError)
    assert error.name == "pyspark"
    assert str(error) == (
        'The Spark engine needs pyspark, which is not installed: pip install "datamint[spark]"'
    )
    assert install_command("dicom") == 'pip install "datamint[dicom]"'


@pytest.mark.parametrize(
    ("blocked", "code", "message"),
    [
        (
            "pyarrow",
            "from datamint_core.batch._store import require_pyarrow; require_pyarrow()",
            "Batch output (Parquet) needs the 'pyarrow' package, which is not installed: "
            'pip install "datamint[batch]"',
        ),
        (
            "pyspark",
            "from datamint_core.batch._spark import require_pyspark; require_pyspark()",
            "The Spark engine needs the 'pyspark' package, which is not installed: "
            'pip install "datamint[spark]"',
        ),
        (
            "torch",
            "import datamint_torch",
            'datamint_torch needs PyTorch, which is not installed: pip install "datamint[torch]"',
        ),
        (
            "lightning",
            "import datamint_lightning",
            "datamint_lightning needs Lightning, which is not installed: "
            'pip install "datamint[lightning]"',
        ),
        (
            "pydicom",
            "from datamint_core._extras import require; require('highdicom', 'Writing DICOM SEG')",
            "Writing DICOM SEG needs the 'pydicom' package, which is not installed: "
            'pip install "datamint[dicom]"',
        ),
    ],
)
def test_a_feature_whose_package_is_missing_names_it_and_its_extra(
    run_python, blocked: str, code: str, message: str
) -> None:
    out = run_python(
        f"""
        import sys
        sys.modules[{blocked!r}] = None  # as if the package were not installed
        try:
            {code}
        except ImportError as error:
            print(error)
        """
    )
    assert out.strip() == message


def test_a_module_outside_the_extras_fails_as_it_is() -> None:
    with pytest.raises(ModuleNotFoundError, match="no_such_module_for_datamint"):
        require("no_such_module_for_datamint", "Testing")


def test_no_product_module_spells_the_install_command_itself() -> None:
    """The command ``pip install "datamint[...]"`` is written once, in ``_extras``; docstrings
    may quote it."""
    root = Path(datamint_core.__file__).parent.parent
    offenders = []
    for package in ("datamint_core", "datamint_torch", "datamint_lightning"):
        for path in sorted((root / package).rglob("*.py")):
            if path.name == "_extras.py":
                continue
            tree = ast.parse(path.read_text())
            docstrings = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                and node.body
                and isinstance(node.body[0], ast.Expr)
                and isinstance(node.body[0].value, ast.Constant)
            }
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and "pip install" in node.value
                    and "datamint[" in node.value
                    and id(node) not in docstrings
                ):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
