"""Bundling: every linked model copied into the parent, so that it serves with no server.

``save_model(bundle_linked_models=True)`` stages the copies with :func:`stage_bundle`;
MLflow moves them into the saved model as the pyfunc artifact :data:`BUNDLE_ARTIFACT`
(``artifacts/linked_models/<key>``) and hands its path to ``load_context``, where a bundled
copy is found before the cache and the server.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from datamint_core.linked_models._locating import hold_located
from datamint_core.linked_models._reference import LinkedModel, LinkSettings

#: Name under which bundled linked models travel as an MLflow pyfunc artifact.
BUNDLE_ARTIFACT = "datamint.linked_models"


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
