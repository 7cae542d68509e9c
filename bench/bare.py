"""The yardstick: a bare Starlette endpoint that parses the JSON body and answers 200, under
the same uvicorn settings as `smsbridge serve` (bridge/cli.py), on the loop and HTTP parser
given (`auto` as `serve` picks them: bridge/runtime.py).

    python -m bench.bare PORT [LOOP HTTP]
"""

from __future__ import annotations

import json
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge import runtime
from bridge.settings import DEFAULT_KEEP_ALIVE, DEFAULT_MAX_CONNECTIONS


async def receive(request: Request) -> JSONResponse:
    items = json.loads(await request.body())
    return JSONResponse({"accepted": len(items)})


async def healthz(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/webhooks/smstools/{token}", receive, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
)

if __name__ == "__main__":
    port = int(sys.argv[1])
    stack = runtime.choose(*sys.argv[2:4])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        loop=stack.loop,
        http=stack.http,
        log_config=None,
        access_log=False,
        # The bridge's defaults (the benchmark sets neither BRIDGE_MAX_CONNECTIONS nor
        # BRIDGE_KEEP_ALIVE), so both sides bound connections alike.
        limit_concurrency=DEFAULT_MAX_CONNECTIONS,
        timeout_keep_alive=DEFAULT_KEEP_ALIVE,
    )
    uvicorn.Server(config).run()
