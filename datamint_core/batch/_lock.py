"""One writer per batch output: an advisory lock that dies with the process holding it.

``OUTPUT/_datamint_batch.lock`` is locked with ``flock`` for the whole job, before anything
in OUTPUT is touched (the cleanup of a killed run's leftovers included): a second job into
the same OUTPUT is refused at once, naming the holder. The kernel drops the lock when the
holding process ends, however it ends (``kill -9`` too), so a rerun after a crash never
waits for a stale lock and never has one to delete. The file itself stays (deleting it
would let two jobs lock two different files of the same name); its name starts with ``_``,
so Parquet readers skip it.

The descriptor is not inherited by child processes (Python opens files non-inheritable),
so the local engine's workers and Spark's JVM never keep a dead driver's lock alive. With
the Spark engine the driver holds the lock; executors write parts into OUTPUT under it.
Across machines the lock holds where the shared file system implements ``flock`` (NFSv4,
Lustre with ``-o flock``, CephFS); elsewhere run one job per OUTPUT.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from datamint_core.errors import OutputInUseError

LOCK_FILE = "_datamint_batch.lock"


@contextlib.contextmanager
def hold_output(output_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the lock of ``output_dir`` (created if missing) while the block runs.

    Raises:
        OutputInUseError: another process holds it; the message names that job.
    """
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no flock
        warnings.warn(
            "This platform has no flock: concurrent batch jobs into one output directory "
            "are not detected; run one job per output.",
            RuntimeWarning,
            stacklevel=3,
        )
        yield
        return
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(output / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputInUseError(
                f"Another batch job is writing into {os.fspath(output)!r} "
                f"({_holder(descriptor)}); one job at a time writes an output directory. "
                "Wait for it to finish (rerunning the same command then resumes), or give "
                "another output directory."
            ) from None
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            warnings.warn(
                f"The file system of {os.fspath(output)!r} does not support flock "
                f"({error.strerror}): concurrent batch jobs into it are not detected; run "
                "one job per output.",
                RuntimeWarning,
                stacklevel=3,
            )
            yield
            return
        _record_holder(descriptor)
        try:
            yield
        finally:
            os.ftruncate(descriptor, 0)  # no stale holder shown; the kernel drops the lock
    finally:
        os.close(descriptor)


def _record_holder(descriptor: int) -> None:
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps(holder).encode(), 0)


def _holder(descriptor: int) -> str:
    """Who holds the lock, as the holder wrote it (it may not have written it yet)."""
    try:
        holder = json.loads(os.pread(descriptor, 4096, 0))
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder["started"])))
        return f"pid {int(holder['pid'])} on {holder['host']}, started {started}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a job that is starting"
