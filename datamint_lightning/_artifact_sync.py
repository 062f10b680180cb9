"""Keep a run's checkpoint artifacts in step with the checkpoints on disk, off the training loop.

The training loop only records what it wants (``upload``/``remove`` take microseconds); one
background thread does the transfers. The state is *desired* state, not a queue of calls::

    wanted    {artifact name: (local path, generation)}   checkpoints that should be in the run
    synced    {artifact name: generation}                  what the run holds, as far as we know
    unwanted  {artifact name}                              removed locally, to delete in the run

so a checkpoint saved and rotated away before the thread reached it is never uploaded, a
file re-saved under the same name (``last.ckpt``) is uploaded again, and after an outage one
pass brings the run up to date: nothing is lost while the files stay on disk.
"""

from __future__ import annotations

import logging
import os
import posixpath
import threading
from collections.abc import Callable
from typing import Any

_logger = logging.getLogger(__name__)


class ArtifactSync:
    """Mirror checkpoint files into ``artifact_dir`` of a run, from a background thread.

    Args:
        repository: a factory for the run's MLflow artifact repository (called once, lazily,
            in the worker thread).
        artifact_dir: the folder of the run that holds the checkpoints.
        on_failure: called once per outage, from the worker thread, with the first error.
        on_recovery: called when transfers succeed again after a failure.
    """

    def __init__(
        self,
        repository: Callable[[], Any],
        artifact_dir: str,
        on_failure: Callable[[BaseException], None],
        on_recovery: Callable[[], None],
    ) -> None:
        self._repository_factory = repository
        self._repository: Any = None
        self.artifact_dir = artifact_dir
        self._on_failure = on_failure
        self._on_recovery = on_recovery
        self._changed = threading.Condition()
        self._wanted: dict[str, tuple[str, int]] = {}
        self._synced: dict[str, int] = {}
        self._unwanted: set[str] = set()
        self._generation = 0
        self._dirty = False
        self._busy = False
        self._closing = False
        self._failing = False
        self.last_error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # -- called from the training loop ---------------------------------------------------------

    def upload(self, local_path: str, name: str) -> None:
        """Make ``name`` (a path relative to ``artifact_dir``) hold the file at ``local_path``."""
        with self._changed:
            self._generation += 1
            self._wanted[name] = (local_path, self._generation)
            self._unwanted.discard(name)
            self._wake()

    def remove(self, name: str) -> None:
        """Make ``name`` leave the run."""
        with self._changed:
            self._wanted.pop(name, None)
            self._unwanted.add(name)
            self._wake()

    def drain(self, timeout: float | None = None) -> dict[str, str]:
        """Retry whatever is pending and wait for the thread to finish.

        Returns:
            ``{artifact name: local path}`` of the checkpoints still not in the run (the
            transfers failed again); empty when the run is up to date.
        """
        with self._changed:
            if self._thread is None and not self._pending():
                return {}
            self._wake()
            self._changed.wait_for(lambda: not self._busy and not self._dirty, timeout)
            return {name: self._wanted[name][0] for name in self._pending_uploads()}

    def close(self, timeout: float | None = None) -> None:
        """Stop the thread once it is idle (call :meth:`drain` first to finish the work)."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._changed:
            self._thread = None
            self._closing = False

    @property
    def synced(self) -> dict[str, int]:
        """The artifact names the run holds, with the generation each was uploaded at."""
        with self._changed:
            return dict(self._synced)

    def restore(self, synced: dict[str, int], generation: int) -> None:
        """Take over what an earlier process uploaded (from a checkpoint's callback state)."""
        with self._changed:
            self._synced.update(synced)
            self._generation = max(self._generation, generation)

    @property
    def generation(self) -> int:
        return self._generation

    # -- the worker ----------------------------------------------------------------------------

    def _wake(self) -> None:
        self._dirty = True
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="datamint-checkpoint-uploads", daemon=True
            )
            self._thread.start()
        self._changed.notify_all()

    def _pending_uploads(self) -> list[str]:
        return [n for n, (_, gen) in self._wanted.items() if self._synced.get(n) != gen]

    def _pending(self) -> bool:
        return bool(self._pending_uploads() or self._unwanted)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._dirty or self._closing)
                if not self._dirty:
                    return
                self._dirty = False
                self._busy = True
                deletions = sorted(self._unwanted)
                uploads = [(n, self._wanted[n]) for n in self._pending_uploads()]
            try:
                self._sync(deletions, uploads)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    def _sync(self, deletions: list[str], uploads: list[tuple[str, tuple[str, int]]]) -> None:
        try:
            if self._repository is None:
                self._repository = self._repository_factory()
            for name in deletions:
                self._repository.delete_artifacts(posixpath.join(self.artifact_dir, name))
                with self._changed:
                    if name not in self._wanted:
                        self._unwanted.discard(name)
                        self._synced.pop(name, None)
            for name, (local_path, generation) in uploads:
                if not os.path.exists(local_path):
                    # Rotated away before its turn came; its deletion is recorded already.
                    _logger.debug("checkpoint %s is gone before its upload; skipped", local_path)
                    continue
                folder = posixpath.join(self.artifact_dir, posixpath.dirname(name)).rstrip("/")
                self._repository.log_artifact(local_path, folder)
                with self._changed:
                    self._synced[name] = generation
        except Exception as error:
            self.last_error = error
            if not self._failing:
                self._failing = True
                self._on_failure(error)
            return
        if self._failing:
            self._failing = False
            self.last_error = None
            self._on_recovery()
