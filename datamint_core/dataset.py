"""``DatamintMLflowDataset``: a Datamint project split as an MLflow dataset, for lineage.

Logged as a run input (``mlflow.log_input``), it records which resources a model was
trained, validated or tested on::

    name     "<project name>/<split>"
    digest   16 hex characters of a SHA-256 over the resources' fingerprints, sorted, so
             the same resources in any order give the same digest and any change (a
             resource added, removed, its pixels or its descriptor edited) gives a new one
    source   {"project_id", "project_name", "split", "resource_ids", "extra_params"},
             source type ``datamint``
    profile  {"num_resources", "kinds": {"volume": 12, ...}, "modalities": {"CT": 12, ...}}
    schema   the columns of a resource record (id, kind, modality, ...)

A resource given by id only is fingerprinted by its id; a resource object by its descriptor
and its pixel bytes (a file-backed one by the bytes of its file, loaded or not).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from mlflow.data.dataset import Dataset
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import register_dataset_source
from mlflow.types import ColSpec, DataType, Schema

from datamint_core.resources import BaseResource

SOURCE_TYPE = "datamint"
#: What a resource given as a bare id counts as in the profile.
ID_ONLY = "id_only"
_DIGEST_LENGTH = 16
_CHUNK = 1 << 20


class DatamintDatasetSource(DatasetSource):
    """Where a :class:`DatamintMLflowDataset` comes from: a project split and its resources.

    Args:
        project_id: the Datamint project id.
        project_name: the project's name.
        split: ``train``, ``val``, ``test``, ... or ``None`` for the whole project.
        resource_ids: the ids of the split's resources (kept sorted).
        extra_params: anything else that selects or prepares the data (JSON-ready).
    """

    def __init__(
        self,
        project_id: str,
        project_name: str,
        split: str | None = None,
        resource_ids: Sequence[str] = (),
        extra_params: Mapping[str, Any] | None = None,
    ) -> None:
        self.project_id = project_id
        self.project_name = project_name
        self.split = split
        self.resource_ids = sorted(resource_ids)
        self.extra_params = dict(extra_params or {})

    @staticmethod
    def _get_source_type() -> str:
        return SOURCE_TYPE

    def load(self) -> list[str]:
        """The ids of the split's resources (fetch their data with the Datamint client)."""
        return list(self.resource_ids)

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> DatamintDatasetSource:
        raise NotImplementedError("a Datamint source is built from a project, not resolved")

    def to_dict(self) -> dict[str, Any]:
        return {
            "project_id": self.project_id,
            "project_name": self.project_name,
            "split": self.split,
            "resource_ids": self.resource_ids,
            "extra_params": self.extra_params,
        }

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> DatamintDatasetSource:
        return cls(
            project_id=source_dict["project_id"],
            project_name=source_dict["project_name"],
            split=source_dict.get("split"),
            resource_ids=source_dict.get("resource_ids") or (),
            extra_params=source_dict.get("extra_params"),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DatamintDatasetSource) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


class DatamintMLflowDataset(Dataset):
    """MLflow dataset wrapping a Datamint project split, for lineage tracking.

    Example::

        train = DatamintMLflowDataset("proj-1", "Liver CT", "train", train_resources)
        with mlflow.start_run():
            mlflow.log_input(train, context="training")

    Args:
        project_id: the Datamint project id.
        project_name: the project's name.
        split: the split's name (``train``, ``val``, ``test``) or ``None``.
        resources: the split's resources, as ids or as resource objects.
        extra_params: anything else that selects or prepares the data (JSON-ready); it is
            part of the digest.

    Raises:
        TypeError: a resource is neither a string id nor a resource; ``extra_params`` is
            not a JSON-ready dict.
        ValueError: an empty ``project_id`` or ``project_name``, or a resource without an id.
    """

    def __init__(
        self,
        project_id: str,
        project_name: str,
        split: str | None,
        resources: Sequence[str] | Sequence[BaseResource],
        extra_params: dict[str, Any] | None = None,
    ) -> None:
        for label, value in (("project_id", project_id), ("project_name", project_name)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{label}={value!r} is not valid; give a non-empty string.")
        if split is not None and not isinstance(split, str):
            raise TypeError(f"split={split!r} is not valid; give a string such as 'train'.")
        if isinstance(resources, (str, bytes)) or not isinstance(resources, Sequence):
            raise TypeError(
                f"resources must be a sequence of resource ids or resources, got "
                f"{type(resources).__name__}."
            )
        bad = [r for r in resources if not isinstance(r, (str, BaseResource))]
        if bad:
            raise TypeError(
                f"resources must be resource ids (str) or datamint_core resources; got "
                f"{type(bad[0]).__name__} ({len(bad)} such item(s))."
            )
        unnamed = [r for r in resources if isinstance(r, BaseResource) and r.id is None]
        if unnamed:
            raise ValueError(
                f"{len(unnamed)} resource(s) have no id (first: {unnamed[0]!r}); a dataset "
                "records its resources by id, so give each resource an id."
            )
        try:
            params_json = json.dumps(extra_params or {}, sort_keys=True)
        except TypeError as error:
            raise TypeError(f"extra_params must be JSON-ready: {error}") from None
        self.project_id = project_id
        self.project_name = project_name
        self.split = split
        self.resources: list[str | BaseResource] = list(resources)
        self.extra_params = json.loads(params_json)
        ids = [r if isinstance(r, str) else str(r.id) for r in self.resources]
        source = DatamintDatasetSource(project_id, project_name, split, ids, self.extra_params)
        name = f"{project_name}/{split}" if split else project_name
        super().__init__(source=source, name=name)

    def _compute_digest(self) -> str:
        digest = hashlib.sha256()
        header = {
            "project_id": self.project_id,
            "split": self.split,
            "extra_params": self.extra_params,
        }
        digest.update(json.dumps(header, sort_keys=True).encode())
        for fingerprint in sorted(_fingerprint(r) for r in self.resources):
            digest.update(fingerprint.encode())
        return digest.hexdigest()[:_DIGEST_LENGTH]

    @property
    def source(self) -> DatamintDatasetSource:
        return self._source  # type: ignore[return-value]

    @property
    def profile(self) -> dict[str, Any]:
        """Counts: resources, by kind (``image``, ``volume``, ``video``, ``id_only``), modality."""
        kinds = Counter(ID_ONLY if isinstance(r, str) else r.kind for r in self.resources)
        modalities = Counter(
            r.modality for r in self.resources if isinstance(r, BaseResource) and r.modality
        )
        return {
            "num_resources": len(self.resources),
            "kinds": dict(sorted(kinds.items())),
            "modalities": dict(sorted(modalities.items())),
        }

    @property
    def schema(self) -> Schema:
        """The columns of a resource record: ``id`` always, descriptor fields when known."""
        columns = [ColSpec(DataType.string, "id")]
        if any(isinstance(r, BaseResource) for r in self.resources):
            columns += [
                ColSpec(DataType.string, "kind"),
                ColSpec(DataType.string, "modality", required=False),
                ColSpec(DataType.string, "filename", required=False),
                ColSpec(DataType.string, "mimetype", required=False),
            ]
        return Schema(columns)

    def to_dict(self) -> dict[str, str]:
        """MLflow's config dict (name, digest, source, source type) plus schema and profile."""
        config = super().to_dict()
        config.update(
            schema=json.dumps({"mlflow_colspec": self.schema.to_dict()}),
            profile=json.dumps(self.profile),
        )
        return config


def _fingerprint(resource: str | BaseResource) -> str:
    if isinstance(resource, str):
        return hashlib.sha256(b"id\0" + resource.encode()).hexdigest()
    digest = hashlib.sha256()
    described = resource.to_dict(pixel_encoding="none")
    described.pop("path", None)  # where the file lies is not what it holds
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    if resource.path is not None:
        with open(resource.path, "rb") as file:
            for chunk in iter(lambda: file.read(_CHUNK), b""):
                digest.update(chunk)
    else:
        pixels = resource.pixels
        digest.update(f"{pixels.dtype.str}{pixels.shape}".encode())
        digest.update(pixels.tobytes() if not pixels.flags.c_contiguous else pixels.data)
    return digest.hexdigest()


register_dataset_source(DatamintDatasetSource)
