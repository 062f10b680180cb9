"""Loading located models with the loader of their flavor, and the hook the model calls.

A parent model reaches this through :func:`datamint_core._extensions.linked_model_support`
(registered by :mod:`datamint_core.linked_models`), never by importing it: the model is
the domain layer, this the MLflow integration layer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from datamint_core._mlmodel import read_flavors
from datamint_core.errors import LinkedModelError
from datamint_core.linked_models._bundling import BUNDLE_ARTIFACT
from datamint_core.linked_models._locating import hold_located
from datamint_core.linked_models._pinning import pin
from datamint_core.linked_models._reference import PYFUNC_FLAVOR, LinkedModel, LinkSettings
from datamint_core.linked_models._uris import subject

#: model_config key holding the pinned references, so that load_context can read them.
LINKED_MODELS_CONFIG_KEY = "datamint_linked_models"

Loader = Callable[[Path, "str | None"], Any]


def load_linked_models(
    linked: Mapping[str, LinkedModel],
    *,
    device: str | None,
    bundle_dir: str | None = None,
    settings: LinkSettings | None = None,
    loaders: Mapping[str, Loader] | None = None,
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
                f"{subject(key)} is a {reference.flavor!r} model; loading it needs an "
                f"extra (known flavors here: {sorted(known)})."
            )
        # A cached entry stays in place while it loads, even if another process clears
        # the cache meanwhile.
        with hold_located(reference, bundle_dir=bundle_dir, settings=settings) as path:
            flavors = read_flavors(path)
            if reference.flavor not in flavors:
                raise LinkedModelError(
                    f"{subject(key)} ({reference.uri!r}) is not a {reference.flavor} model: "
                    f"its flavors are {sorted(flavors)}."
                )
            loaded[key] = known[reference.flavor](path, device)
    return loaded


def load_pyfunc_on_device(path: Path, device: str | None) -> Any:
    """``mlflow.pyfunc.load_model``, passing the device to models that accept one."""
    import mlflow

    config = {"device": device} if device and _accepts_device(path) else None
    return mlflow.pyfunc.load_model(os.fspath(path), model_config=config)


def load_for_model(
    uris: Mapping[str, tuple[str, str]],
    *,
    context: Any,
    device: str,
    loaders: Mapping[str, Loader],
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


def _accepts_device(path: Path) -> bool:
    config = read_flavors(path).get(PYFUNC_FLAVOR, {}).get("config") or {}
    return "device" in config
