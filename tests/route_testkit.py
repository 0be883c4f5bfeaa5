"""The pack's HTTP handlers served on loopback for the unit tier, without ComfyUI's PromptServer."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gates import server


def serve_handlers(body, **handler_options) -> None:
    """Serve server.make_handlers(**handler_options) on 127.0.0.1 and run `await body(client)` against it."""

    async def main():
        app = web.Application()
        for (method, path), handler in server.make_handlers(**handler_options).items():
            app.router.add_route(method, path, handler)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            await body(client)

    asyncio.run(main())
