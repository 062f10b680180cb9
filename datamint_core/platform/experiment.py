"""The default experiment of runs started without one: the active Datamint project's.

Registered on MLflow's ``mlflow.default_experiment_provider`` entry point. It is in context
only when a project is set (``set_project``, ``DATAMINT_PROJECT_ID``/``DATAMINT_PROJECT_NAME``
or the config file) and MLflow points at the platform (a ``datamint://`` tracking URI), so
installing the library never changes where anyone else's runs go.
"""

from __future__ import annotations

from mlflow.tracking.default_experiment.abstract_context import DefaultExperimentProvider

from datamint_core import _mlflow_internals
from datamint_core.platform.config import SCHEME
from datamint_core.platform.projects import get_active_project, project_is_set


class DatamintExperimentProvider(DefaultExperimentProvider):
    """Gives runs started without an experiment the project's experiment (named after it)."""

    _experiment_ids: dict[tuple[str, str], str] = {}

    def in_context(self) -> bool:
        """True when a project is set and the tracking URI is the platform's; no network."""
        import mlflow

        return mlflow.get_tracking_uri().startswith(f"{SCHEME}://") and project_is_set()

    def get_experiment_id(self) -> str:
        """Return the project's experiment id, creating the experiment on first use."""
        import mlflow
        from mlflow.tracking import MlflowClient

        project = get_active_project()
        if project is None:  # pragma: no cover - in_context() said a project is set
            raise RuntimeError("no Datamint project is set")
        key = (mlflow.get_tracking_uri(), project.id)
        if key not in self._experiment_ids:
            client = MlflowClient()
            store = _mlflow_internals.tracking_store(client)
            experiment = store.get_experiment_by_name(project.name, project_id=project.id)
            self._experiment_ids[key] = (
                experiment.experiment_id
                if experiment is not None
                else store.create_experiment(project.name, project_id=project.id)
            )
        return self._experiment_ids[key]
