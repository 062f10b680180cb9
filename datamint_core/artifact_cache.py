"""A local cache of downloaded model artifacts, safe under concurrent processes.

Layout::

    <cache_dir>/                           DATAMINT_CACHE_DIR, else $XDG_CACHE_HOME/datamint,
    |                                      else ~/.cache/datamint
    +-- models/<name>/<version>/           a complete MLflow model directory
    |       +-- MLmodel, ...
    |       +-- .datamint-cache.json       manifest: where it came from, sha256 of every file
    +-- runs/<run_id>/<artifact path>/     the same, for runs:/ URIs
    +-- .incomplete/<key>-<random>/        downloads in progress (removed when they end)
    +-- .locks/<key>.lock                  one lock file per entry

An entry appears by one ``os.rename`` of a finished, checksummed download, so a reader
sees a whole entry or none; correctness comes from that rename. The per-entry file lock
only saves work: when several processes want the same missing entry, one downloads and the
others wait and then use it. Every use re-checks the checksums; a changed byte is reported,
never silently served.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

from datamint_core import _env

_logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "DATAMINT_CACHE_DIR"
MANIFEST_NAME = ".datamint-cache.json"
_CHUNK = 1 << 20


class CacheError(RuntimeError):
    """The artifact cache cannot serve an entry."""


class CorruptedCacheEntryError(CacheError, OSError):
    """A cached file no longer matches the checksum recorded when it was downloaded."""


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One cached artifact, as listed by :meth:`ArtifactCache.list`."""

    key: tuple[str, ...]
    path: Path
    source_uri: str
    size_bytes: int
    downloaded_at: float


def default_cache_dir() -> Path:
    """``DATAMINT_CACHE_DIR``, else ``$XDG_CACHE_HOME/datamint``, else ``~/.cache/datamint``."""
    configured = _env.read_env(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    base = _env.read_env("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "datamint"


class ArtifactCache:
    """Downloaded model artifacts, keyed by ``("models", name, version)`` or
    ``("runs", run_id, artifact_path)``.

    Args:
        cache_dir: the cache root; see :func:`default_cache_dir` for the default.
    """

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()

    def entry_path(self, key: tuple[str, ...]) -> Path:
        """Where the entry for ``key`` lives (whether or not it exists)."""
        return self.root.joinpath(*(_path_part(part) for part in key))

    def get(self, key: tuple[str, ...]) -> Path | None:
        """Return the verified entry for ``key``, or ``None`` when it is not cached.

        Raises:
            CorruptedCacheEntryError: the entry exists but a file changed; names the file.
        """
        path = self.entry_path(key)
        if not (path / MANIFEST_NAME).is_file():
            return None
        verify_manifest(path)
        return path

    def fetch(
        self,
        key: tuple[str, ...],
        download: Callable[[Path], Path],
        *,
        source_uri: str,
        refresh: bool = False,
        allow_download: bool = True,
    ) -> Path:
        """Return the entry for ``key``, downloading it once if it is missing or corrupted.

        Args:
            download: called with an empty directory; downloads into it and returns the
                directory that holds the artifact (the directory itself or a child of it).
            source_uri: recorded in the manifest, for listing.
            refresh: download again even if the entry is cached and intact.
            allow_download: when False (offline), a missing or corrupted entry is an error.

        Raises:
            CorruptedCacheEntryError: a corrupted entry while ``allow_download`` is False.
            CacheError: a missing entry while ``allow_download`` is False.
        """
        if not refresh:
            # An entry never changes once renamed into place, so a hit needs no lock: many
            # processes can verify one large model at the same time.
            try:
                cached = self.get(key)
            except CorruptedCacheEntryError:
                cached = None  # handled under the lock below
            if cached is not None:
                return cached
        with self._lock(key):
            path = self.entry_path(key)
            if not refresh:
                try:
                    cached = self.get(key)
                except CorruptedCacheEntryError as error:
                    if not allow_download:
                        raise
                    _logger.warning("%s; downloading it again.", error)
                    cached = None
                if cached is not None:
                    return cached
            if not allow_download:
                raise CacheError(
                    f"{source_uri!r} is not in the artifact cache at {self.root} and downloads "
                    "are not allowed (offline mode)."
                )
            self._download_into_place(key, path, download, source_uri)
            return path

    def list(self) -> list[CacheEntry]:
        """Every complete entry in the cache (not verified: listing stays cheap)."""
        entries = []
        for manifest_path in sorted(self.root.glob(f"*/**/{MANIFEST_NAME}")):
            if ".incomplete" in manifest_path.relative_to(self.root).parts:
                continue
            try:
                manifest = _read_manifest(manifest_path.parent)
            except CorruptedCacheEntryError as error:
                _logger.warning("%s; skipping it (remove it with ArtifactCache.remove).", error)
                continue
            entries.append(
                CacheEntry(
                    key=tuple(manifest["key"]),
                    path=manifest_path.parent,
                    source_uri=manifest["source_uri"],
                    size_bytes=sum(manifest["sizes"].values()),
                    downloaded_at=manifest["downloaded_at"],
                )
            )
        return entries

    def remove(self, key: tuple[str, ...]) -> bool:
        """Delete one entry; return whether there was one."""
        with self._lock(key):
            path = self.entry_path(key)
            if not path.exists():
                return False
            self._discard(path)
            return True

    def clear(self) -> int:
        """Delete every entry; return how many there were."""
        entries = self.list()
        for entry in entries:
            self.remove(entry.key)
        return len(entries)

    def export(
        self, target_dir: str | os.PathLike[str], keys: list[tuple[str, ...]] | None = None
    ) -> ArtifactCache:
        """Copy entries (all by default), layout included, to ``target_dir``.

        The copy is itself a cache: point ``DATAMINT_CACHE_DIR`` at it on a machine with no
        network and use offline mode.
        """
        target = ArtifactCache(target_dir)
        for key in keys if keys is not None else [entry.key for entry in self.list()]:
            source = self.get(key)
            if source is None:
                raise CacheError(f"Cannot export {key}: it is not in the cache at {self.root}.")
            destination = target.entry_path(key)
            staging = destination.parent / f".{destination.name}.incomplete-{uuid.uuid4().hex}"
            try:
                shutil.copytree(source, staging)
                destination.parent.mkdir(parents=True, exist_ok=True)
                if destination.exists():
                    target._discard(destination)
                os.rename(staging, destination)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return target

    # -- internals -------------------------------------------------------------------------

    def _download_into_place(
        self, key: tuple[str, ...], path: Path, download: Callable[[Path], Path], source_uri: str
    ) -> None:
        incomplete = (
            self.root / ".incomplete" / f"{'-'.join(self.entry_path(key).parts[-2:])}-"
            f"{uuid.uuid4().hex}"
        )
        incomplete.mkdir(parents=True)
        try:
            started = time.perf_counter()
            downloaded = Path(download(incomplete))
            write_manifest(downloaded, key=key, source_uri=source_uri)
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():  # a corrupted entry, or a refresh
                self._discard(path)
            os.rename(downloaded, path)
            _logger.info(
                "Cached %s in %s (%.1f s)", source_uri, path, time.perf_counter() - started
            )
        finally:
            shutil.rmtree(incomplete, ignore_errors=True)

    def _discard(self, path: Path) -> None:
        # Rename first so that no reader ever sees a half-deleted entry.
        trash = self.root / ".incomplete" / f"discarded-{uuid.uuid4().hex}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    @contextlib.contextmanager
    def _lock(self, key: tuple[str, ...]) -> Iterator[None]:
        lock_dir = self.root / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256("\0".join(key).encode()).hexdigest()[:32]
        try:
            import fcntl
        except ImportError:  # no advisory locks here: the atomic rename still keeps us correct
            yield
            return
        with open(lock_dir / f"{name}.lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def write_manifest(directory: Path, *, key: tuple[str, ...], source_uri: str) -> None:
    """Record the sha256 and size of every file under ``directory``."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    manifest = {
        "key": list(key),
        "source_uri": source_uri,
        "downloaded_at": time.time(),
        "sha256": {p.relative_to(directory).as_posix(): _sha256(p) for p in files},
        "sizes": {p.relative_to(directory).as_posix(): p.stat().st_size for p in files},
    }
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))


def verify_manifest(directory: Path) -> None:
    """Check every file recorded in ``directory``'s manifest.

    Raises:
        CorruptedCacheEntryError: a file is missing or its content changed; names it.
    """
    manifest = _read_manifest(directory)
    for relative, expected in manifest["sha256"].items():
        file = directory / relative
        if not file.is_file():
            raise CorruptedCacheEntryError(
                f"Cached artifact {directory} is corrupted: {relative} is missing"
            )
        if file.stat().st_size != manifest["sizes"][relative] or _sha256(file) != expected:
            raise CorruptedCacheEntryError(
                f"Cached artifact {directory} is corrupted: {file} does not match the "
                "checksum recorded when it was downloaded"
            )


def _path_part(part: str) -> str:
    # Percent-encode everything but letters, digits and "_.-~", and a leading dot too, so
    # that no key part is "." or ".." or a hidden name.
    encoded = quote(part, safe="")
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


def _read_manifest(directory: Path) -> dict:
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text())
        manifest["sha256"], manifest["sizes"], manifest["key"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CorruptedCacheEntryError(
            f"Cached artifact {directory} is corrupted: its manifest {MANIFEST_NAME} is "
            f"unreadable ({type(error).__name__})"
        ) from None
    return manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
