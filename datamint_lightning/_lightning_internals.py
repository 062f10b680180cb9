"""What datamint takes from Lightning beyond its public API: the one place it does so.

Each function or class names what it wraps and why no public hook serves:

- :class:`CheckpointFileEvents`: ``ModelCheckpoint._save_checkpoint``, ``_link_checkpoint``
  and ``_remove_checkpoint``, to hear of every checkpoint *file* written, linked and removed.
- :func:`continue_logger_run`: ``MLFlowLogger._run_id`` and ``_experiment_id``, to point a
  logger that opened a run at another one.
- :func:`follow_mlflow_tracking_uri`: ``MLFlowLogger.__init__``'s ``tracking_uri`` default,
  frozen at import time.

What is public is used directly elsewhere: ``MLFlowLogger.run_id`` / ``experiment_id`` /
``experiment``, ``ModelCheckpoint.best_model_path`` / ``last_model_path`` / ``best_k_models``
/ ``dirpath`` and the ``Callback`` hooks. ``tests/compat/test_lightning_internals.py`` runs a
real Trainer against each item here, so a Lightning release that changes one fails there
(``scripts/compat`` runs it against the newest Lightning).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from typing_extensions import override


class CheckpointFileEvents(ModelCheckpoint):
    """A ``ModelCheckpoint`` that reports each checkpoint file it writes, links or removes.

    Subclasses override :meth:`_checkpoint_file_written` and :meth:`_checkpoint_file_removed`;
    both run on every rank, after the file is in place (or gone).

    Wraps ``ModelCheckpoint._save_checkpoint(trainer, filepath)`` (every file written: top-k,
    ``last``, on exception), ``_link_checkpoint(trainer, filepath, linkpath)`` (``last.ckpt``
    with ``save_last="link"``) and ``_remove_checkpoint(trainer, filepath)`` (top-k rotation,
    the previous ``last``). Why private: Lightning has no public hook that names the file.
    ``Callback.on_save_checkpoint`` runs before the file is written and is not told its path;
    ``Logger.after_save_checkpoint`` is called on loggers only, for saves only, not for links
    or removals; nothing is called when a checkpoint is removed.
    """

    def _checkpoint_file_written(self, trainer: pl.Trainer, filepath: str) -> None:
        """Called once ``filepath`` holds a new checkpoint (saved, or linked to one)."""

    def _checkpoint_file_removed(self, trainer: pl.Trainer, filepath: str) -> None:
        """Called once the checkpoint at ``filepath`` has been removed."""

    @override
    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self._checkpoint_file_written(trainer, filepath)

    # Lightning declares it a staticmethod; called as self._link_checkpoint, an instance
    # method overrides it.
    def _link_checkpoint(  # type: ignore[override]
        self, trainer: pl.Trainer, filepath: str, linkpath: str
    ) -> None:
        super()._link_checkpoint(trainer, filepath, linkpath)
        self._checkpoint_file_written(trainer, linkpath)

    @override
    def _remove_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._remove_checkpoint(trainer, filepath)
        self._checkpoint_file_removed(trainer, filepath)


def continue_logger_run(logger: MLFlowLogger, run_id: str, experiment_id: str) -> None:
    """Make ``logger``, which has opened its run already, log into run ``run_id`` instead.

    Wraps ``MLFlowLogger._run_id`` and ``_experiment_id`` (what its public ``run_id`` and
    ``experiment_id`` return, and where ``log_metrics``, ``log_hyperparams`` and ``finalize``
    write). Why private: ``MLFlowLogger`` takes a run only at construction (``run_id=``), but
    a resumed training learns the checkpoint's run when the checkpoint is read, after the
    logger has opened a fresh one.
    """
    logger.experiment  # noqa: B018  (opens the logger's client and run first, if not yet)
    logger._run_id = run_id
    logger._experiment_id = experiment_id


_FOLLOWS_MLFLOW = "_datamint_follows_mlflow"


def follow_mlflow_tracking_uri() -> None:
    """Make ``MLFlowLogger()`` log where ``mlflow.get_tracking_uri()`` points; idempotent.

    Wraps ``MLFlowLogger.__init__``. Why: Lightning freezes its default ``tracking_uri``
    when its module is imported (``os.getenv("MLFLOW_TRACKING_URI")`` as a default argument)
    and falls back to ``file:./mlruns``, which MLflow 3 refuses; so a logger made after
    ``mlflow.set_tracking_uri`` (or after ``datamint_core`` pointed MLflow at the Datamint
    platform) logs elsewhere than MLflow itself, and Lightning has no hook for the default.
    A logger created without ``tracking_uri`` (and without ``save_dir``, which asks for a file
    store on purpose) gets ``mlflow.get_tracking_uri()`` at creation time: the platform's
    store when configured, else ``MLFLOW_TRACKING_URI``, else the embedded SQLite default.
    ``tests/lightning/test_logger_hook.py`` pins it, one import order per process.
    """
    original = MLFlowLogger.__init__
    if getattr(original, _FOLLOWS_MLFLOW, False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self: MLFlowLogger, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind_partial(self, *args, **kwargs)
        if not bound.arguments.get("tracking_uri") and "save_dir" not in bound.arguments:
            import mlflow

            bound.arguments["tracking_uri"] = mlflow.get_tracking_uri()
        original(*bound.args, **bound.kwargs)

    setattr(__init__, _FOLLOWS_MLFLOW, True)
    MLFlowLogger.__init__ = __init__  # type: ignore[method-assign]
