"""Locating a pinned model: a local directory that holds it, kept in place while it is used.

In this order: a copy bundled inside the parent's directory; the local artifact cache
(:mod:`datamint_core.artifact_cache`), checksums verified, under the configured store (an
entry another store filled is never used); the tracking server, downloading into the cache
(never in offline mode, unless the storage location recorded at pinning time may be
downloaded from, ``DATAMINT_PULL_ARTIFACTS_IN_OFFLINE_MODE``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from datamint_core import _env
from datamint_core.artifact_cache import ArtifactCache, CacheEntry
from datamint_core.errors import (
    CacheError,
    CacheNotWritableError,
    CorruptedCacheEntryError,
    LinkedModelError,
    LinkedModelNotFoundError,
)
from datamint_core.linked_models._errors import server_errors
from datamint_core.linked_models._pinning import pin
from datamint_core.linked_models._reference import LinkedModel, LinkSettings
from datamint_core.linked_models._uris import TOP_LEVEL_KEY, is_pinnable, subject


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
                f"{subject(linked.key)}: {linked.resolved_uri!r} is not an MLflow model "
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
    if not is_pinnable(model_uri):
        import mlflow

        with _env.mlflow_progress_bar_only_on_a_terminal():
            downloaded = mlflow.artifacts.download_artifacts(artifact_uri=model_uri)
        yield downloaded
        return
    reference = pin(TOP_LEVEL_KEY, model_uri, settings)
    with hold_located(reference, settings=settings) as path:
        yield os.fspath(path)


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
            f"{subject(linked.key)} ({linked.resolved_uri}): {error}. Offline mode is on, "
            "so it cannot be downloaded again; turn offline mode off once, or restore the cache."
        ) from error
    except CacheNotWritableError:
        raise
    except CacheError:
        if downloads_allowed:  # the entry kept vanishing while being held: said as it is
            raise
        missing = (
            f"{subject(linked.key)} ({linked.resolved_uri}) is not in the artifact cache "
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


def _download(linked: LinkedModel, source: str, into: Path) -> Path:
    import mlflow

    with (
        _env.mlflow_progress_bar_only_on_a_terminal(),
        server_errors(linked.key, linked.resolved_uri),
    ):
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(into)))
