"""The HTTP floor of `bench.serving`: the cheapest server that does what `/score` must do over HTTP.

A FastAPI app run by the same uvicorn settings as `vae-anomaly serve` (import string, factory, one
worker, log level info) whose `POST /score` parses the same JSON body with orjson and answers a
response of the same shape (one result per record, three `top_features` each) without touching a
model. The service can only approach it: whatever the service spends beyond this is its own cost.

    python -m uvicorn bench.http_floor:create_app --factory --port 8001 --log-level info
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request, Response

RESULT: dict[str, Any] = {
    "score": 5.39,
    "elbo": -5.39,
    "reconstruction_error": 3.48,
    "p_value": 0.991,
    "is_anomaly": False,
    "thresholds_exceeded": [],
    "missing": [],
    "top_features": [{"feature": "x0", "contribution": 1.01, "value": 0.5, "expected": 0.4}] * 3,
}


def create_app() -> FastAPI:
    app = FastAPI(title="http-floor")

    @app.post("/score")
    async def score(request: Request) -> Response:
        data = orjson.loads(await request.body())
        n = len(data["data"]) if "columns" in data else len(data["records"])
        body = {"model": {"id": "000000000000", "version": "floor"}, "results": [RESULT] * n}
        return Response(orjson.dumps(body), media_type="application/json")

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    return app
