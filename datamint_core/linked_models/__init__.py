"""Linked models: other MLflow models a Datamint model loads at serve time.

A model names them as ``{"detector": "models:/lung-detector@prod", ...}``. Accepted URIs:
``models:/<name>/<version>``, ``models:/<name>@<alias>``, ``models:/<name>/latest``,
``runs:/<run_id>/<path>`` and local paths.

When the parent is saved, every reference is *pinned*: an alias or ``latest`` is resolved
to the concrete version once, and both are written to the MLmodel ``linked_models`` block.
At load time each pinned model is found, in this order:

1. a copy bundled inside the parent's directory (``save_model(bundle_linked_models=True)``);
2. the local artifact cache (:mod:`datamint_core.artifact_cache`), checksums verified,
   under the configured store (the registry URI for ``models:/``, the tracking URI for
   ``runs:/``): an entry another store filled is never used;
3. the tracking server, downloading into the cache (never in offline mode).

A located model is *held* (:func:`hold_located`) while it loads: a concurrent
``ArtifactCache.clear()`` in any process waits until the load is done.

Offline mode (``DATAMINT_OFFLINE=true``) makes no server call: a model missing from the
bundle and the cache is an error naming it, the store and the cache directory, and saying
so when the cache holds that name and version from another store only.
``DATAMINT_ALWAYS_PULL_ARTIFACTS`` re-downloads even on a cache hit;
``DATAMINT_PULL_ARTIFACTS_IN_OFFLINE_MODE`` lets offline mode download artifacts whose
storage location was recorded at pinning time, without asking the registry anything.

One module per concern:

- ``_uris``: the references as written (validation, parsing; no server asked);
- ``_reference``: :class:`LinkSettings` and the pinned record, :class:`LinkedModel`;
- ``_pinning``: :func:`pin`, a URI resolved against the registry once;
- ``_locating``: :func:`hold_located` and :func:`held_model_dir`, bundle, cache, server;
- ``_bundling``: :func:`stage_bundle`, copies saved inside the parent;
- ``_loading``: each flavor's loader, and the hook the model calls;
- ``_errors``: the errors, and MLflow's errors classified by code and type.

Importing this package registers :data:`MODEL_SUPPORT` with
:mod:`datamint_core._extensions`: the model (domain layer) checks and loads its linked
models through that hook, never by importing this package.
"""

from datamint_core import _extensions
from datamint_core.errors import (
    LinkedModelError,
    LinkedModelNotFoundError,
    TrackingServerUnreachableError,
)
from datamint_core.linked_models._bundling import BUNDLE_ARTIFACT, stage_bundle
from datamint_core.linked_models._loading import (
    LINKED_MODELS_CONFIG_KEY,
    load_for_model,
    load_linked_models,
    load_pyfunc_on_device,
)
from datamint_core.linked_models._locating import held_model_dir, hold_located
from datamint_core.linked_models._pinning import pin
from datamint_core.linked_models._reference import (
    PYFUNC_FLAVOR,
    LinkedModel,
    LinkSettings,
)
from datamint_core.linked_models._uris import TOP_LEVEL_KEY, check_linked_uris

#: What :class:`~datamint_core.model.BaseDatamintModel` calls, through the hook.
MODEL_SUPPORT = _extensions.LinkedModelSupport(check_uris=check_linked_uris, load=load_for_model)
_extensions.register_linked_model_support(MODEL_SUPPORT)

__all__ = [
    "BUNDLE_ARTIFACT",
    "LINKED_MODELS_CONFIG_KEY",
    "MODEL_SUPPORT",
    "PYFUNC_FLAVOR",
    "TOP_LEVEL_KEY",
    "LinkSettings",
    "LinkedModel",
    "LinkedModelError",
    "LinkedModelNotFoundError",
    "TrackingServerUnreachableError",
    "check_linked_uris",
    "held_model_dir",
    "hold_located",
    "load_linked_models",
    "load_pyfunc_on_device",
    "pin",
    "stage_bundle",
]
