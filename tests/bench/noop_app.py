"""The baseline: a no-op Starlette endpoint, served exactly like the bridge."""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def noop(request: Request) -> Response:
    return JSONResponse({"accepted": True}, status_code=202)


app = Starlette(routes=[Route("/webhooks/crm", noop, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
                log_level="warning", access_log=False)
