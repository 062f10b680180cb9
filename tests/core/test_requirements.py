"""What a saved model's requirements.txt holds, and how a missing dependency is reported."""

from __future__ import annotations

import pickle
import textwrap
import zipfile
from importlib import metadata as importlib_metadata
from pathlib import Path

import cloudpickle
import mlflow
import pytest
from mlflow.exceptions import MlflowException

import datamint_core
from datamint_core import save_model
from datamint_core._requirements import modules_imported_by, modules_in_pickle, public_version
from datamint_core._wheel import datamint_wheel
from tests.core.sample_models import ThresholdSegmenter

CODE_MODEL = Path(__file__).parent / "code_models" / "threshold_model.py"
WHEEL = f"datamint-{datamint_core.__version__}-py3-none-any.whl"


def requirements_of(model_dir) -> list[str]:
    return (model_dir / "requirements.txt").read_text().split()


def pinned(distribution: str) -> str:
    return f"{distribution}=={public_version(importlib_metadata.version(distribution))}"


def test_the_pickle_is_read_for_module_names_without_unpickling_it():
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    data = pickle.dumps({"model": ThresholdSegmenter(), "trap": Boom()}, protocol=5)
    modules = modules_in_pickle(data)
    assert {"tests.core.sample_models", "builtins"} <= modules
    assert "numpy" not in modules  # the class is pickled by reference, not its imports


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol_names_the_model_class_module(protocol):
    data = pickle.dumps([ThresholdSegmenter(), "text", {"k": (1, 2.0)}], protocol=protocol)
    assert "tests.core.sample_models" in modules_in_pickle(data)


def test_modules_used_by_code_pickled_by_value_are_found():
    import numpy as np

    def by_value(x):
        return np.asarray(x)

    by_value.__module__ = "__main__"  # cloudpickle pickles __main__ functions by value
    assert "numpy" in modules_in_pickle(cloudpickle.dumps(by_value))


def test_imports_are_read_from_the_source_including_relative_and_nested_ones(tmp_path):
    source = tmp_path / "model.py"
    source.write_text(textwrap.dedent("""
        import os, sqlalchemy.orm as orm
        from . import helpers
        from ..shared.nets import UNet

        def late():
            import alembic
    """))
    found = modules_imported_by(source, "project.models.model")
    assert {"os", "sqlalchemy.orm", "project.models.helpers", "project.shared.nets",
            "project.shared.nets.UNet", "alembic"} <= found


def test_a_code_model_gets_what_its_file_and_code_paths_import_transitively(
    tmp_path, monkeypatch
):
    helpers = tmp_path / "helpers"
    helpers.mkdir()
    (helpers / "__init__.py").write_text("from helpers.db import connect\n")
    (helpers / "db.py").write_text("import sqlalchemy\n\ndef connect():\n    return None\n")
    code = tmp_path / "model.py"
    code.write_text("import helpers\n" + CODE_MODEL.read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    save_model(python_model=str(code), path=tmp_path / "m", code_paths=[str(helpers)])

    requirements = requirements_of(tmp_path / "m")
    assert requirements[0] == f"./wheels/{WHEEL}"
    assert pinned("sqlalchemy") in requirements
    assert "cloudpickle" not in " ".join(requirements)  # nothing is unpickled at load


def test_pip_requirements_keep_mlflow_meaning_and_datamint_points_at_the_wheel(tmp_path):
    save_model(
        ThresholdSegmenter(), tmp_path / "m", pip_requirements=["datamint==9.9", "scipy==1.0"]
    )
    # MLflow adds its own pin when none is given, as it does for mlflow.pyfunc.
    assert requirements_of(tmp_path / "m") == [
        f"mlflow=={mlflow.__version__}", f"./wheels/{WHEEL}", "scipy==1.0"
    ]
    assert (tmp_path / "m" / "wheels" / WHEEL).is_file()


def test_an_extra_requirement_replaces_the_inferred_pin_and_a_mismatch_warns_at_load(
    tmp_path, caplog
):
    save_model(ThresholdSegmenter(), tmp_path / "m", extra_pip_requirements=["numpy==1.0.0"])
    requirements = requirements_of(tmp_path / "m")
    assert "numpy==1.0.0" in requirements and pinned("numpy") not in requirements

    datamint_core.load_model(str(tmp_path / "m"))
    assert f"numpy (current: {importlib_metadata.version('numpy')}, required: numpy==1.0.0)" in (
        caplog.text
    )


def test_the_bundled_wheel_is_the_installed_build_and_is_built_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAMINT_CACHE_DIR", str(tmp_path / "cache"))
    save_model(ThresholdSegmenter(), tmp_path / "a")
    built = datamint_wheel()
    first_build = built.stat().st_mtime_ns
    save_model(ThresholdSegmenter(), tmp_path / "b")
    assert datamint_wheel() == built and built.stat().st_mtime_ns == first_build

    with zipfile.ZipFile(tmp_path / "b" / "wheels" / WHEEL) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"datamint-{datamint_core.__version__}.dist-info/METADATA")
        flavor = wheel.read("datamint_core/flavor.py")
    assert "datamint_core/serving/app.py" in names
    assert not any("__pycache__" in name for name in names)
    assert f"Version: {datamint_core.__version__}".encode() in metadata
    assert b"Requires-Dist: mlflow-skinny" in metadata
    assert flavor == Path(datamint_core.flavor.__file__).read_bytes()


def test_loading_a_model_whose_dependency_is_missing_names_it_and_the_install_command(
    tmp_path, run_python
):
    package_dir = tmp_path / "site"
    package_dir.mkdir()
    (package_dir / "lesionstats.py").write_text("def count(mask):\n    return int(mask.sum())\n")
    code = tmp_path / "model.py"
    code.write_text("import lesionstats\n" + CODE_MODEL.read_text())
    run_python(f"""
        import sys
        sys.path.insert(0, {str(package_dir)!r})
        from datamint_core import save_model
        save_model(python_model={str(code)!r}, path={str(tmp_path / "m")!r},
                   extra_pip_requirements=["lesionstats==2.1.0"])
    """)

    failed = run_python(f"""
        from datamint_core import load_model
        load_model({str(tmp_path / "m")!r})
    """, check=False)

    assert failed.returncode != 0
    message = failed.stderr.strip().splitlines()[-1]
    assert "needs the module 'lesionstats', which is not installed here" in message
    assert "provides it with 'lesionstats==2.1.0'" in message
    assert f"pip install -r '{tmp_path / 'm' / 'requirements.txt'}'" in message
    assert "corrupted" not in message


def test_a_missing_model_class_module_is_reported_as_the_model_own_code(tmp_path, run_python):
    (tmp_path / "mymodels.py").write_text(
        "from tests.core.sample_models import ThresholdSegmenter\n\n"
        "class MySegmenter(ThresholdSegmenter):\n    pass\n"
    )
    run_python(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from mymodels import MySegmenter
        from datamint_core import save_model
        save_model(MySegmenter(), {str(tmp_path / "m")!r})
    """)
    with pytest.raises(MlflowException) as caught:
        datamint_core.load_model(str(tmp_path / "m"))
    assert "needs the module 'mymodels'" in caught.value.message
    assert "the model's own code" in caught.value.message
    assert "code_paths" in caught.value.message


def _installed(site: Path, name: str, version: str) -> None:
    """A real installed distribution (its ``.dist-info``) on ``site``."""
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    )


@pytest.mark.parametrize(
    ("installed", "expected"),
    [("2.13.0+cpu", "2.13.0"), ("2.13.0", "2.13.0"), ("1.0.post1+cu121.abi", "1.0.post1")],
)
def test_a_pin_is_the_public_version_whatever_build_label_is_installed(
    tmp_path, monkeypatch, caplog, installed, expected
):
    from datamint_core._requirements import pinned as pin_installed

    _installed(tmp_path, f"labelled-{len(installed)}", installed)
    monkeypatch.syspath_prepend(str(tmp_path))

    with caplog.at_level("WARNING", logger="datamint_core._requirements"):
        line = pin_installed(f"labelled-{len(installed)}")

    assert line == f"labelled-{len(installed)}=={expected}"
    if "+" in installed:  # the dropped label is said, with how to install that build
        assert f"{installed} is installed here" in caplog.text
        assert f"extra_pip_requirements=['labelled-{len(installed)}=={installed}']" in caplog.text
    else:
        assert not caplog.text


def test_a_dropped_pytorch_label_names_the_index_of_that_build_and_the_constraint():
    from datamint_core._requirements import dropped_label_message

    message = dropped_label_message("torch", "2.13.0+cpu")

    assert "pins torch==2.13.0, without the build label +cpu" in message
    assert "is the CUDA one" in message
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in message
    assert "constraint torch==2.13.0+cpu" in message
    assert "https://download.pytorch.org/whl/cu121" in dropped_label_message(
        "torchvision", "0.28.0+cu121"
    )


def test_a_labelled_build_satisfies_its_own_pin_and_the_public_one_at_load(
    tmp_path, monkeypatch, caplog
):
    from datamint_core._requirements import _installed_versions, warn_requirement_mismatches

    _installed(tmp_path / "site", "labelled-build", "3.1.0+cpu")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    _installed_versions.cache_clear()
    try:
        for line in ["labelled-build==3.1.0", "labelled-build==3.1.0+cpu"]:
            (tmp_path / "requirements.txt").write_text(line + "\n")
            with caplog.at_level("WARNING", logger="datamint_core._requirements"):
                warn_requirement_mismatches(str(tmp_path))
            assert "mismatches" not in caplog.text, line
        (tmp_path / "requirements.txt").write_text("labelled-build==3.1.0+cu121\n")
        with caplog.at_level("WARNING", logger="datamint_core._requirements"):
            warn_requirement_mismatches(str(tmp_path))
        assert "labelled-build (current: 3.1.0+cpu, required: labelled-build==3.1.0+cu121)" in (
            caplog.text
        )
    finally:
        _installed_versions.cache_clear()


@pytest.mark.parametrize("from_code", [False, True])
def test_the_default_and_the_saved_requirements_share_one_base_list(from_code: bool) -> None:
    from datamint_core._requirements import base_requirements, requirement_name
    from datamint_core.flavor import get_default_pip_requirements

    base = base_requirements(from_code=from_code)
    assert [requirement_name(r) for r in base] == (
        ["mlflow-skinny", "numpy", "pandas"] + ([] if from_code else ["cloudpickle"])
    )
    assert get_default_pip_requirements(from_code=from_code)[1:] == base
