"""A local cache of downloaded model artifacts, safe under concurrent processes.

Layout::

    <cache_dir>/                           DATAMINT_CACHE_DIR, else $XDG_CACHE_HOME/datamint,
    |                                      else ~/.cache/datamint
    +-- stores/<store>/                    one per tracking/registry store, <store> naming its
    |   |                                  normalized URI: <scheme>-<host or file>-<sha256>
    |   +-- models/<name>/<version>/       a complete MLflow model directory
    |   |       +-- MLmodel, ...
    |   |       +-- .datamint-cache.json   manifest: its key, its store, where it came from,
    |   |                                  sha256 of every file
    |   +-- runs/<run_id>/<artifact path>/ the same, for runs:/ URIs
    +-- models/, runs/                     entries written before entries were keyed by
    |                                      store: listed and cleared, never served
    +-- .incomplete/<key>-<random>/        downloads in progress, and entries being deleted
    +-- .locks/<entry>.lock                one download lock per entry
    +-- .locks/<entry>.readers             held shared while an entry is in use

A model is known by the store it came from as well as its name and version
(:func:`model_key`, :func:`run_key`): two stores that both hold ``liver-seg/1`` never share
an entry, whatever spelling of their URI was used (:func:`store_identity`).

An entry appears by one ``os.rename`` of a finished, checksummed download, so a reader
sees a whole entry or none; correctness comes from that rename. The download lock only
saves work: when several processes want the same missing entry, one downloads and the
others wait and then use it. Whoever uses an entry holds its readers lock shared
(:meth:`ArtifactCache.hold`, :meth:`ArtifactCache.holding`: every load in the library does);
:meth:`~ArtifactCache.remove` takes it exclusively (waiting for the holders) and
:meth:`~ArtifactCache.clear` only if nobody holds it (a held entry is left in place), and
both rename the entry to ``.incomplete/`` before deleting it: an entry in use is never
pulled from under its user, and nobody ever sees a half-deleted entry.

Every use re-checks the entry against its manifest: a changed byte, a missing file, an
added file, any symbolic link and a manifest naming another key are reported
(:class:`CorruptedCacheEntryError`), never silently served; manifest paths must stay inside
their entry, and nothing outside an entry is ever read or exported. A cache the process
cannot write (a read-only mount) still serves its entries, and what needs no write (a hit,
an offline miss, a corrupted entry while downloads are off) reports its own cause; what
would write to it raises :class:`CacheNotWritableError`.

Why one module of some 740 lines: the layout above, its locks, the checksummed manifest and
the atomic rename are one protocol between concurrent processes; every operation (fetch,
hold, refresh, clear, remove) has to keep all of its rules, so they are kept in one place.
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
from urllib.parse import quote, urlsplit, urlunsplit

from datamint_core import _env
from datamint_core.errors import CacheError, CacheNotWritableError, CorruptedCacheEntryError

_logger = logging.getLogger(__name__)

MANIFEST_NAME = ".datamint-cache.json"
_CHUNK = 1 << 20
#: Top-level directories that hold entries; only ``stores`` is served by the library.
_STORES, _LEGACY_TOPS = "stores", ("models", "runs")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One cached artifact, as listed by :meth:`ArtifactCache.list`."""

    key: tuple[str, ...]
    path: Path
    source_uri: str
    size_bytes: int
    downloaded_at: float
    #: The normalized URI of the store it came from; ``None`` for an entry written before
    #: entries were keyed by store (never served for any store).
    store_uri: str | None = None


def store_identity(uri: str) -> str:
    """The normalized URI of a tracking or registry store: one string per store.

    A path (``./mlruns``, ``file:...``) and a SQLite database become absolute and resolved
    (a relative one is relative to the working directory, as MLflow reads it); a server's
    scheme and host are lower-cased and its default port, credentials, fragment and
    trailing slash dropped (credentials never reach the cache's paths or manifests).

    Example::

        store_identity("HTTP://user:pw@Tracking:80/")  # 'http://tracking'
    """
    uri = uri.strip()
    if uri in ("databricks", "databricks-uc", "uc"):  # MLflow's names, not paths
        return uri
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("", "file") or len(scheme) == 1:  # a path (one letter: a drive)
        path = parts.path if scheme == "file" else uri
        return "file://" + os.path.realpath(os.path.expanduser(path))
    if scheme == "sqlite" or scheme.startswith("sqlite+"):
        # sqlite:///<database>: relative after three slashes, absolute after four.
        database, _, query = uri.split("://", 1)[1][1:].partition("?")
        if database and database != ":memory:":
            database = os.path.realpath(os.path.expanduser(database))
        return f"{scheme}:///{database}" + (f"?{query}" if query else "")
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path.rstrip("/"), parts.query, ""))


def _store_dir(identity: str) -> str:
    """``<scheme>-<host or file name>-<sha256>``: readable, and one per store identity."""
    scheme, _, rest = identity.partition(":")
    hint = urlsplit(identity).netloc or os.path.basename(rest.split("?", 1)[0].rstrip("/"))
    hint = "".join(c if c.isalnum() or c in "._-" else "_" for c in hint)[:40]
    digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
    return "-".join(filter(None, ["".join(c for c in scheme if c.isalnum()), hint, digest]))


def model_key(store_uri: str, name: str, version: str) -> tuple[str, ...]:
    """The cache key of registered model ``name`` version ``version`` of a registry store."""
    return (_STORES, _store_dir(store_identity(store_uri)), "models", name, str(version))


def run_key(store_uri: str, run_id: str, artifact_path: str) -> tuple[str, ...]:
    """The cache key of a run's artifact (``runs:/<run_id>/<path>``) of a tracking store."""
    return (_STORES, _store_dir(store_identity(store_uri)), "runs", run_id, artifact_path)


def default_cache_dir() -> Path:
    """``DATAMINT_CACHE_DIR``, else ``$XDG_CACHE_HOME/datamint``, else ``~/.cache/datamint``."""
    configured = _env.DATAMINT_CACHE_DIR.get()
    if configured:
        return Path(configured).expanduser()
    base = _env.XDG_CACHE_HOME.get() or os.path.join(os.path.expanduser("~"), ".cache")
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
        manifest = verify_manifest(path)
        if tuple(manifest["key"]) != tuple(key):
            raise _corrupted(path, f"its manifest names another key, {tuple(manifest['key'])}")
        return path

    def fetch(
        self,
        key: tuple[str, ...],
        download: Callable[[Path], Path],
        *,
        source_uri: str,
        store_uri: str | None = None,
        refresh: bool = False,
        allow_download: bool = True,
    ) -> Path:
        """Return the entry for ``key``, downloading it once if it is missing or corrupted.

        The path stays valid until the entry is removed; to use it while another process
        may clear the cache, fetch through :meth:`hold`.

        Args:
            download: called with an empty directory; downloads into it and returns the
                directory that holds the artifact (the directory itself or a child of it).
            source_uri: recorded in the manifest, for listing.
            store_uri: the store the artifact comes from (see :func:`model_key`), recorded
                in the manifest (normalized by :func:`store_identity`).
            refresh: download again even if the entry is cached and intact.
            allow_download: when False (offline), a missing or corrupted entry is an error,
                and nothing is written: a read-only cache reports the same errors.

        Raises:
            CorruptedCacheEntryError: a corrupted entry while ``allow_download`` is False.
            CacheError: a missing entry while ``allow_download`` is False.
            CacheNotWritableError: a download is needed and the cache cannot be written.
        """
        if not allow_download:
            cached = self.get(key)  # a corrupted entry raises: it cannot be replaced
            if cached is None:
                raise CacheError(
                    f"{source_uri!r} is not in the artifact cache at {self.root} and downloads "
                    "are not allowed (offline mode)."
                )
            return cached
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
                    _logger.warning("%s; downloading it again.", error)
                    cached = None
                if cached is not None:
                    return cached
            self._download_into_place(key, path, download, source_uri, store_uri)
            return path

    @contextlib.contextmanager
    def hold(
        self,
        key: tuple[str, ...],
        download: Callable[[Path], Path],
        *,
        source_uri: str,
        store_uri: str | None = None,
        refresh: bool = False,
        allow_download: bool = True,
    ) -> Iterator[Path]:
        """:meth:`fetch` the entry and keep it in place until the block ends.

        While the block runs, :meth:`remove` and :meth:`clear` (in any process) wait for
        it; an entry cleared between the fetch and the hold is fetched again.

        Example::

            with cache.hold(key, download, source_uri=uri) as path:
                model = mlflow.pyfunc.load_model(str(path))

        Raises:
            The errors of :meth:`fetch`; :class:`CacheError` when the entry was removed
            again and again while being held.
        """
        arguments = {
            "source_uri": source_uri,
            "store_uri": store_uri,
            "allow_download": allow_download,
        }
        refreshed = [not refresh]  # refresh once, not on every retry

        def locate() -> Path:
            path = self.fetch(key, download, refresh=not refreshed[0], **arguments)
            refreshed[0] = True
            return path

        with self.holding(locate) as path:
            yield path

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
                    store_uri=manifest.get("store_uri"),
                )
            )
        return entries

    def elsewhere(self, key: tuple[str, ...]) -> list[CacheEntry]:
        """Entries of the same artifact as the store-qualified ``key`` that were cached from
        *other* stores or before entries were keyed by store: never served for ``key``,
        but worth naming when ``key`` itself is missing.
        """
        if len(key) < 3 or key[0] != _STORES:
            return []
        artifact = tuple(key[2:])
        return [
            entry
            for entry in self.list()
            if entry.key != tuple(key)
            and (entry.key[2:] if entry.key[0] == _STORES else entry.key) == artifact
        ]

    def _manifests(self) -> list[Path]:
        found = []
        for top in (_STORES, *_LEGACY_TOPS):
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
        """Delete one entry once nobody holds it; return whether there was one.

        Raises:
            CacheNotWritableError: the cache cannot be written.
        """
        return self._remove(key, wait=True)

    def clear(self) -> int:
        """Delete every entry that nobody holds; return how many were deleted.

        An entry held by a load or a server in any process (:meth:`hold`) is left in place
        and named in a warning: clearing never waits on a server that runs for days, and
        never pulls a model from under its user.

        Raises:
            CacheNotWritableError: the cache cannot be written.
        """
        return sum(self._remove(entry.key, wait=False) for entry in self.list())

    def _remove(self, key: tuple[str, ...], *, wait: bool) -> bool:
        path = self.entry_path(key)
        if not path.exists():
            return False
        with self._writing(f"remove {path}"), self._lock(key):
            if not path.exists():
                return False
            if self._discard(path, wait=wait):
                return True
        _logger.warning("Left the cache entry %s in place: a process holds it.", path)
        return False

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
        self,
        key: tuple[str, ...],
        path: Path,
        download: Callable[[Path], Path],
        source_uri: str,
        store_uri: str | None,
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
            write_manifest(downloaded, key=key, source_uri=source_uri, store_uri=store_uri)
            with self._writing(f"store {source_uri!r}"):
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.exists() and not self._replace_held(path, downloaded, source_uri):
                    return  # held, and the download is the same: the entry stays
                os.rename(downloaded, path)
            _logger.info(
                "Cached %s in %s (%.1f s)", source_uri, path, time.perf_counter() - started
            )
        finally:
            shutil.rmtree(incomplete, ignore_errors=True)

    def _replace_held(self, path: Path, downloaded: Path, source_uri: str) -> bool:
        """Discard the entry at ``path`` (corrupted, or refreshed) to put ``downloaded`` in
        its place; return False when it is held and ``downloaded`` has the same files, so
        the entry stays. A holder may be a server that runs for days: a different download
        waits :data:`REPLACE_WAIT_S` for it, then raises instead of hanging."""
        deadline = time.monotonic() + REPLACE_WAIT_S
        same: bool | None = None  # checked once: nobody else writes while we hold the lock
        while not self._discard(path, wait=False):
            if same is None:
                try:
                    same = verify_manifest(path)["sha256"] == _read_manifest(downloaded)["sha256"]
                except CorruptedCacheEntryError:
                    same = False
            if same:
                return False
            if time.monotonic() > deadline:
                raise CacheError(
                    f"Downloaded {source_uri!r} again and it differs from the cache entry "
                    f"{path}, which another process (a server, a load) holds: it cannot be "
                    f"replaced until that process lets go of it (waited {REPLACE_WAIT_S:g} s)."
                )
            time.sleep(0.05)
        return True

    def _discard(self, path: Path, *, wait: bool = True) -> bool:
        """Delete an entry once nobody holds it (or, unless ``wait``, only if nobody does);
        return whether it was deleted. It is renamed away first, so that no reader ever
        sees it half-deleted."""
        relative = self._relative_entry(path)
        trash = self.root / ".incomplete" / f"discarded-{uuid.uuid4().hex}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        readers = (
            self._file_lock(relative, ".readers", shared=False, wait=wait)
            if relative is not None
            else contextlib.nullcontext(True)
        )
        with readers as free:
            if not free:
                return False
            os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def _relative_entry(self, path: Path) -> str | None:
        """``path`` relative to the cache root when it is (inside) an entry, else ``None``."""
        try:
            relative = Path(os.path.realpath(path)).relative_to(os.path.realpath(self.root))
        except ValueError:
            return None
        parts = relative.parts
        if len(parts) < 2 or parts[0] not in (_STORES, *_LEGACY_TOPS):
            return None
        return relative.as_posix()

    @contextlib.contextmanager
    def _lock(self, key: tuple[str, ...]) -> Iterator[None]:
        """The download lock of ``key`` (exclusive)."""
        relative = self.entry_path(key).relative_to(self.root).as_posix()
        with self._file_lock(relative, ".lock", shared=False):
            yield

    @contextlib.contextmanager
    def _file_lock(
        self, relative: str, suffix: str, *, shared: bool, wait: bool = True
    ) -> Iterator[bool]:
        """Lock ``relative``'s lock file; yields False when ``wait`` is off and another
        process holds it in a conflicting mode."""
        try:
            import fcntl
        except ImportError:  # no advisory locks here: the atomic renames still keep us correct
            yield True
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
                yield True
                return
        with handle:
            mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
            try:
                fcntl.flock(handle, mode if wait else mode | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
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
                f"({error.strerror}). Point DATAMINT_CACHE_DIR at a writable directory, or use "
                "this cache as it is in offline mode (DATAMINT_OFFLINE=true)."
            ) from None


_HOLD_ATTEMPTS = 100
#: How long replacing a held entry with a different download waits for its holders.
REPLACE_WAIT_S = 30.0


def _lock_name(relative: str) -> str:
    return hashlib.sha256(relative.encode()).hexdigest()[:32]


def _is_not_writable(error: OSError) -> bool:
    return error.errno in (errno.EACCES, errno.EPERM, errno.EROFS)


def write_manifest(
    directory: Path, *, key: tuple[str, ...], source_uri: str, store_uri: str | None = None
) -> None:
    """Record the key, the store and the sha256 and size of every file under ``directory``.

    Raises:
        CacheError: the directory holds a symbolic link (never cached: it could point
            anywhere) or something that is not a regular file.
    """
    files = sorted(_entry_files(directory, on_link=CacheError))
    manifest = {
        "key": list(key),
        "source_uri": source_uri,
        **({"store_uri": store_identity(store_uri)} if store_uri is not None else {}),
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
            and isinstance(manifest.get("store_uri", ""), str)
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
