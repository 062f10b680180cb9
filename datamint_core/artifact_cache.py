"""A local cache of downloaded model artifacts, safe under concurrent processes.

Layout::

    <cache_dir>/                           DATAMINT_CACHE_DIR, else $XDG_CACHE_HOME/datamint,
    |                                      else ~/.cache/datamint
    +-- models/<name>/<version>/           a complete MLflow model directory
    |       +-- MLmodel, ...
    |       +-- .datamint-cache.json       manifest: where it came from, sha256 of every file
    +-- runs/<run_id>/<artifact path>/     the same, for runs:/ URIs
    +-- .incomplete/<key>-<random>/        downloads in progress, and entries being deleted
    +-- .locks/<entry>.lock                one download lock per entry
    +-- .locks/<entry>.readers             readers hold it shared while they load an entry

An entry appears by one ``os.rename`` of a finished, checksummed download, so a reader
sees a whole entry or none; correctness comes from that rename. The download lock only
saves work: when several processes want the same missing entry, one downloads and the
others wait and then use it. :meth:`ArtifactCache.remove` and :meth:`~ArtifactCache.clear`
take an entry's readers lock exclusively and rename the entry to ``.incomplete/`` before
deleting it, so an entry being loaded (:meth:`ArtifactCache.holding`) is never pulled from
under its reader, and nobody ever sees a half-deleted entry.

Every use re-checks the entry against its manifest: a changed byte, a missing file, an
added file and any symbolic link are reported (:class:`CorruptedCacheEntryError`), never
silently served; manifest paths must stay inside their entry, and nothing outside an entry
is ever read or exported. A cache the process cannot write (a read-only mount) still
serves its entries; what would write to it raises :class:`CacheNotWritableError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
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
    """A cached entry no longer matches its manifest (a changed, missing or added file, a
    symbolic link), or its manifest is unreadable or names a path outside the entry."""


class CacheNotWritableError(CacheError, PermissionError):
    """The cache directory cannot be written: a download, a removal or a lock needs it."""


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
        with self._writing(f"fetch {source_uri!r}"), self._lock(key):
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
        for manifest_path in self._manifests():
            try:
                manifest = _read_manifest(manifest_path.parent)
                key = tuple(manifest["key"])
                if os.path.realpath(self.entry_path(key)) != os.path.realpath(
                    manifest_path.parent
                ):
                    raise _corrupted(manifest_path.parent, f"its manifest names the key {key}")
            except CorruptedCacheEntryError as error:
                _logger.warning("%s; skipping it (remove it with ArtifactCache.remove).", error)
                continue
            entries.append(
                CacheEntry(
                    key=key,
                    path=manifest_path.parent,
                    source_uri=manifest["source_uri"],
                    size_bytes=sum(manifest["sizes"].values()),
                    downloaded_at=manifest["downloaded_at"],
                )
            )
        return entries

    def _manifests(self) -> list[Path]:
        found = []
        for top in ("models", "runs"):
            for parent, dirnames, filenames in os.walk(self.root / top, followlinks=False):
                if MANIFEST_NAME in filenames:
                    found.append(Path(parent) / MANIFEST_NAME)
                    dirnames.clear()  # an entry's own files hold no entries
        return sorted(found)

    @contextlib.contextmanager
    def holding(self, locate: Callable[[], str | os.PathLike[str]]) -> Iterator[Path]:
        """Keep the entry that ``locate()`` returns in place while the block uses it.

        ``locate`` returns a directory (typically via :meth:`fetch`); when it is an entry
        of this cache, a shared readers lock keeps :meth:`remove` and :meth:`clear` away
        from it until the block ends. An entry removed between ``locate`` and the lock is
        located again. Other directories pass through unlocked.

        Example::

            with cache.holding(lambda: cache.fetch(key, download, source_uri=uri)) as path:
                model = mlflow.pyfunc.load_model(str(path))

        Raises:
            CacheError: the entry was removed again and again while being located.
        """
        for _ in range(_HOLD_ATTEMPTS):
            path = Path(locate())
            relative = self._relative_entry(path)
            if relative is None:
                yield path
                return
            with self._file_lock(relative, ".readers", shared=True):
                if (path / MANIFEST_NAME).is_file():  # still there, and now it stays
                    yield path
                    return
        raise CacheError(
            f"The cache entry {path} was removed {_HOLD_ATTEMPTS} times while being loaded; "
            "stop the process that keeps clearing the cache."
        )

    def remove(self, key: tuple[str, ...]) -> bool:
        """Delete one entry once no process is loading it; return whether there was one.

        Raises:
            CacheNotWritableError: the cache cannot be written.
        """
        path = self.entry_path(key)
        if not path.exists():
            return False
        with self._writing(f"remove {path}"), self._lock(key):
            if not path.exists():
                return False
            self._discard(path)
            return True

    def clear(self) -> int:
        """Delete every entry (each once no process is loading it); return how many.

        Raises:
            CacheNotWritableError: the cache cannot be written.
        """
        return sum(self.remove(entry.key) for entry in self.list())

    def export(
        self, target_dir: str | os.PathLike[str], keys: list[tuple[str, ...]] | None = None
    ) -> ArtifactCache:
        """Copy entries (all by default), layout included, to ``target_dir``.

        The copy is itself a cache: point ``DATAMINT_CACHE_DIR`` at it on a machine with no
        network and use offline mode. Each entry is verified first, and only the regular
        files its manifest lists are copied: nothing outside the entry is ever read.

        Raises:
            CacheError: a key not in the cache.
            CorruptedCacheEntryError: an entry that does not match its manifest.
        """
        target = ArtifactCache(target_dir)
        for key in keys if keys is not None else [entry.key for entry in self.list()]:
            with self.holding(lambda key=key: self._existing(key)) as source:
                manifest = verify_manifest(source)
                destination = target.entry_path(key)
                staging = destination.parent / f".{destination.name}.incomplete-{uuid.uuid4().hex}"
                try:
                    for relative in [*manifest["sha256"], MANIFEST_NAME]:
                        _copy_regular_file(source / relative, staging / relative)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    if destination.exists():
                        target._discard(destination)
                    os.rename(staging, destination)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
        return target

    # -- internals -------------------------------------------------------------------------

    def _existing(self, key: tuple[str, ...]) -> Path:
        path = self.get(key)
        if path is None:
            raise CacheError(f"Cannot export {key}: it is not in the cache at {self.root}.")
        return path

    def _download_into_place(
        self, key: tuple[str, ...], path: Path, download: Callable[[Path], Path], source_uri: str
    ) -> None:
        incomplete = (
            self.root / ".incomplete" / f"{'-'.join(self.entry_path(key).parts[-2:])}-"
            f"{uuid.uuid4().hex}"
        )
        with self._writing(f"download {source_uri!r} into it"):
            incomplete.mkdir(parents=True)
        try:
            started = time.perf_counter()
            downloaded = Path(download(incomplete))
            write_manifest(downloaded, key=key, source_uri=source_uri)
            with self._writing(f"store {source_uri!r}"):
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
        """Delete an entry once its readers are done: rename it away first, so that no
        reader ever sees it half-deleted."""
        relative = self._relative_entry(path)
        trash = self.root / ".incomplete" / f"discarded-{uuid.uuid4().hex}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        readers = (
            self._file_lock(relative, ".readers", shared=False)
            if relative is not None
            else contextlib.nullcontext()
        )
        with readers:
            os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def _relative_entry(self, path: Path) -> str | None:
        """``path`` relative to the cache root when it is (inside) an entry, else ``None``."""
        try:
            relative = Path(os.path.realpath(path)).relative_to(os.path.realpath(self.root))
        except ValueError:
            return None
        parts = relative.parts
        if len(parts) < 2 or parts[0] not in ("models", "runs"):
            return None
        return relative.as_posix()

    @contextlib.contextmanager
    def _lock(self, key: tuple[str, ...]) -> Iterator[None]:
        """The download lock of ``key`` (exclusive)."""
        relative = self.entry_path(key).relative_to(self.root).as_posix()
        with self._file_lock(relative, ".lock", shared=False):
            yield

    @contextlib.contextmanager
    def _file_lock(self, relative: str, suffix: str, *, shared: bool) -> Iterator[None]:
        try:
            import fcntl
        except ImportError:  # no advisory locks here: the atomic renames still keep us correct
            yield
            return
        lock_path = self.root / ".locks" / (_lock_name(relative) + suffix)
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(lock_path, "a+b")
        except OSError as error:
            if not (shared and _is_not_writable(error)):
                raise
            try:  # a read-only cache: nobody can remove its entries from here anyway
                handle = open(lock_path, "rb")
            except OSError:
                yield
                return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _writing(self, action: str) -> Iterator[None]:
        """Turn "cannot write here" into :class:`CacheNotWritableError`."""
        try:
            yield
        except OSError as error:
            if isinstance(error, CacheError) or not _is_not_writable(error):
                raise
            raise CacheNotWritableError(
                f"Cannot {action}: the artifact cache at {self.root} is not writable "
                f"({error.strerror}). Point {CACHE_DIR_ENV} at a writable directory, or use "
                "this cache as it is in offline mode (DATAMINT_OFFLINE=true)."
            ) from None


_HOLD_ATTEMPTS = 100


def _lock_name(relative: str) -> str:
    return hashlib.sha256(relative.encode()).hexdigest()[:32]


def _is_not_writable(error: OSError) -> bool:
    return error.errno in (errno.EACCES, errno.EPERM, errno.EROFS)


def write_manifest(directory: Path, *, key: tuple[str, ...], source_uri: str) -> None:
    """Record the sha256 and size of every file under ``directory``.

    Raises:
        CacheError: the directory holds a symbolic link (never cached: it could point
            anywhere) or something that is not a regular file.
    """
    files = sorted(_entry_files(directory, on_link=CacheError))
    manifest = {
        "key": list(key),
        "source_uri": source_uri,
        "downloaded_at": time.time(),
        "sha256": {relative: _sha256(directory / relative) for relative in files},
        "sizes": {relative: (directory / relative).stat().st_size for relative in files},
    }
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))


def verify_manifest(directory: Path) -> dict:
    """Check ``directory`` against its manifest: same files, same bytes, no links.

    Returns:
        The manifest.

    Raises:
        CorruptedCacheEntryError: a file is missing, changed or added, a symbolic link is
            there, or the manifest is unreadable or names a path outside the entry; names
            the file.
    """
    manifest = _read_manifest(directory)
    recorded = manifest["sha256"]
    try:
        present = _entry_files(directory, on_link=CorruptedCacheEntryError)
    except OSError as error:
        if isinstance(error, CacheError):
            raise
        raise _corrupted(directory, f"it cannot be listed ({error.strerror})") from None
    for relative in sorted(present - set(recorded)):
        raise _corrupted(directory, f"{relative} was added after it was downloaded")
    for relative, expected in recorded.items():
        if relative not in present:
            raise _corrupted(directory, f"{relative} is missing")
        file = directory / relative
        try:
            unchanged = file.stat().st_size == manifest["sizes"][relative] and (
                _sha256(file) == expected
            )
        except OSError:
            raise _corrupted(directory, f"{relative} is missing") from None
        if not unchanged:
            raise CorruptedCacheEntryError(
                f"Cached artifact {directory} is corrupted: {file} does not match the "
                "checksum recorded when it was downloaded"
            )
    return manifest


def _entry_files(directory: Path, *, on_link: type[Exception]) -> set[str]:
    """The regular files under ``directory`` (relative, POSIX), the manifest left out."""
    files = set()
    for parent, dirnames, filenames in os.walk(directory, followlinks=False):
        for name in [*dirnames, *filenames]:
            full = os.path.join(parent, name)
            relative = Path(full).relative_to(directory).as_posix()
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                raise on_link(
                    f"Cached artifact {directory} holds a symbolic link, {relative}; the cache "
                    "never follows links"
                )
            if name in filenames:
                if not stat.S_ISREG(mode):
                    raise on_link(
                        f"Cached artifact {directory} holds {relative}, which is not a file"
                    )
                if relative != MANIFEST_NAME:
                    files.add(relative)
    return files


def _corrupted(directory: Path, reason: str) -> CorruptedCacheEntryError:
    return CorruptedCacheEntryError(f"Cached artifact {directory} is corrupted: {reason}")


def _path_part(part: str) -> str:
    # Percent-encode everything but letters, digits and "_.-~", and a leading dot too, so
    # that no key part is "." or ".." or a hidden name.
    encoded = quote(part, safe="")
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


def _read_manifest(directory: Path) -> dict:
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text())
        sha256, sizes, key = manifest["sha256"], manifest["sizes"], manifest["key"]
        well_formed = (
            isinstance(sha256, dict)
            and isinstance(sizes, dict)
            and set(sha256) == set(sizes)
            and all(isinstance(v, str) for v in sha256.values())
            and all(type(v) is int and v >= 0 for v in sizes.values())
            and isinstance(key, list)
            and all(isinstance(part, str) for part in key)
            and isinstance(manifest.get("source_uri"), str)
            and isinstance(manifest.get("downloaded_at"), (int, float))
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise _corrupted(
            directory, f"its manifest {MANIFEST_NAME} is unreadable ({type(error).__name__})"
        ) from None
    if not well_formed:
        raise _corrupted(directory, f"its manifest {MANIFEST_NAME} is unreadable (bad fields)")
    for relative in sha256:
        parts = relative.split("/")
        if (
            not relative
            or relative.startswith("/")
            or "\\" in relative
            or "\0" in relative
            or any(part in ("", ".", "..") for part in parts)
            or relative == MANIFEST_NAME
        ):
            raise _corrupted(
                directory, f"its manifest names {relative[:200]!r}, a path outside the entry"
            )
    return manifest


def _copy_regular_file(source: Path, destination: Path) -> None:
    """Copy one file, refusing a symbolic link even if one appeared after verification."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(source, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise CorruptedCacheEntryError(
                f"Cached artifact file {source} became a symbolic link; not exported"
            ) from None
        raise
    with os.fdopen(descriptor, "rb") as reader, open(destination, "xb") as writer:
        shutil.copyfileobj(reader, writer, _CHUNK)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
