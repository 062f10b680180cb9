"""Linked models: other MLflow models a Datamint model loads at serve time.

A model names them as ``{"detector": "models:/lung-detector@prod", ...}``. Accepted URIs:
``models:/<name>/<version>``, ``models:/<name>@<alias>``, ``models:/<name>/latest``,
``runs:/<run_id>/<path>`` and local paths.

When the parent is saved, every reference is *pinned*: an alias or ``latest`` is resolved
to the concrete version once, and both are written to the MLmodel ``linked_models`` block.
At load time each pinned model is found, in this order:

1. a copy bundled inside the parent's directory (``save_model(bundle_linked_models=True)``);
2. the local artifact cache (:mod:`datamint_core.artifact_cache`), checksums verified,
   under the configured store (the registry URI for ``models:/``, the tracking URI for
   ``runs:/``): an entry another store filled is never used;
3. the tracking server, downloading into the cache (never in offline mode).

A located model is *held* (:func:`hold_located`) while it loads: a concurrent
``ArtifactCache.clear()`` in any process waits until the load is done.

Offline mode (``DATAMINT_OFFLINE=true``) makes no server call: a model missing from the
bundle and the cache is an error naming it, the store and the cache directory, and saying
so when the cache holds that name and version from another store only.
``DATAMINT_ALWAYS_PULL_ARTIFACTS`` re-downloads even on a cache hit;
``DATAMINT_PULL_ARTIFACTS_IN_OFFLINE_MODE`` lets offline mode download artifacts whose
storage location was recorded at pinning time, without asking the registry anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from datamint_core import _env, _extensions
from datamint_core._mlmodel import read_flavors
from datamint_core.artifact_cache import (
    ArtifactCache,
    CacheEntry,
    model_key,
    run_key,
    store_identity,
)
from datamint_core.errors import (
    CacheError,
    CacheNotWritableError,
    CorruptedCacheEntryError,
    LinkedModelError,
    LinkedModelNotFoundError,
    TrackingServerUnreachableError,
)

_logger = logging.getLogger(__name__)

PYFUNC_FLAVOR = "python_function"

#: Name under which bundled linked models travel as an MLflow pyfunc artifact.
BUNDLE_ARTIFACT = "datamint.linked_models"
#: model_config key holding the pinned references, so that load_context can read them.
LINKED_MODELS_CONFIG_KEY = "datamint_linked_models"

#: The key under which the top-level model goes through pinning and the cache.
TOP_LEVEL_KEY = "<model>"

_ACCEPTED = (
    "models:/<name>/<version>, models:/<name>@<alias>, models:/<name>/latest, "
    "runs:/<run_id>/<path>, or a local model directory"
)
_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))$")
_RUNS_URI = re.compile(r"^runs:/(?P<run_id>[0-9a-zA-Z_-]+)/(?P<path>.+)$")


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
            return store_identity(mlflow.get_registry_uri())
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
        _check_key(data.get("key"))
        return cls(**{k: v for k, v in data.items() if k in known})


def _check_key(key: Any) -> None:
    if not isinstance(key, str) or not key or "/" in key or "\\" in key or key.startswith("."):
        raise MlflowException(
            f"Linked model name {key!r} is not valid: use a non-empty string without '/' or "
            "'\\' that does not start with '.'.",
            INVALID_PARAMETER_VALUE,
        )


def check_linked_uris(uris: Mapping[str, str] | None) -> dict[str, str]:
    """Validate a ``{key: uri}`` mapping given to a model.

    Raises:
        MlflowException: ``INVALID_PARAMETER_VALUE`` for a non-string key or a malformed URI.
    """
    if uris is None:
        return {}
    if not isinstance(uris, Mapping):
        raise MlflowException(
            f"mlflow_models_uri must be a dict of name -> model URI, got {type(uris).__name__}.",
            INVALID_PARAMETER_VALUE,
        )
    for key, uri in uris.items():
        _check_key(key)
        _parse(key, uri)
    return dict(uris)


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
    parsed = _parse(key, uri)
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
                f"{_subject(key)} ({uri!r}) needs the registry to resolve "
                f"{'alias ' + repr(alias) if alias else repr(version)}, but offline mode is on "
                f"(DATAMINT_OFFLINE). Pin a version (models:/{name}/<n>) or save the parent online."
            )
        return LinkedModel(
            key, uri, f"models:/{name}/{version}", name=name, version=version, flavor=flavor
        )

    from mlflow import MlflowClient

    client = MlflowClient()
    with _registry_errors(key, uri, name):
        if alias is not None:
            found = _version_by_alias(client, key, uri, name, alias)
        elif concrete:
            found = client.get_model_version(name, version)
        elif version == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise LinkedModelNotFoundError(
                    f"{_subject(key)} ({uri!r}): registered model {name!r} has no versions "
                    f"on {_registry()}."
                )
            found = max(versions, key=lambda mv: int(mv.version))
        else:
            raise MlflowException(
                f"{_subject(key)}: {uri!r} names version {version!r}; accepted: {_ACCEPTED}.",
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
        store_uri=store_identity(_registry()),
        flavor=flavor,
    )


@contextlib.contextmanager
def hold_located(
    linked: LinkedModel, *, bundle_dir: str | None = None, settings: LinkSettings | None = None
) -> Iterator[Path]:
    """A local directory holding ``linked`` (bundled copy, else cache, else server), kept in
    place until the block ends: a cache entry is held (:meth:`ArtifactCache.hold`), so a
    concurrent ``clear()`` in any process waits for the block.

    Raises:
        LinkedModelNotFoundError: not a model directory; not cached in offline mode (naming
            the store, and any other store the cache holds it from).
        LinkedModelError: a corrupted entry in offline mode.
        CacheNotWritableError: a download is needed and the cache cannot be written.
    """
    settings = settings or LinkSettings.from_env()
    if bundle_dir is not None:
        bundled = Path(bundle_dir) / linked.key
        if bundled.is_dir():
            yield bundled
            return
    if linked.is_local:
        path = Path(linked.resolved_uri).expanduser()
        if not (path / "MLmodel").is_file():
            raise LinkedModelNotFoundError(
                f"{_subject(linked.key)}: {linked.resolved_uri!r} is not an MLflow model "
                "directory (no MLmodel file)."
            )
        yield path
        return

    cache = ArtifactCache(settings.cache_dir)
    store = linked.configured_store()
    key = linked.cache_key(store)
    offline = settings.offline_mode
    pull = (
        settings.pull_artifacts_in_offline_mode
        and linked.download_uri is not None
        and linked.store_uri in (None, store)  # recorded for this store, or before stores
    )
    source = linked.download_uri if offline else linked.resolved_uri
    allow_download = not offline or pull
    with contextlib.ExitStack() as held:
        with _cache_errors(linked, cache, key, store, downloads_allowed=allow_download):
            path = held.enter_context(
                cache.hold(
                    key,
                    lambda into: _download(linked, source or linked.resolved_uri, into),
                    source_uri=linked.resolved_uri,
                    store_uri=store,
                    refresh=settings.always_pull_artifacts and not offline,
                    allow_download=allow_download,
                )
            )
        yield path


@contextlib.contextmanager
def _cache_errors(
    linked: LinkedModel,
    cache: ArtifactCache,
    key: tuple[str, ...],
    store: str,
    *,
    downloads_allowed: bool,
) -> Iterator[None]:
    """The cache's errors, said of ``linked``: which model, which store, what to do."""
    try:
        yield
    except CorruptedCacheEntryError as error:
        if downloads_allowed:
            raise
        raise LinkedModelError(
            f"{_subject(linked.key)} ({linked.resolved_uri}): {error}. Offline mode is on, "
            "so it cannot be downloaded again; turn offline mode off once, or restore the cache."
        ) from error
    except CacheNotWritableError:
        raise
    except CacheError:
        if downloads_allowed:  # the entry kept vanishing while being held: said as it is
            raise
        missing = (
            f"{_subject(linked.key)} ({linked.resolved_uri}) is not in the artifact cache "
            f"at {cache.root} for the store {store}, and offline mode (DATAMINT_OFFLINE) forbids "
            "downloading it."
        )
        others = cache.elsewhere(key)
        if others:
            raise LinkedModelNotFoundError(
                f"{missing} The cache holds {linked.resolved_uri} only from "
                f"{_described_stores(others)}; an entry is never used for another store, "
                "since the same name and version there may be a different model. Point "
                f"{'MLFLOW_REGISTRY_URI' if linked.name else 'MLFLOW_TRACKING_URI'} at the "
                "store it came from to use it, or fill the cache online for this store."
            ) from None
        raise LinkedModelNotFoundError(
            f"{missing} Fill the cache online first, export one (ArtifactCache.export)"
            + (
                ", or bundle the linked models into the parent (bundle_linked_models=True)."
                if linked.key != TOP_LEVEL_KEY
                else "."
            )
        ) from None


def _described_stores(entries: list[CacheEntry]) -> str:
    stores = sorted({entry.store_uri for entry in entries if entry.store_uri is not None})
    described = [f"the store {store}" for store in stores]
    if any(entry.store_uri is None for entry in entries):
        described.append("an entry cached by an older datamint that did not record its store")
    return " and ".join(described)


@contextlib.contextmanager
def held_model_dir(model_uri: str, settings: LinkSettings | None = None) -> Iterator[str]:
    """A local directory holding the model at ``model_uri``, through the artifact cache,
    kept in place until the block ends.

    The top-level model is found like a linked one: ``models:/`` and ``runs:/`` URIs are
    pinned, then served from the cache entry of the configured store (a second load
    downloads nothing; offline mode needs no server) or downloaded into it once; a local
    directory is used in place. Other URIs (``s3://``, ``models:/m-<logged model id>``,
    ...) are downloaded by MLflow into a temporary directory.

    Example::

        with held_model_dir("models:/liver-seg/1") as model_dir:
            model = load_from(model_dir)  # a concurrent cache clear waits for this

    Raises:
        LinkedModelNotFoundError: unknown model, or not cached in offline mode.
        TrackingServerUnreachableError: the server did not answer.
    """
    if os.path.isdir(model_uri):
        yield model_uri
        return
    cacheable = (
        _REGISTRY_URI.match(model_uri) or _RUNS_URI.match(model_uri)
    ) is not None or model_uri.startswith("file:")
    if not cacheable:  # other schemes, and MLflow 3's logged-model URIs (models:/m-<id>)
        from mlflow.tracking.artifact_utils import _download_artifact_from_uri

        with _env.mlflow_progress_bar_only_on_a_terminal():
            downloaded = _download_artifact_from_uri(model_uri)
        yield downloaded
        return
    reference = pin(TOP_LEVEL_KEY, model_uri, settings)
    with hold_located(reference, settings=settings) as path:
        yield os.fspath(path)


def load_linked_models(
    linked: Mapping[str, LinkedModel],
    *,
    device: str | None,
    bundle_dir: str | None = None,
    settings: LinkSettings | None = None,
    loaders: Mapping[str, Callable[[Path, str | None], Any]] | None = None,
) -> dict[str, Any]:
    """Locate and load every linked model with the loader of its flavor.

    Args:
        loaders: ``{flavor: loader(path, device)}``; ``python_function`` is always known.

    Raises:
        LinkedModelError: a linked model of a flavor no loader handles, or a located model
            that does not have the flavor it was linked as.
    """
    settings = settings or LinkSettings.from_env()
    known = {PYFUNC_FLAVOR: load_pyfunc_on_device, **(loaders or {})}
    loaded = {}
    for key, reference in linked.items():
        if reference.flavor not in known:
            raise LinkedModelError(
                f"{_subject(key)} is a {reference.flavor!r} model; loading it needs an "
                f"extra (known flavors here: {sorted(known)})."
            )
        # A cached entry stays in place while it loads, even if another process clears
        # the cache meanwhile.
        with hold_located(reference, bundle_dir=bundle_dir, settings=settings) as path:
            flavors = read_flavors(path)
            if reference.flavor not in flavors:
                raise LinkedModelError(
                    f"{_subject(key)} ({reference.uri!r}) is not a {reference.flavor} model: "
                    f"its flavors are {sorted(flavors)}."
                )
            loaded[key] = known[reference.flavor](path, device)
    return loaded


def load_for_model(
    uris: Mapping[str, tuple[str, str]],
    *,
    context: Any,
    device: str,
    loaders: Mapping[str, Callable[[Path, str | None], Any]],
) -> dict[str, Any]:
    """Load a model's linked models ``{key: (uri, flavor)}``: pinned as saved in
    ``context.model_config`` (a key saved unpinned, or no ``context``, is pinned now), from
    the bundle in ``context.artifacts`` when there is one."""
    config = getattr(context, "model_config", None) or {}
    records = config.get(LINKED_MODELS_CONFIG_KEY) if isinstance(config, dict) else None
    pinned = {key: LinkedModel.from_dict(record) for key, record in (records or {}).items()}
    links = {
        key: pinned[key] if key in pinned else pin(key, uri, flavor=flavor)
        for key, (uri, flavor) in uris.items()
    }
    bundle_dir = (getattr(context, "artifacts", None) or {}).get(BUNDLE_ARTIFACT)
    return load_linked_models(links, device=device, bundle_dir=bundle_dir, loaders=loaders)


#: What :class:`~datamint_core.model.BaseDatamintModel` calls, through the hook.
MODEL_SUPPORT = _extensions.LinkedModelSupport(check_uris=check_linked_uris, load=load_for_model)
_extensions.register_linked_model_support(MODEL_SUPPORT)


def load_pyfunc_on_device(path: Path, device: str | None) -> Any:
    """``mlflow.pyfunc.load_model``, passing the device to models that accept one."""
    import mlflow

    config = {"device": device} if device and _accepts_device(path) else None
    return mlflow.pyfunc.load_model(os.fspath(path), model_config=config)


def stage_bundle(
    linked: Mapping[str, LinkedModel], staging_dir: Path, settings: LinkSettings | None = None
) -> Path:
    """Copy every linked model to ``staging_dir/linked_models/<key>`` for bundling.

    MLflow then moves this directory into the saved model (``artifacts/linked_models``) and
    hands its path to ``load_context``. Hard links are used where the file system allows,
    since MLflow refuses symbolic links that point outside the directory.
    """
    bundle = staging_dir / "linked_models"
    bundle.mkdir(parents=True)
    for key, reference in linked.items():
        with hold_located(reference, settings=settings) as located:
            shutil.copytree(located, bundle / key, copy_function=_link_or_copy)
    return bundle


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _version_by_alias(client: Any, key: str, uri: str, name: str, alias: str) -> Any:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if "not found" not in error.message.lower():
            raise
    known = sorted(client.get_registered_model(name).aliases)  # the model itself exists?
    raise LinkedModelNotFoundError(
        f"{_subject(key)} ({uri!r}): registered model {name!r} has no alias {alias!r} "
        f"on {_registry()}; its aliases: {known}."
    )


def _download(linked: LinkedModel, source: str, into: Path) -> Path:
    import mlflow

    with (
        _env.mlflow_progress_bar_only_on_a_terminal(),
        _server_errors(linked.key, linked.resolved_uri),
    ):
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(into)))


def _parse(key: str, uri: Any) -> dict[str, Any]:
    if not isinstance(uri, str) or not uri.strip():
        raise MlflowException(
            f"{_subject(key)}: URI {uri!r} is not valid; accepted: {_ACCEPTED}.",
            INVALID_PARAMETER_VALUE,
        )
    if uri.startswith("models:"):
        match = _REGISTRY_URI.match(uri)
        if match is None:
            raise MlflowException(
                f"{_subject(key)}: {uri!r} is not a valid model URI; accepted: {_ACCEPTED}.",
                INVALID_PARAMETER_VALUE,
            )
        version = match["version"]
        if version is not None and not (version.isdigit() or version == "latest"):
            raise MlflowException(
                f"{_subject(key)}: {uri!r} names version {version!r}; use a number, "
                "'latest' or an alias (models:/<name>@<alias>). Stages are not supported.",
                INVALID_PARAMETER_VALUE,
            )
        return {"kind": "registry", **match.groupdict()}
    if uri.startswith("runs:"):
        match = _RUNS_URI.match(uri)
        if match is None:
            raise MlflowException(
                f"{_subject(key)}: {uri!r} is not a valid runs URI; accepted: {_ACCEPTED}.",
                INVALID_PARAMETER_VALUE,
            )
        return {"kind": "run", **match.groupdict()}
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", uri) and not uri.startswith("file://"):
        raise MlflowException(
            f"{_subject(key)}: URI scheme of {uri!r} is not supported; accepted: {_ACCEPTED}.",
            INVALID_PARAMETER_VALUE,
        )
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    return {"kind": "local", "path": os.path.abspath(os.path.expanduser(path))}


def _subject(key: str) -> str:
    """How errors name a model: the top-level one, or a linked one by its key."""
    return "Model" if key == TOP_LEVEL_KEY else f"Linked model {key!r}"


def _subject_lower(key: str) -> str:
    return "the model" if key == TOP_LEVEL_KEY else f"linked model {key!r}"


def _accepts_device(path: Path) -> bool:
    config = read_flavors(path).get(PYFUNC_FLAVOR, {}).get("config") or {}
    return "device" in config


def _registry() -> str:
    import mlflow

    return mlflow.get_registry_uri()


@contextlib.contextmanager
def _registry_errors(key: str, uri: str, name: str) -> Iterator[None]:
    with _server_errors(key, uri):
        try:
            yield
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise LinkedModelNotFoundError(
                f"{_subject(key)} ({uri!r}) does not exist on {_registry()}: {error.message}"
            ) from None


@contextlib.contextmanager
def _server_errors(key: str, uri: str) -> Iterator[None]:
    try:
        yield
    except LinkedModelError:
        raise
    except Exception as error:
        if not _is_connection_error(error):
            raise
        raise TrackingServerUnreachableError(
            f"Cannot reach the tracking server at {_registry()} for {_subject_lower(key)} "
            f"({uri!r}): {type(error).__name__}. Start the server, or run offline "
            f"(DATAMINT_OFFLINE=true) with the model in the artifact cache, or save the parent "
            "with bundle_linked_models=True."
        ) from error


def _is_connection_error(error: BaseException) -> bool:
    while error is not None:
        if isinstance(error, ConnectionError) or type(error).__name__ in (
            "ConnectionError",
            "MaxRetryError",
            "NewConnectionError",
            "ConnectTimeout",
            "ConnectTimeoutError",
            "ReadTimeout",
        ):
            return True
        text = str(error)
        if "Max retries exceeded" in text or "Connection refused" in text:
            return True
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return False
