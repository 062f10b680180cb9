"""The ceiling for ``bench/serve_throughput.py``: a bare FastAPI app on uvicorn serving the
same saved model, as one would write it by hand with no limits, guards or error mapping.

``POST /invocations`` reads the body, ``json.loads`` it, builds the resources with
``datamint_core``'s decoder, calls ``predict`` in the event loop and answers the annotations
as JSON. Run by the benchmark as
``python -m uvicorn _bare_app:create --factory`` with ``BENCH_MODEL_PATH`` set.
"""

from __future__ import annotations

import json
import os

from fastapi import FastAPI, Request
from fastapi.responses import Response

from datamint_core import load_model
from datamint_core.wire import as_resources


def create() -> FastAPI:
    model = load_model(os.environ["BENCH_MODEL_PATH"])
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/ping")
    async def ping() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        envelope = json.loads(await request.body())
        resources = as_resources(envelope["dataframe_records"])
        result = model.predict(resources, envelope.get("params") or {})
        predictions = [[annotation.to_dict() for annotation in entry] for entry in result]
        return Response(json.dumps({"predictions": predictions}), media_type="application/json")

    return app
