"""One real local Spark session (``local[2]``) for the whole test session.

Spark takes seconds to start on two cores, so every Spark test shares it; its Python
workers run this interpreter with the repository importable (the test models live there).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.core.batch_models import LOAD_LOG_ENV


@pytest.fixture(scope="session")
def spark_load_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file every model load appends its pid to, in Spark's workers too."""
    return tmp_path_factory.mktemp("spark-loads") / "loads.txt"


@pytest.fixture(scope="session")
def spark(spark_load_log: Path):
    from datamint_core.batch._spark import local_session

    # Spark's Python workers inherit the environment the session starts with.
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), saved]))
    os.environ[LOAD_LOG_ENV] = str(spark_load_log)
    session = local_session(2)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    os.environ.pop(LOAD_LOG_ENV, None)
    if saved is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = saved
