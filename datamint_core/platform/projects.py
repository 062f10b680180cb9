"""The active Datamint project: the one runs started without an experiment belong to.

``set_project`` resolves a project by name or id through the platform's API and makes it
active for this process (and, through ``DATAMINT_PROJECT_ID``, for its child processes).
Without a call, the project named in the settings (``DATAMINT_PROJECT_ID`` or
``DATAMINT_PROJECT_NAME``, or the config file) is resolved the first time it is needed.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any

from datamint_core.errors import ProjectNotFoundError
from datamint_core.platform.client import PlatformClient
from datamint_core.platform.config import EnvVars, load_settings


@dataclasses.dataclass(frozen=True)
class Project:
    """A Datamint project: its id and its name."""

    id: str
    name: str


_lock = threading.Lock()
_active: Project | None = None


def set_project(project: Any) -> Project:
    """Make ``project`` the active project; return it as resolved by the platform.

    Example::

        from datamint_core.platform import set_project
        set_project("Liver CT")        # by name, or by id, or a Project-like object
        with mlflow.start_run():        # goes to the project's experiment
            ...

    Args:
        project: a project name, a project id, or an object (or dict) with ``id``/``name``.

    Raises:
        ProjectNotFoundError: the platform has no such project (the message lists the names
            it has).
        PlatformConfigError: no API key is configured.
        PlatformAuthError, PlatformUnreachableError: the platform refused the key or did not
            answer.
    """
    global _active
    resolved = resolve_project(project)
    with _lock:
        _active = resolved
        os.environ[EnvVars.DATAMINT_PROJECT_ID.value] = resolved.id
        os.environ.pop(EnvVars.DATAMINT_PROJECT_NAME.value, None)
    return resolved


def resolve_project(project: Any, client: PlatformClient | None = None) -> Project:
    """Look ``project`` (name, id, or object with ``id``/``name``) up on the platform."""
    wanted_id, wanted_name = _identity(project)
    client = client or PlatformClient()
    if wanted_id:
        found = client.get_project(wanted_id)
        if found is not None:
            return Project(str(found["id"]), str(found.get("name", "")))
    projects = client.list_projects()
    for candidate in projects:
        if str(candidate["id"]) == (wanted_id or wanted_name) or (
            wanted_name and candidate.get("name") == wanted_name
        ):
            return Project(str(candidate["id"]), str(candidate.get("name", "")))
    names = sorted(str(p.get("name")) for p in projects)
    shown = ", ".join(repr(n) for n in names[:10]) + (" …" if len(names) > 10 else "")
    raise ProjectNotFoundError(
        f"No Datamint project named or with id {wanted_name or wanted_id!r} at "
        f"{client.settings.api_url}; the projects this API key can see: {shown or 'none'}."
    )


def get_active_project() -> Project | None:
    """Return the active project, resolving the configured one on first use; ``None`` if none.

    Raises:
        ProjectNotFoundError, PlatformAuthError, PlatformUnreachableError: as
            :func:`set_project`, for a project named in the settings.
    """
    global _active
    settings = load_settings()
    with _lock:
        active = _active
    if active is not None and settings.project_id in (None, active.id):
        return active
    if not (settings.project_id or settings.project_name):
        return None
    resolved = resolve_project(
        {"id": settings.project_id, "name": settings.project_name}, PlatformClient(settings)
    )
    with _lock:
        _active = resolved
    return resolved


def get_active_project_id() -> str | None:
    """Return the active project's id (resolving a configured project name on first use)."""
    project = get_active_project()
    return project.id if project else None


def project_is_set() -> bool:
    """Whether a project is active or named in the settings; makes no network call."""
    if _active is not None:
        return True
    settings = load_settings()
    return bool(settings.project_id or settings.project_name)


def _identity(project: Any) -> tuple[str | None, str | None]:
    if isinstance(project, str):
        if not project.strip():
            raise ValueError("set_project needs a project name or id, got an empty string.")
        return project.strip(), project.strip()
    if isinstance(project, dict):
        project_id, name = project.get("id"), project.get("name")
    else:
        project_id, name = getattr(project, "id", None), getattr(project, "name", None)
    if not project_id and not name:
        raise TypeError(
            f"set_project takes a project name, an id, or an object with `id`/`name`; got "
            f"{type(project).__name__}."
        )
    return (str(project_id) if project_id else None), (str(name) if name else None)
