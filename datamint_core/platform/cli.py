"""``datamint config``: write and show the Datamint platform settings.

Examples::

    datamint config --api-key - --api-url https://api.datamint.io   # key read from stdin
    datamint config --project-name "Liver CT"
    datamint config                    # show the settings (the key masked) and their sources
    datamint config --check            # ask the platform whether it takes the key
    datamint config --unset project_name
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

_FIELDS = ("api_key", "api_url", "mlflow_url", "project_id", "project_name", "projects_dir")


def add_config_command(commands: Any) -> None:
    """Register ``datamint config`` on the ``datamint`` command's subparsers."""
    config = commands.add_parser(
        "config",
        help="set or show the Datamint platform settings (API key, URLs, project)",
        description="Write the Datamint platform settings to the user config file (mode "
        "0600), or show them. The environment (DATAMINT_API_KEY, DATAMINT_API_URL, "
        "DATAMINT_MLFLOW_URL, DATAMINT_PROJECT_ID, DATAMINT_PROJECT_NAME, "
        "DATAMINT_PROJECTS_DIR) wins over the file.",
    )
    config.add_argument("--api-key", help="the API key; '-' reads it from stdin (keeps it out "
                        "of the shell history)")
    config.add_argument("--api-url", help="the platform's API URL (https; http only to localhost)")
    config.add_argument("--mlflow-url", help="the platform's MLflow server URL (default: the "
                        "API's host, port 5000)")
    config.add_argument("--project-id", help="the default project, by id")
    config.add_argument("--project-name", help="the default project, by name")
    config.add_argument("--projects-dir", help="the directory of local training projects "
                        "(Decathlon / nnU-Net layout), found by name by ImageDataset")
    config.add_argument("--unset", action="append", default=[], choices=_FIELDS,
                        metavar="KEY", help=f"remove KEY from the file ({', '.join(_FIELDS)})")
    config.add_argument("--check", action="store_true",
                        help="ask the platform whether it accepts the key (one request)")
    config.set_defaults(run=run_config)


def run_config(args: argparse.Namespace, params: dict[str, Any]) -> int:
    """Write the given settings, then show the resolved ones (the key masked)."""
    from datamint_core.platform.config import load_settings, write_config_file

    updates: dict[str, str | None] = {
        field: getattr(args, field) for field in _FIELDS if getattr(args, field) is not None
    }
    if updates.get("api_key") == "-":
        updates["api_key"] = sys.stdin.readline().strip()
        if not updates["api_key"]:
            raise ValueError("--api-key - read an empty line from stdin; give the key.")
    updates.update({field: None for field in args.unset})
    if updates:
        path = write_config_file(updates)
        print(f"wrote {path} (mode 0600)")
    settings = load_settings()
    _show(settings)
    if args.check:
        from datamint_core.platform.client import PlatformClient

        projects = PlatformClient(settings).list_projects()
        print(f"the platform at {settings.api_url} accepts the key; it sees "
              f"{len(projects)} project(s)")
    return 0


def _show(settings: Any) -> None:
    from datamint_core.platform.config import config_path, masked

    path = config_path()
    print(f"config file: {path}{'' if path.exists() else ' (none)'}")
    shown = {
        "api_key": masked(settings.api_key),
        "api_url": settings.api_url,
        "mlflow_url": settings.mlflow_url,
        "project_id": settings.project_id or "(not set)",
        "project_name": settings.project_name or "(not set)",
        "projects_dir": settings.projects_dir or "(not set)",
    }
    for field, value in shown.items():
        source = settings.sources.get(field)
        print(f"  {field:<13}{value}{f'  ({source})' if source else ''}")
    if settings.configured:
        print(f"  tracking URI {settings.tracking_uri}")
