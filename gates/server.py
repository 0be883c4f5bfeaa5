"""HTTP routes that list and decide waiting gates, and list the disk bus slots.

Every error answers JSON {"error": "..."} with a 4xx status; nothing a client
sends can produce a 500, release a gate it did not decide, or wedge one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from . import imagebus, imaging, pools, review_page
from .constants import (
    EVENT_DEADLINE,
    MAX_REQUEST_BYTES,
    ROUTE_BUS_LIST,
    ROUTE_CANCEL,
    ROUTE_CHOOSE,
    ROUTE_PENDING,
    ROUTE_POOL_LIST,
    ROUTE_REVIEW,
    ROUTE_TOUCH,
)
from .pause import GATES, KIND_IMAGE, GateBus, GateError, validate_route

log = logging.getLogger("datasete_gates")


class BadRequest(Exception):
    pass


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _read_json(request: web.Request, limit: int = MAX_REQUEST_BYTES) -> dict:
    """The body as a JSON object, refusing bodies over `limit` before reading them whole."""
    length = request.content_length
    if length is not None and length > limit:
        raise BadRequest(f"request body of {length} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    try:
        while True:
            chunk = await request.content.read(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise BadRequest(f"request body is over the limit of {limit} bytes")
            chunks.append(chunk)
    except (web.RequestPayloadError, HttpProcessingError, ConnectionResetError) as exc:
        # A body that lies about its length or compression, or a client gone mid-body, is the
        # client's fault: a plain 400, not a logged server failure.
        raise BadRequest(f"request body could not be read: {exc}") from None
    raw = b"".join(chunks)
    try:
        body = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise BadRequest("body is not valid JSON: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"body must be a JSON object, got {type(body).__name__}")
    return body


def _guarded(handler):
    """Turn every failure into a JSON 4xx answer; the server must never answer 500."""

    async def guarded(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except BadRequest as exc:
            return _error(getattr(exc, "status", 400), str(exc))
        except GateError as exc:
            return _error(exc.status, str(exc))
        except imaging.ImagingError as exc:
            return _error(400, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must not become a 500 or kill the server
            log.exception("datasete gate route %s failed", request.path)
            return _error(400, f"request could not be processed: {type(exc).__name__}: {exc}")

    guarded.__name__ = handler.__name__
    return guarded


def make_handlers(bus: GateBus = GATES, bus_base: Callable[[], str] | None = None,
                  max_body: int = MAX_REQUEST_BYTES, input_dir: Callable[[], str] | None = None,
                  user_dir: Callable[[], str] | None = None, pool_base: Callable[[], str] | None = None,
                  broadcast: Callable[[str, dict], None] | None = None,
                  extension_name: Callable[[], str] | None = None) -> dict:
    """The route handlers, bound to a GateBus, a way to find the slot folder and a body size limit
    (and, for the folder loader's routes, ways to find the input and user folders; for the pool list,
    the pool folder; for touch, how to tell every tab; for the review page, the name ComfyUI serves
    the pack's web folder under)."""

    def tell(event: str, data: dict) -> None:
        if broadcast is not None:
            broadcast(event, data)
            return
        from .gates_compat import broadcast as comfy_broadcast

        comfy_broadcast(event, data)

    async def pending(_request):
        return web.json_response({"pending": bus.pending()})

    async def choose(request):
        body = await _read_json(request, max_body)
        token = body.get("token")
        pause = bus.get(token)
        if pause.kind != KIND_IMAGE:
            # Each kind checks its own answer (grid selection, caption text); the gate keeps waiting on a 400.
            loop = asyncio.get_running_loop()
            decided = await loop.run_in_executor(None, bus.answer, token, body)
            return web.json_response({"ok": True, "token": token, "kind": decided.kind})
        route = validate_route(body.get("route"), pause.routes)
        mask = None
        payload = body.get("mask")
        if payload is not None and payload != "":
            loop = asyncio.get_running_loop()
            mask = await loop.run_in_executor(
                None, imaging.decode_mask_payload, payload, pause.width, pause.height)
        bus.resolve(token, route, mask)
        return web.json_response({"ok": True, "token": token, "route": route})

    async def cancel(request):
        body = await _read_json(request, max_body)
        token = body.get("token")
        bus.cancel(token)
        return web.json_response({"ok": True, "token": token, "route": None})

    async def touch(request):
        body = await _read_json(request, max_body)
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise BadRequest(f"token must be a non-empty string, got {token!r}")
        pause = bus.touch(token)
        if pause.deadline is not None:
            # Every tab (and the review page) counts down to the same moment.
            tell(EVENT_DEADLINE, {"token": pause.token, "node_id": pause.node_id, "deadline": pause.deadline})
        return web.json_response({"deadline": pause.deadline})

    async def bus_list(_request):
        if bus_base is None:
            from .gates_compat import gate_bus_base

            base = gate_bus_base()
        else:
            base = bus_base()
        try:
            ids = await asyncio.get_running_loop().run_in_executor(None, imagebus.list_ids, base)
        except OSError as exc:
            return web.json_response({"ids": [], "error": f"cannot list {base}: {exc.strerror or exc}"})
        return web.json_response({"ids": ids})

    async def pool_list(_request):
        if pool_base is None:
            from .gates_compat import gate_pool_base

            base = gate_pool_base()
        else:
            base = pool_base()
        try:
            found = await asyncio.get_running_loop().run_in_executor(None, pools.list_pools, base)
        except OSError as exc:
            return web.json_response({"pools": [], "error": f"cannot list {base}: {exc.strerror or exc}"})
        return web.json_response({"pools": found})

    async def review(_request):
        # The query is not read: the page takes its language (?lang=) in the browser, so no query can fail here.
        name = (extension_name or review_page.extension_name)()
        return web.Response(text=review_page.render(name), content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    return {
        ("GET", ROUTE_PENDING): _guarded(pending),
        ("POST", ROUTE_CHOOSE): _guarded(choose),
        ("POST", ROUTE_CANCEL): _guarded(cancel),
        ("POST", ROUTE_TOUCH): _guarded(touch),
        ("GET", ROUTE_BUS_LIST): _guarded(bus_list),
        **loader_handlers(max_body, input_dir, user_dir),
        ("GET", ROUTE_POOL_LIST): _guarded(pool_list),
        ("GET", ROUTE_REVIEW): _guarded(review),
    }


def add_routes(routes: web.RouteTableDef, handlers: dict | None = None) -> None:
    for (method, path), handler in (handlers or make_handlers()).items():
        routes.route(method, path)(handler)


def register_routes() -> None:
    """Add the routes to ComfyUI's server (served at /x and /api/x).

    Outside ComfyUI (tests and tools import the pack too) there is no server to add them to.
    """
    try:
        from server import PromptServer
    except ImportError:
        log.debug("ComfyUI's server module is not importable: no routes registered")
        return
    add_routes(PromptServer.instance.routes)


# --- the Image Folder Loader's routes: the folder picker, a walk's state, Reset ------------------------

def _flag(value, name: str) -> bool:
    """A boolean from JSON (true/false) or a query string (true/false/1/0/yes/no, absent = false)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no", ""):
        return value.lower() in ("true", "1", "yes")
    raise BadRequest(f"{name} must be true or false, got {value!r}")


def loader_handlers(max_body: int = MAX_REQUEST_BYTES, input_dir: Callable[[], str] | None = None,
                    user_dir: Callable[[], str] | None = None) -> dict:
    from . import folders, loader
    from .constants import (
        BUS_DIR_NAME,
        EVENT_LOADER,
        FOLDER_PICKER_DEPTH,
        FOLDER_PICKER_LIMIT,
        ROUTE_FOLDERS,
        ROUTE_LOADER_RESET,
        ROUTE_LOADER_STATE,
    )

    def dirs() -> tuple[str, str]:
        from . import gates_compat

        return ((input_dir or gates_compat.input_directory)(), (user_dir or gates_compat.user_directory)())

    async def blocking(fn, *args):
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except folders.FolderNotFound as exc:
            raise _NotFound(str(exc)) from None
        except (folders.FolderError, folders.PositionError) as exc:
            raise BadRequest(str(exc)) from None
        except OSError as exc:
            raise BadRequest(f"{exc.strerror or exc}: {exc.filename}") from None

    def folder_of(value) -> str:
        if not isinstance(value, str):
            raise BadRequest(f"folder must be a string, got {type(value).__name__}")
        return value

    async def folder_list(_request):
        base, _user = dirs()
        found, truncated = await blocking(folders.list_subfolders, base, FOLDER_PICKER_DEPTH, FOLDER_PICKER_LIMIT,
                                          (BUS_DIR_NAME,))
        return web.json_response({"folders": found, "truncated": truncated})

    async def state(request):
        folder = folder_of(request.query.get("folder"))
        recursive = _flag(request.query.get("include_subfolders"), "include_subfolders")
        base, user = dirs()
        return web.json_response(await blocking(loader.loader_state, base, user, folder, recursive))

    async def reset(request):
        body = await _read_json(request, max_body)
        folder = folder_of(body.get("folder"))
        recursive = _flag(body.get("include_subfolders"), "include_subfolders")
        base, user = dirs()
        answer = await blocking(loader.reset_walk, base, user, folder, recursive)
        try:
            from .gates_compat import broadcast

            broadcast(EVENT_LOADER, {**answer, "node_id": None, "reset": True})
        except ImportError:
            pass  # outside ComfyUI: nobody to tell
        return web.json_response(answer)

    return {
        ("GET", ROUTE_FOLDERS): _guarded(folder_list),
        ("GET", ROUTE_LOADER_STATE): _guarded(state),
        ("POST", ROUTE_LOADER_RESET): _guarded(reset),
    }


class _NotFound(BadRequest):
    status = 404
