"""How linked models are fetched (:class:`LinkSettings`), and the pinned reference each
one is saved as (:class:`LinkedModel`, the MLmodel ``linked_models`` block)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from datamint_core import _env
from datamint_core.artifact_cache import model_key, run_key, store_identity
from datamint_core.linked_models._errors import registry_uri
from datamint_core.linked_models._uris import check_key

_logger = logging.getLogger(__name__)

PYFUNC_FLAVOR = "python_function"


@dataclasses.dataclass(frozen=True)
class LinkSettings:
    """How linked models are fetched; each field defaults to its environment variable."""

    offline_mode: bool = False
    always_pull_artifacts: bool = False
    pull_artifacts_in_offline_mode: bool = False
    cache_dir: str | None = None

    @classmethod
    def from_env(cls, **overrides: Any) -> LinkSettings:
        """Read ``DATAMINT_OFFLINE`` & co.; explicit (non-None) ``overrides`` win."""
        values = {
            "offline_mode": _env.DATAMINT_OFFLINE.get(),
            "always_pull_artifacts": _env.DATAMINT_ALWAYS_PULL_ARTIFACTS.get(),
            "pull_artifacts_in_offline_mode": _env.DATAMINT_PULL_ARTIFACTS_IN_OFFLINE_MODE.get(),
            "cache_dir": None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class LinkedModel:
    """A linked model reference, pinned: what the MLmodel ``linked_models`` block holds.

    Attributes:
        key: the name the parent uses (``get_mlflow_models()[key]``).
        uri: the URI as written (``models:/seg@prod``).
        resolved_uri: the concrete URI it was pinned to (``models:/seg/3``).
        name, version: the registered model and version (registry URIs only).
        run_id, artifact_path: for ``runs:/`` URIs.
        download_uri: where the artifact is stored, when the registry said so.
        store_uri: the store it was pinned against (normalized); offline mode downloads
            ``download_uri`` only for that store.
        flavor: the MLflow flavor it is loaded with (``python_function`` or, through the
            torch extra, ``pytorch``).
    """

    key: str
    uri: str
    resolved_uri: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    artifact_path: str | None = None
    download_uri: str | None = None
    store_uri: str | None = None
    flavor: str = PYFUNC_FLAVOR

    @property
    def is_local(self) -> bool:
        return self.name is None and self.run_id is None

    def configured_store(self) -> str:
        """The store this model is read from now: the registry URI for ``models:/``, the
        tracking URI for ``runs:/`` (normalized; no server is asked)."""
        import mlflow

        if self.name is not None:
            return store_identity(registry_uri())
        if self.run_id is not None:
            return store_identity(mlflow.get_tracking_uri())
        raise ValueError(f"local linked model {self.key!r} comes from no store")

    def cache_key(self, store_uri: str) -> tuple[str, ...]:
        """Its key in the artifact cache, for the store ``store_uri``."""
        if self.name is not None:
            return model_key(store_uri, self.name, str(self.version))
        if self.run_id is not None:
            return run_key(store_uri, self.run_id, str(self.artifact_path))
        raise ValueError(f"local linked model {self.key!r} is not cached")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LinkedModel:
        """Read a pinned record; fields a newer datamint added are ignored with a warning."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            _logger.warning(
                "Linked model %r: ignoring field(s) %s written by a newer datamint.",
                data.get("key"),
                unknown,
            )
        check_key(data.get("key"))
        return cls(**{k: v for k, v in data.items() if k in known})
