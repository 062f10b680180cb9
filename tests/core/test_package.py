"""What the package promises at import: its public names, and no torch."""

from __future__ import annotations

import importlib.util

import pytest

import datamint_core

# Its outcome depends on what the environment holds (torch, Lightning, the full mlflow).
pytestmark = pytest.mark.both_envs

TORCH_INSTALLED = importlib.util.find_spec("torch") is not None
LIGHTNING_INSTALLED = importlib.util.find_spec("lightning") is not None


def test_public_api_is_exactly_this():
    assert sorted(datamint_core.__all__) == sorted(
        [
            "Box",
            "FewShotExample",
            "LabelPrompts",
            "Point",
            "PromptError",
            "Prompts",
            "Scribble",
            "FLAVOR_NAME",
            "Annotation",
            "AnnotationScope",
            "AnnotationSpec",
            "AnnotationType",
            "ArtifactCache",
            "BaseDatamintModel",
            "BaseResource",
            "BoxAnnotation",
            "CacheError",
            "CacheNotWritableError",
            "CorruptedCacheEntryError",
            "DatamintError",
            "MalformedRequestError",
            "PathNotAllowedError",
            "PlatformAuthError",
            "PlatformConfigError",
            "PlatformRequestError",
            "PlatformUnreachableError",
            "BatchInputError",
            "OutputMismatchError",
            "OutputInUseError",
            "ModelLoadError",
            "InvalidRequestError",
            "ResultShapeError",
            "UnsupportedModeError",
            "PatchResultError",
            "CategoryAnnotation",
            "DatamintDatasetSource",
            "DatamintMLflowDataset",
            "EnvVars",
            "EvaluationInputError",
            "ImageDataset",
            "ImageResource",
            "InputTooLargeError",
            "LineAnnotation",
            "LinkSettings",
            "LinkedModelError",
            "LinkedModelNotFoundError",
            "ModeSpec",
            "ModelSettings",
            "NumericAnnotation",
            "PointAnnotation",
            "PredictionMode",
            "PredictionRouter",
            "ProjectDataError",
            "ProjectNotFoundError",
            "RequestDeadlineExceeded",
            "ResourceError",
            "SegmentationAnnotation",
            "TaskType",
            "TextAnnotation",
            "TrackingServerUnreachableError",
            "ValidationReport",
            "VideoResource",
            "VolumeResource",
            "WrappedModel",
            "__version__",
            "ensure_mlflow_configured",
            "load_model",
            "log_model",
            "prediction_mode",
            "request_limits",
            "save_model",
            "set_project",
            "setup_mlflow_environment",
            "validate_model",
        ]
    )
    assert all(hasattr(datamint_core, name) for name in datamint_core.__all__)


def test_every_error_a_user_can_catch_is_exported_and_a_standard_exception():
    from datamint_core import errors, routing, sliding_window

    assert datamint_core.InvalidRequestError is routing.InvalidRequestError
    assert issubclass(datamint_core.UnsupportedModeError, datamint_core.InvalidRequestError)
    assert issubclass(datamint_core.UnsupportedModeError, NotImplementedError)
    assert issubclass(datamint_core.PromptError, datamint_core.InvalidRequestError)
    assert datamint_core.PatchResultError is sliding_window.PatchResultError
    for name in ("InvalidRequestError", "ResultShapeError", "PatchResultError",
                 "ResourceError", "InputTooLargeError"):
        assert issubclass(getattr(datamint_core, name), ValueError), name
    assert issubclass(datamint_core.CorruptedCacheEntryError, datamint_core.CacheError)
    assert issubclass(datamint_core.CacheNotWritableError, PermissionError)
    assert issubclass(datamint_core.LinkedModelNotFoundError, LookupError)
    assert issubclass(datamint_core.RequestDeadlineExceeded, TimeoutError)
    # One module holds them all, each exported by its own name and each a DatamintError
    # that is also a standard exception.
    public = errors.public_errors()
    assert {error.__name__ for error in public} <= set(datamint_core.__all__)
    for error in public:
        assert getattr(datamint_core, error.__name__) is error
        assert error.__module__ == "datamint_core.errors", error
        assert issubclass(error, datamint_core.DatamintError)
        standard = [base for base in error.__mro__
                    if base.__module__ == "builtins" and base not in (Exception, BaseException,
                                                                      object)]
        assert standard or error is datamint_core.DatamintError, error


def test_every_public_error_carries_its_http_status_and_a_stable_error_code():
    from datamint_core import errors

    for error in errors.public_errors():
        assert isinstance(error.http_status, int) and 400 <= error.http_status < 600, error
        assert error.error_code.isupper() and error.error_code.replace("_", "").isalpha(), error
    # The module's docstring table lists each, with its status and code.
    rows = {line.split()[0]: line.split() for line in errors.__doc__.splitlines()
            if line.split() and line.split()[0] in {e.__name__ for e in errors.public_errors()}}
    for error in errors.public_errors():
        row = rows.get(error.__name__)
        assert row and row[-2:] == [str(error.http_status), error.error_code], (error, row)
    # The client's fault is a 4xx; the model's, the server's or a service's is a 5xx.
    assert datamint_core.InvalidRequestError.http_status == 422
    assert datamint_core.MalformedRequestError.http_status == 400
    assert datamint_core.PathNotAllowedError.http_status == 403
    assert datamint_core.InputTooLargeError.http_status == 413
    assert datamint_core.RequestDeadlineExceeded.http_status == 504
    assert datamint_core.ResultShapeError.http_status == 500
    assert datamint_core.TrackingServerUnreachableError.http_status == 503


def test_every_error_module_in_the_product_is_the_errors_module():
    # A new error class elsewhere would be one users catch by a private path.
    import ast
    from pathlib import Path

    roots = [Path(datamint_core.__file__).parent]
    for extra in ("datamint_torch", "datamint_lightning"):
        spec = importlib.util.find_spec(extra)
        if spec is not None and spec.origin is not None:
            roots.append(Path(spec.origin).parent)
    elsewhere = []
    for root in roots:
        for path in root.rglob("*.py"):
            if path.name == "errors.py" and path.parent == roots[0]:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and any(
                    isinstance(base, ast.Name) and base.id.endswith(("Error", "Exception"))
                    for base in node.bases
                ):
                    elsewhere.append(f"{path.relative_to(root.parent)}:{node.name}")
    # Neither of these reaches a Python caller: the command line's usage error becomes exit
    # code 2, the server's refusal an HTTP answer.
    assert sorted(elsewhere) == [
        "datamint_core/cli.py:UsageError",
        "datamint_core/serving/payload.py:RequestError",
    ], (
        "Define errors users can catch in datamint_core/errors.py (with http_status and "
        f"error_code) and export them from datamint_core: {elsewhere}"
    )


def test_importing_the_core_never_imports_torch_or_lightning(run_python):
    # Meaningful in the full environment, where torch IS installed and importable.
    out = run_python(
        "import sys, datamint_core, datamint_core.flavor, datamint_core.validation\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'lightning', 'pytorch_lightning', 'datamint_torch', 'datamint_lightning')))"
    )
    assert out.strip() == "[]"


def test_the_model_reaches_linked_models_through_the_hook_imported_on_first_use(run_python):
    # The model (domain) never imports datamint_core.linked_models (integration, which
    # imports MLflow): `import datamint_core` leaves both out, and a model that links
    # another reaches the integration layer's checks through datamint_core._extensions.
    out = run_python(
        """
        import sys, datamint_core
        print(sorted(m for m in ("mlflow", "datamint_core.linked_models") if m in sys.modules))
        from datamint_core import BaseDatamintModel
        from datamint_core._extensions import linked_model_support
        from mlflow.exceptions import MlflowException

        class Model(BaseDatamintModel):
            def predict_default(self, model_input, **kwargs):
                return [[] for _ in model_input]

        try:
            Model(mlflow_models_uri={"detector": "models:/detector/prod"})
        except MlflowException as error:
            print(error.error_code, "Stages are not supported" in error.message)
        print(Model(mlflow_models_uri={"detector": "models:/detector@prod"}).mlflow_models_uri)
        from datamint_core import linked_models
        print(linked_model_support() is linked_models.MODEL_SUPPORT)
        """
    )
    assert out.splitlines() == [
        "[]",
        "INVALID_PARAMETER_VALUE True",
        "{'detector': 'models:/detector@prod'}",
        "True",
    ]


def test_the_core_source_never_names_torch_or_the_extras_in_an_import():
    import ast
    from pathlib import Path

    forbidden = {"torch", "lightning", "pytorch_lightning", "datamint_torch", "datamint_lightning"}
    offenders = []
    for path in Path(datamint_core.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in forbidden]
    assert offenders == []


@pytest.mark.skipif(TORCH_INSTALLED, reason="checks the message shown when torch is missing")
def test_importing_the_torch_extra_without_torch_names_the_install_command():
    with pytest.raises(ImportError, match=r'pip install "datamint\[torch\]"'):
        import datamint_torch  # noqa: F401


@pytest.mark.skipif(
    LIGHTNING_INSTALLED, reason="checks the message shown when lightning is missing"
)
def test_importing_the_lightning_extra_without_lightning_names_the_install_command():
    with pytest.raises(ImportError, match=r'pip install "datamint\[lightning\]"'):
        import datamint_lightning  # noqa: F401
