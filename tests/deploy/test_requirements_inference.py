"""Our requirement inference finds at least what MLflow's own finds, in a fraction of its time.

MLflow infers by loading the saved model in a subprocess and mapping every module it
imported to a distribution (``mlflow.utils.requirements_utils._infer_requirements``). We
run that on the very directories ``save_model`` wrote and compare.

MLflow's known over-inclusions, ignored here:

- ``mlflow`` (the full package): MLflow names itself; the model only needs the
  ``mlflow-skinny`` we pin, which provides the same ``mlflow`` module.
- ``tqdm``: imported while loading by the full ``mlflow`` package (``mlflow.genai``'s
  simulators) and by ``torch.hub``, each only because it happens to be installed; the model
  never uses it.
- ``pyspark``: ``mlflow.types.schema`` imports it whenever it is installed (the ``[spark]``
  extra of the test environment); a model that does not use Spark does not need it.

Requirements are compared as (canonical name, public version): which build of a release
(``torch==2.13.0+cpu`` or ``torch==2.13.0``) the index picks is the installing
environment's choice (README, "Local version labels"), and MLflow keeps or drops the label
depending on the installed ``packaging``.
"""

from __future__ import annotations

import textwrap
import time

import pytest
from mlflow.utils.requirements_utils import _infer_requirements
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from datamint_core import save_model

pytestmark = pytest.mark.deploy

MLFLOW_OVER_INCLUSIONS = {"mlflow", "tqdm", "pyspark"}


def canonical_pins(lines) -> set[tuple[str, Version]]:
    """``{(canonical name, public version)}`` of ``name==version`` requirement lines
    (``1.5`` and ``1.5.0`` are one version)."""
    pins = set()
    for line in lines:
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", line
        pins.add((canonicalize_name(requirement.name), Version(Version(specifier.version).public)))
    return pins


def _saved_and_inferred(model_dir) -> tuple[set[tuple[str, Version]], set[tuple[str, Version]]]:
    ours = canonical_pins(
        line
        for line in (model_dir / "requirements.txt").read_text().split()
        if not line.startswith("./wheels/")
    )
    theirs = canonical_pins(
        _infer_requirements(str(model_dir), "python_function", raise_on_error=True)
    )
    return ours, {(name, v) for name, v in theirs if name not in MLFLOW_OVER_INCLUSIONS}


def test_pins_compare_by_canonical_name_and_public_version_whatever_the_build_label():
    assert canonical_pins(["Torch==2.13.0+cpu", "scikit_learn==1.5"]) == canonical_pins(
        ["torch==2.13.0", "scikit-learn==1.5.0"]
    )
    assert canonical_pins(["torch==2.13.0+cu121"]) != canonical_pins(["torch==2.13.1"])


def test_a_numpy_only_model_pins_everything_mlflow_infers(tmp_path):
    from tests.core.sample_models import ThresholdSegmenter

    save_model(ThresholdSegmenter(), tmp_path / "m")
    ours, theirs = _saved_and_inferred(tmp_path / "m")
    assert theirs <= ours, f"MLflow found {sorted(theirs - ours)} that we did not"
    assert "torch" not in {name for name, _ in ours}


def test_a_torch_model_pins_torch_and_everything_mlflow_infers(tmp_path):
    torch = pytest.importorskip("torch")
    from tests.torch.cnn_models import CnnSegmenter, TinyUNet

    save_model(CnnSegmenter(torch_model=TinyUNet()), tmp_path / "m")
    ours, theirs = _saved_and_inferred(tmp_path / "m")
    assert "torch" in {name for name, _ in theirs}
    assert ("torch", Version(Version(torch.__version__).public)) in ours
    assert theirs <= ours, f"MLflow found {sorted(theirs - ours)} that we did not"


def test_a_model_importing_an_extra_package_pins_it_and_is_much_faster_than_mlflow(
    tmp_path, monkeypatch
):
    pytest.importorskip("scipy")
    package = tmp_path / "lesions"
    package.mkdir()
    (package / "__init__.py").write_text("from lesions.model import BlobCounter\n")
    # The class's module imports scipy only through a sibling module: found transitively.
    (package / "model.py").write_text(textwrap.dedent("""
        from datamint_core import BaseDatamintModel, NumericAnnotation
        from .post import count_blobs

        class BlobCounter(BaseDatamintModel):
            def predict_image(self, model_input, **kwargs):
                return [[NumericAnnotation("blobs", count_blobs(r.pixels))] for r in model_input]
    """))
    (package / "post.py").write_text(
        "from scipy import ndimage\n\n"
        "def count_blobs(pixels):\n    return float(ndimage.label(pixels > 0.5)[1])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from lesions import BlobCounter

    save_model(BlobCounter(), tmp_path / "warm-up", code_paths=[str(package)])
    started = time.perf_counter()
    save_model(BlobCounter(), tmp_path / "m", code_paths=[str(package)])
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    ours, theirs = _saved_and_inferred(tmp_path / "m")
    mlflow_seconds = time.perf_counter() - started

    assert "scipy" in {name for name, _ in theirs}
    assert theirs <= ours, f"MLflow found {sorted(theirs - ours)} that we did not"
    assert ours_seconds < mlflow_seconds / 4, (ours_seconds, mlflow_seconds)
