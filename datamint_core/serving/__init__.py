"""Local deployment of Datamint models: the scoring server, MLflow's FlavorBackend, images.

- :class:`DatamintBackend`: MLflow's ``FlavorBackend`` for the ``datamint`` flavor.
- :class:`ServerConfig`: the server's limits and permissions.
- :mod:`datamint_core.serving.app`: the FastAPI app (``create_app``); FastAPI and uvicorn are
  imported only there, when a server starts.
- :mod:`datamint_core.serving.payload`: what ``POST /invocations`` accepts and answers.
- :mod:`datamint_core.serving.dockerfile`: the serving image.

The ``datamint`` command (:mod:`datamint_core.cli`) drives all of them.
"""

from datamint_core.serving.backend import DatamintBackend
from datamint_core.serving.config import ServerConfig

__all__ = ["DatamintBackend", "ServerConfig"]
