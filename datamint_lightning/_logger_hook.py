"""Lightning's ``MLFlowLogger`` logs where MLflow points, whatever the import order.

Lightning freezes ``MLFlowLogger``'s default ``tracking_uri`` when its module is imported
(``os.getenv("MLFLOW_TRACKING_URI")`` as a default argument) and falls back to
``file:./mlruns``, which MLflow 3 refuses; so a logger made after ``mlflow.set_tracking_uri``
(or after ``datamint_core`` pointed MLflow at the Datamint platform) logs somewhere else
than MLflow itself. Lightning has no hook for this default, so this module wraps the one
constructor, once: a logger created without ``tracking_uri`` (and without ``save_dir``, which
asks for a file store on purpose) gets ``mlflow.get_tracking_uri()`` at creation time: the
platform's store when configured, else ``MLFLOW_TRACKING_URI``, else the embedded SQLite
default. ``tests/lightning/test_logger_hook.py`` pins this against the installed Lightning.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger

_MARK = "_datamint_follows_mlflow"


def install() -> None:
    """Make ``MLFlowLogger()`` follow ``mlflow.get_tracking_uri()``; idempotent."""
    original = MLFlowLogger.__init__
    if getattr(original, _MARK, False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self: MLFlowLogger, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind_partial(self, *args, **kwargs)
        if not bound.arguments.get("tracking_uri") and "save_dir" not in bound.arguments:
            import mlflow

            bound.arguments["tracking_uri"] = mlflow.get_tracking_uri()
        original(*bound.args, **bound.kwargs)

    setattr(__init__, _MARK, True)
    MLFlowLogger.__init__ = __init__  # type: ignore[method-assign]
