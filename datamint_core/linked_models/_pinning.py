"""Pinning: a linked model's URI resolved, once, to a concrete, reproducible reference.

An alias or ``latest`` is resolved to the version it names when the parent is saved; both
are written to the MLmodel ``linked_models`` block, so that every later load reads the same
version whatever the alias points to by then.
"""

from __future__ import annotations

from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, ErrorCode

from datamint_core.artifact_cache import store_identity
from datamint_core.errors import LinkedModelError, LinkedModelNotFoundError
from datamint_core.linked_models._errors import (
    NOT_FOUND_CODE,
    registry_errors,
    registry_uri,
)
from datamint_core.linked_models._reference import PYFUNC_FLAVOR, LinkedModel, LinkSettings
from datamint_core.linked_models._uris import ACCEPTED, parse_uri, subject

#: The codes MLflow's registries answer a missing alias with: the SQL and file stores say
#: ``INVALID_PARAMETER_VALUE`` (as for a malformed alias), so the model's aliases decide.
_ALIAS_LOOKUP_FAILED = frozenset({ErrorCode.Name(INVALID_PARAMETER_VALUE), NOT_FOUND_CODE})


def pin(
    key: str, uri: str, settings: LinkSettings | None = None, flavor: str = PYFUNC_FLAVOR
) -> LinkedModel:
    """Resolve ``uri`` to a concrete, reproducible reference (asks the registry once).

    Raises:
        LinkedModelNotFoundError: unknown model, version or alias.
        TrackingServerUnreachableError: the server did not answer.
        LinkedModelError: an alias or ``latest`` in offline mode (nothing to resolve it with).
    """
    settings = settings or LinkSettings.from_env()
    parsed = parse_uri(key, uri)
    if parsed["kind"] == "local":
        return LinkedModel(key, uri, resolved_uri=parsed["path"], flavor=flavor)
    if parsed["kind"] == "run":
        resolved = f"runs:/{parsed['run_id']}/{parsed['path']}"
        return LinkedModel(
            key,
            uri,
            resolved,
            run_id=parsed["run_id"],
            artifact_path=parsed["path"],
            flavor=flavor,
        )
    name, version, alias = parsed["name"], parsed["version"], parsed["alias"]
    concrete = version is not None and version.isdigit()
    if settings.offline_mode:
        if not concrete:
            raise LinkedModelError(
                f"{subject(key)} ({uri!r}) needs the registry to resolve "
                f"{'alias ' + repr(alias) if alias else repr(version)}, but offline mode is on "
                f"(DATAMINT_OFFLINE). Pin a version (models:/{name}/<n>) or save the parent online."
            )
        return LinkedModel(
            key, uri, f"models:/{name}/{version}", name=name, version=version, flavor=flavor
        )

    from mlflow import MlflowClient

    client = MlflowClient()
    with registry_errors(key, uri):
        if alias is not None:
            found = _version_by_alias(client, key, uri, name, alias)
        elif concrete:
            found = client.get_model_version(name, version)
        elif version == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise LinkedModelNotFoundError(
                    f"{subject(key)} ({uri!r}): registered model {name!r} has no versions "
                    f"on {registry_uri()}."
                )
            found = max(versions, key=lambda mv: int(mv.version))
        else:
            raise MlflowException(
                f"{subject(key)}: {uri!r} names version {version!r}; accepted: {ACCEPTED}.",
                INVALID_PARAMETER_VALUE,
            )
        download_uri = client.get_model_version_download_uri(name, found.version)
    return LinkedModel(
        key,
        uri,
        f"models:/{name}/{found.version}",
        name=name,
        version=str(found.version),
        run_id=found.run_id or None,
        download_uri=download_uri,
        store_uri=store_identity(registry_uri()),
        flavor=flavor,
    )


def _version_by_alias(client: Any, key: str, uri: str, name: str, alias: str) -> Any:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code not in _ALIAS_LOOKUP_FAILED:
            raise
        # Does the model exist (RESOURCE_DOES_NOT_EXIST if not), and lack the alias?
        aliases = client.get_registered_model(name).aliases
        if alias in aliases:
            raise
    raise LinkedModelNotFoundError(
        f"{subject(key)} ({uri!r}): registered model {name!r} has no alias {alias!r} "
        f"on {registry_uri()}; its aliases: {sorted(aliases)}."
    )
