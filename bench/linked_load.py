"""Loading a parent whose linked models come from the artifact cache vs from local paths.

Two children are registered in an embedded SQLite registry (in a temporary directory).
Parent A links them as ``models:/child-*/1`` and is loaded once to fill the cache; every
timed load then finds them in the cache (checksums of every file verified). Parent B links
the very same model directories by local path. Both parents are loaded with
``datamint_core.load_model`` in turn, 15 times each.

Anchor: parent B (local paths). Target (issue #3): cached <= 1.2x local paths.

Run: ``.venv/core/bin/python bench/linked_load.py``
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

N_RUNS = 15


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="datamint-bench-linked-"))
    os.chdir(work)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["DATAMINT_CACHE_DIR"] = str(work / "cache")
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")

    import mlflow
    from _common import Summary, print_header, print_ratio, print_table
    from _models import Parent, ScaledMean

    import datamint_core
    from datamint_core.artifact_cache import model_key, store_identity

    print_header("Load a parent with 2 linked models: from the artifact cache vs local paths")
    with mlflow.start_run():
        for name, factor in (("child-a", 2.0), ("child-b", 3.0)):
            datamint_core.log_model(ScaledMean(factor), name=name, registered_model_name=name)
    cached = Parent(mlflow_models_uri={"a": "models:/child-a/1", "b": "models:/child-b/1"})
    datamint_core.save_model(cached, work / "parent-cached")
    datamint_core.load_model(str(work / "parent-cached"))  # fills the cache
    cache = datamint_core.ArtifactCache()
    store = store_identity(mlflow.get_registry_uri())  # entries are keyed by their store
    local = Parent(mlflow_models_uri={
        "a": str(cache.get(model_key(store, "child-a", "1"))),
        "b": str(cache.get(model_key(store, "child-b", "1"))),
    })
    datamint_core.save_model(local, work / "parent-local")

    timings: dict[str, list[float]] = {"cached": [], "local": []}
    for _ in range(N_RUNS):
        for label, path in (("cached", "parent-cached"), ("local", "parent-local")):
            started = time.perf_counter()
            model = datamint_core.load_model(str(work / path))
            timings[label].append((time.perf_counter() - started) * 1000)
            assert len(model.get_mlflow_models()) == 2
    print_table([
        ("ours:   linked models from the cache (verified)", Summary.of(timings["cached"])),
        ("anchor: linked models from local paths", Summary.of(timings["local"])),
    ], unit="ms")
    print_ratio("cached / local paths", timings["cached"], timings["local"], target=1.2)


if __name__ == "__main__":
    main()
