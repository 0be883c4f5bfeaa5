"""Part 2: property-based fuzzing of every route's body, headers and framing while a gate waits.

Requests are written byte by byte on a raw socket, so broken framing (lengths that lie, chunking,
compression, oversize declarations) reaches the server as sent. An oracle that mirrors the API decides
whether a generated request would legitimately decide the waiting gate; such requests are turned into
bad ones before sending, so any gate released during fuzzing was released by a bad request.

Two targets share the code: a real ComfyUI (the report and the `comfy` tier) and the pack's handlers
(gates.server.make_handlers) in a plain aiohttp app in this process (the unit tier).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import logging
import random
import re
import socket
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from PIL import Image

from gates.constants import MAX_REQUEST_BYTES, ROUTE_BUS_LIST, ROUTE_CANCEL, ROUTE_CHOOSE, ROUTE_PENDING

from .harness import PartResult, gated_prompt, history_status, timed, uniform_mask_base64, wait_finished

ROUTES = [("GET", ROUTE_PENDING), ("POST", ROUTE_CHOOSE), ("POST", ROUTE_CANCEL), ("GET", ROUTE_BUS_LIST)]


@dataclass
class Gate:
    """The pause under fire: its token, routes and image size, and tokens of earlier pauses."""

    token: str
    routes: int
    width: int
    height: int
    stale: list[str] = field(default_factory=list)


@dataclass
class FuzzRequest:
    method: str
    path: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    framing: str      # length | none | chunked | short | long | duplicate | badlength | over
    encoding: str     # none | gzip | deflate | bogus-gzip | bogus-br

    def describe(self) -> str:
        return (f"{self.method} {self.path[:80]} {self.version} framing={self.framing} encoding={self.encoding} "
                f"headers={[h[0] for h in self.headers]} body[{len(self.body)}]={self.body[:120]!r}")


# --- what the server must see: framing and compression --------------------------------------------


def encoded_body(request: FuzzRequest) -> bytes:
    if request.encoding == "gzip":
        return gzip.compress(request.body)
    if request.encoding == "deflate":
        return zlib.compress(request.body)
    if request.encoding.startswith("bogus"):
        return b"\x1f\x8b\x08\x00not really compressed" + request.body[:64]
    return request.body


def wire_bytes(request: FuzzRequest, host: str) -> tuple[bytes, bool]:
    """The request as sent, and whether the client half-closes instead of finishing the body."""
    body = encoded_body(request)
    headers = [("Host", host), ("Connection", "close")] + list(request.headers)
    if request.encoding in ("gzip", "bogus-gzip"):
        headers.append(("Content-Encoding", "gzip"))
    elif request.encoding == "deflate":
        headers.append(("Content-Encoding", "deflate"))
    elif request.encoding == "bogus-br":
        headers.append(("Content-Encoding", "br"))
    half_close = False
    payload = body
    if request.framing == "length":
        headers.append(("Content-Length", str(len(body))))
    elif request.framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        rng = random.Random(len(body))
        pieces, offset = [], 0
        while offset < len(body):
            size = rng.randint(1, 4096)
            piece = body[offset:offset + size]
            pieces.append(b"%x\r\n%s\r\n" % (len(piece), piece))
            offset += size
        payload = b"".join(pieces) + b"0\r\n\r\n"
    elif request.framing == "short":
        headers.append(("Content-Length", str(max(0, len(body) // 2))))
    elif request.framing == "long":
        headers.append(("Content-Length", str(len(body) + 1000)))
        half_close = True
    elif request.framing == "duplicate":
        headers.append(("Content-Length", str(len(body))))
        headers.append(("Content-Length", str(len(body) + 1)))
    elif request.framing == "badlength":
        headers.append(("Content-Length", random.Random(len(body)).choice(["-1", "abc", "1e3", " ", "0x10",
                                                                         "99999999999999999999999"])))
    elif request.framing == "over":
        # The rest of the declared body never comes and the client waits: the answer must come first.
        headers.append(("Content-Length", str(MAX_REQUEST_BYTES + 1)))
    head = f"{request.method} {request.path} {request.version}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    return head.encode("latin-1", errors="replace") + payload, half_close


def body_the_server_reads(request: FuzzRequest) -> bytes | None:
    """The body bytes a handler would get, or None when the request cannot be read whole."""
    if request.framing in ("long", "duplicate", "badlength", "over") or request.encoding.startswith("bogus"):
        return None
    if request.method != "POST":
        return None
    if request.framing == "none":
        return b""
    if request.framing == "short":
        cut = encoded_body(request)[: max(0, len(encoded_body(request)) // 2)]
        try:
            return gzip.decompress(cut) if request.encoding == "gzip" else (
                zlib.decompress(cut) if request.encoding == "deflate" else cut)
        except (OSError, EOFError, zlib.error):
            return None
    return request.body


def would_decide(request: FuzzRequest, gate: Gate) -> bool:
    """The oracle: True if the API promises this request decides the waiting gate (a good request)."""
    path = request.path.split("?", 1)[0]
    if path.startswith("/api/"):
        path = path[4:]
    # aiohttp serves any HTTP/<digit>.<digit> request line as a request, HTTP/0.9 and 2.0 included.
    if path not in (ROUTE_CHOOSE, ROUTE_CANCEL) or not re.fullmatch(r"HTTP/\d\.\d", request.version):
        return False
    raw = body_the_server_reads(request)
    if raw is None:
        return False
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    if not isinstance(body, dict) or body.get("token") != gate.token:
        return False
    if path == ROUTE_CANCEL:
        return True
    route = body.get("route")
    if isinstance(route, bool) or not isinstance(route, int) or not 1 <= route <= gate.routes:
        return False
    mask = body.get("mask")
    if mask is None or mask == "":
        return True
    from gates import imaging

    try:
        imaging.decode_mask_payload(mask, gate.width, gate.height)
    except Exception:  # noqa: BLE001 - any refusal means the request is a bad one
        return False
    return True


def defuse(request: FuzzRequest, gate: Gate) -> FuzzRequest:
    """Make a request that would decide the gate into a bad one: its token becomes a stale one."""
    stale = gate.stale[0] if gate.stale else "stale-token"
    body = request.body.replace(gate.token.encode(), stale.encode())
    return FuzzRequest(request.method, request.path, request.version, request.headers, body, request.framing,
                       request.encoding)


# --- strategies ----------------------------------------------------------------------------------------

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10 ** 30), 10 ** 30),
                         st.floats(allow_nan=False), st.text(max_size=40))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda children: st.lists(children, max_size=5) | st.dictionaries(
    st.text(max_size=10), children, max_size=5), max_leaves=20)


def _png(width: int, height: int, mode: str = "L", value: int = 255) -> bytes:
    shape = (height, width) if mode == "L" else (height, width, len(mode))
    buffer = io.BytesIO()
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode).save(buffer, format="PNG")
    return buffer.getvalue()


def masks(gate: Gate) -> st.SearchStrategy:
    """Mask payloads, mostly bad: wrong sizes, not PNG, broken base64, broken data URLs, odd types."""
    w, h = gate.width, gate.height
    wrong_size = st.sampled_from([(w + 1, h), (w, h + 1), (1, 1), (h, w) if h != w else (w, w + 2),
                                  (w * 2, h * 2)]).map(lambda size: base64.b64encode(_png(*size)).decode())
    truncated = st.integers(0, 40).map(lambda n: base64.b64encode(_png(w, h)[:n]).decode())
    not_png = st.binary(max_size=300).map(lambda raw: base64.b64encode(b"GIF89a" + raw).decode())
    bomb_header = st.just(base64.b64encode(
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x01\x00\x00\x00\x01\x00\x00\x08\x00\x00\x00\x00\x00"
        b"\x00\x00\x00").decode())
    data_urls = st.sampled_from(["data:image/png,abc", "data:image/png;base64,", "data:;base64,@@@",
                                 "data:", "data:image/png;base64," + "A" * 5])
    good = st.sampled_from(["L", "RGBA", "RGB", "LA"]).map(lambda mode: base64.b64encode(_png(w, h, mode)).decode())
    odd_types = st.one_of(st.integers(), st.booleans(), st.lists(st.integers(), max_size=3),
                          st.dictionaries(st.text(max_size=5), st.integers(), max_size=2), st.floats())
    return st.one_of(wrong_size, truncated, not_png, bomb_header, data_urls, good, odd_types,
                     st.text(max_size=200), st.none(), st.just(""))


def tokens(gate: Gate) -> st.SearchStrategy:
    return st.one_of(st.just(gate.token), st.sampled_from(gate.stale or ["stale"]), st.text(max_size=40),
                     st.integers(), st.none(), st.booleans(), st.lists(st.just(gate.token), max_size=2),
                     st.just(gate.token + " "), st.just(gate.token.upper()), st.just(" " + gate.token))


def route_values(gate: Gate) -> st.SearchStrategy:
    return st.one_of(st.integers(1, gate.routes), st.integers(-5, gate.routes + 5),
                     st.integers(-(10 ** 40), 10 ** 40), st.sampled_from([1.0, 1.5, "1", "2", True, False, None, [],
                                                                           {}, float("inf")]), JSON_SCALARS)


def bodies(gate: Gate) -> st.SearchStrategy:
    decide_shaped = st.fixed_dictionaries(
        {"token": tokens(gate)},
        optional={"route": route_values(gate), "mask": masks(gate), "extra": JSON_VALUES})
    as_json = st.one_of(decide_shaped, JSON_VALUES).map(
        lambda value: json.dumps(value, allow_nan=True).encode())
    odd_text = st.sampled_from([
        b"", b"{", b"}", b"null", b"[]", b'"token"', b"NaN", b'{"token": NaN, "route": Infinity}',
        b"\xef\xbb\xbf{}", b'{"token": "\xff\xfe"}', "{\"token\": \"\u00e9\"}".encode("utf-16"),
        b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000,
    ])
    sized = st.integers(0, 400_000).map(lambda n: b'{"token": "' + b"a" * n + b'", "route": 1}')
    big_mask = st.integers(0, 300_000).map(
        lambda n: json.dumps({"token": gate.token, "route": 1, "mask": "A" * n + "="}).encode())
    return st.one_of(as_json, as_json, as_json, st.binary(max_size=2000), odd_text, sized, big_mask)


HEADER_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1,
                      max_size=30)
HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
                       max_size=200)


def header_lists() -> st.SearchStrategy:
    content_type = st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                    "multipart/form-data; boundary=xyz", "application/json; charset=utf-16",
                                    "", "*/*", "image/png"]).map(lambda v: ("Content-Type", v))
    special = st.sampled_from([("Expect", "100-continue"), ("Origin", "http://evil.example"),
                               ("X-Forwarded-For", "1.2.3.4"), ("Accept-Encoding", "gzip, br"),
                               ("Cookie", "a=" + "b" * 3000), ("X-Long", "v" * 9000), ("Range", "bytes=0-1"),
                               ("Authorization", "Bearer x"), ("User-Agent", "\u00ff" * 20)])
    extra = st.tuples(HEADER_NAME, HEADER_VALUE)
    return st.lists(st.one_of(content_type, special, extra), max_size=6)


def requests(gate: Gate) -> st.SearchStrategy:
    route = st.sampled_from(ROUTES)
    prefix = st.sampled_from(["", "", "/api"])
    suffix = st.sampled_from(["", "", "", "/", "?token=" + gate.token, "?x=%00%ff", "//", "?" + "q" * 9000,
                              "/../pending", "%2e%2e/"])
    method = st.sampled_from(["GET", "POST", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "FOO", "P\x00ST"])
    version = st.sampled_from(["HTTP/1.1"] * 8 + ["HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/1.1 extra"])
    framing = st.sampled_from(["length"] * 8 + ["none", "chunked", "chunked", "short", "long", "duplicate",
                                                "badlength", "over"])
    encoding = st.sampled_from(["none"] * 10 + ["gzip", "deflate", "bogus-gzip", "bogus-br"])

    @st.composite
    def build(draw):
        (own_method, path) = draw(route)
        chosen_method = own_method if draw(st.integers(0, 3)) else draw(method)
        return FuzzRequest(chosen_method, draw(prefix) + path + draw(suffix), draw(version), draw(header_lists()),
                           draw(bodies(gate)), draw(framing), draw(encoding))

    return build()


# --- sending ---------------------------------------------------------------------------------------------


def send_raw(host: str, port: int, request: FuzzRequest, timeout: float = 20.0) -> int | None:
    """Send the request and return the answer's status code, or None if the server closed without one."""
    data, half_close = wire_bytes(request, f"{host}:{port}")
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early (bad headers) and closed: read what it said
        received = b""
        try:
            while True:
                status = _final_status(received)
                if status is not None:
                    return status
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return _final_status(received, complete=True)


def _final_status(received: bytes, complete: bool = False) -> int | None:
    """The status of the first answer that is not an interim 1xx (such as 100 Continue)."""
    while True:
        head, sep, rest = received.partition(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0].split()
        if not (len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit()):
            return None
        status = int(line[1])
        if not 100 <= status < 200:
            return status
        if not sep:
            return None if not complete else status
        received = rest


def send_streamed_oversize(host: str, port: int, path: str, total: int) -> int | None:
    """A chunked body streamed past the size limit: the server must stop reading and refuse it."""
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    piece = b"a" * 1_048_576
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    with socket.create_connection((host, port), timeout=60) as sock:
        try:
            sock.sendall(head + b"%x\r\n" % 11 + b'{"token": "' + b"\r\n")
            sent = 0
            while sent < total:
                sock.sendall(chunk)
                sent += len(piece)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            answer = sock.recv(4096)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    line = answer.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 and line[1].isdigit() else None


# --- targets ---------------------------------------------------------------------------------------------


class Tally:
    def __init__(self):
        self.sent = 0
        self.statuses: Counter = Counter()
        self.server_errors: list[str] = []
        self.silent: list[str] = []
        self.released: list[str] = []
        self.wedged: list[str] = []
        self.defused = 0
        self.half_closed = 0
        self.largest_body = 0
        self.gates = 0


class InProcessTarget:
    """The pack's route handlers in an aiohttp app on a real socket, with a gate waiting in a thread."""

    def __init__(self):
        from aiohttp import web

        from gates.pause import GateBus
        from gates.server import make_handlers

        self.bus = GateBus()
        self.guard_catches: list[str] = []
        handler = _ListHandler(self.guard_catches)
        logging.getLogger("datasete_gates").addHandler(handler)
        self._log_handler = handler
        # aiohttp logs every malformed request it refuses with a traceback: that is its job, not news here.
        self._quiet = logging.getLogger("aiohttp.server")
        self._quiet_level = self._quiet.level
        self._quiet.setLevel(logging.CRITICAL)
        app = web.Application(client_max_size=100 * 1024 * 1024)
        for (method, path), route_handler in make_handlers(self.bus, bus_base=lambda: "/nonexistent/gate_bus").items():
            app.router.add_route(method, path, route_handler)
            app.router.add_route(method, "/api" + path, route_handler)
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.host, self.port = "127.0.0.1", site._server.sockets[0].getsockname()[1]
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._waiter: threading.Thread | None = None
        self._pause = None
        self._outcome: dict = {}

    def open_gate(self, rng: random.Random, stale: list[str]) -> Gate:
        routes, width, height = rng.randint(1, 8), rng.randint(4, 40), rng.randint(4, 40)
        self._pause = self.bus.arm("7", routes, prompt_id="fuzz", width=width, height=height)
        self._outcome = {}
        pause = self._pause

        def wait():
            try:
                self.bus.wait(pause, None, 0.05)
                self._outcome["route"] = pause.route
            except Exception as exc:  # noqa: BLE001 - recorded and checked
                self._outcome["error"] = repr(exc)

        self._waiter = threading.Thread(target=wait, daemon=True)
        self._waiter.start()
        return Gate(pause.token, routes, width, height, list(stale))

    def still_waiting(self, gate: Gate) -> bool:
        return any(entry["token"] == gate.token for entry in self.bus.pending())

    def close_gate(self, gate: Gate, mask: str | None) -> str | None:
        """Decide the gate properly; None if that worked, else what went wrong (a wedged gate)."""
        body = {"token": gate.token, "route": gate.routes}
        if mask:
            body["mask"] = mask
        request = FuzzRequest("POST", ROUTE_CHOOSE, "HTTP/1.1", [("Content-Type", "application/json")],
                              json.dumps(body).encode(), "length", "none")
        status = send_raw(self.host, self.port, request)
        self._waiter.join(10)
        if status != 200 or self._waiter.is_alive() or self._outcome.get("route") != gate.routes:
            return f"choose answered {status}, waiter alive={self._waiter.is_alive()}, outcome={self._outcome}"
        return None

    def close(self) -> None:
        async def shutdown():
            await self._runner.cleanup()
            # Connections aiohttp still lingers on (draining bodies the handlers refused unread) end here.
            lingering = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in lingering:
                task.cancel()
            await asyncio.gather(*lingering, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        logging.getLogger("datasete_gates").removeHandler(self._log_handler)
        self._quiet.setLevel(self._quiet_level)


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str]):
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record):
        kind = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        self.sink.append(f"{record.getMessage()} {kind}".strip())


class ComfyTarget:
    """A real ComfyUI with a gated prompt waiting."""

    def __init__(self, server):
        self.server = server
        self.host, self.port = "127.0.0.1", server.port
        self._prompt_id = None
        self._log_offset = server.log_path.stat().st_size if server.log_path.exists() else 0

    @property
    def guard_catches(self) -> list[str]:
        try:
            with open(self.server.log_path, "rb") as handle:
                handle.seek(self._log_offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if "datasete gate route" in line and "failed" in line]

    def open_gate(self, rng: random.Random, stale: list[str]) -> Gate:
        routes, width, height = rng.randint(1, 8), rng.randint(4, 40), rng.randint(4, 40)
        prompt = gated_prompt(width=width, height=height, routes=routes, color=rng.randint(0, 0xFFFFFF),
                              output_route=routes)
        self._prompt_id = self.server.queue(prompt)
        entry = self.server.wait_pending(prompt_id=self._prompt_id, timeout=60)[0]
        return Gate(entry["token"], routes, width, height, list(stale))

    def still_waiting(self, gate: Gate) -> bool:
        return any(entry["token"] == gate.token for entry in self.server.pending())

    def close_gate(self, gate: Gate, mask: str | None) -> str | None:
        body = {"token": gate.token, "route": gate.routes}
        if mask:
            body["mask"] = mask
        status, answer = self.server.post_json(ROUTE_CHOOSE, body)
        history = wait_finished(self.server, self._prompt_id, timeout=60)
        outcome = history_status(history)
        if status != 200 or outcome != "success":
            return f"choose answered {status} {answer}, prompt ended {outcome or 'never'}"
        return None

    def close(self) -> None:
        pass


# --- the part ------------------------------------------------------------------------------------------


def fuzz(target, tally: Tally, gates: int, per_gate: int, seed_value: int, strict: bool) -> None:
    rng = random.Random(seed_value)
    stale: list[str] = []
    for round_index in range(gates):
        gate = target.open_gate(rng, stale)
        _fuzz_gate(target, tally, gate, per_gate, seed_value * 1000 + round_index, strict)
        if target.still_waiting(gate):
            valid_mask = uniform_mask_base64(gate.width, gate.height, 255) if round_index % 2 else None
            trouble = target.close_gate(gate, valid_mask)
            if trouble:
                tally.wedged.append(trouble)
        stale.insert(0, gate.token)


def _fuzz_gate(target, tally: Tally, gate: Gate, per_gate: int, seed_for_gate: int, strict: bool) -> None:
    """Hypothesis draws `per_gate` requests at one waiting gate; each must be refused and leave it waiting."""
    tally.gates += 1
    released: list[str] = []

    @settings(max_examples=per_gate, deadline=None, database=None, print_blob=False,
              suppress_health_check=list(HealthCheck),
              phases=[Phase.generate, Phase.shrink] if strict else [Phase.generate])
    @seed(seed_for_gate)
    @given(request=requests(gate))
    def one_request(request: FuzzRequest) -> None:
        if would_decide(request, gate):
            request = defuse(request, gate)
            tally.defused += 1
            assert not would_decide(request, gate)
        status = send_raw(target.host, target.port, request)
        tally.sent += 1
        tally.half_closed += request.framing == "long"
        tally.largest_body = max(tally.largest_body, len(request.body))
        tally.statuses[_status_class(status)] += 1
        problems = []
        if status is not None and status >= 500:
            tally.server_errors.append(f"{status}: {request.describe()}")
            problems.append(f"answered {status}")
        if status is None and request.framing != "long":
            tally.silent.append(request.describe())
        if not released and not target.still_waiting(gate):
            released.append(request.describe())  # counted once: the gate stays gone for this round
            tally.released.append(request.describe())
            problems.append("released the gate")
        if strict:
            assert not problems, f"{problems}: {request.describe()}"

    one_request()


def oversize_checks(target, tally: Tally) -> None:
    """Two bodies streamed past the 64 MiB limit (chunked, so no length to refuse them by) while a gate waits."""
    rng = random.Random(5)
    gate = target.open_gate(rng, [])
    tally.gates += 1
    for path in (ROUTE_CHOOSE, "/api" + ROUTE_CANCEL):
        status = send_streamed_oversize(target.host, target.port, path, MAX_REQUEST_BYTES + 2 * 1_048_576)
        tally.sent += 1
        tally.largest_body = max(tally.largest_body, MAX_REQUEST_BYTES + 2 * 1_048_576)
        tally.statuses[_status_class(status)] += 1
        if status is None or status >= 500:
            tally.server_errors.append(f"{status}: chunked body over the limit to {path}")
        if not target.still_waiting(gate):
            tally.released.append(f"chunked body over the limit to {path}")
    trouble = target.close_gate(gate, None)
    if trouble:
        tally.wedged.append(trouble)


def _status_class(status: int | None) -> str:
    return "no answer" if status is None else f"{status // 100}xx"


def run(target, *, gates: int, per_gate: int, seed_value: int = 1, strict: bool = False,
        oversize: bool = True, title: str = "HTTP fuzzing") -> PartResult:
    result = PartResult("2", title)
    tally = Tally()
    with timed(result):
        try:
            fuzz(target, tally, gates, per_gate, seed_value, strict)
            if oversize:
                oversize_checks(target, tally)
        finally:
            catches = target.guard_catches
            target.close()
    result.stated("routes fuzzed", ", ".join(f"{m} {p}" for m, p in ROUTES) + " (also under /api)")
    result.stated("gates waiting under fire", tally.gates)
    result.stated("requests sent", tally.sent)
    result.stated("answers", ", ".join(f"{k} {v}" for k, v in sorted(tally.statuses.items())))
    result.stated("largest body (bytes)", tally.largest_body)
    result.stated("good requests turned bad by the oracle before sending", tally.defused)
    result.at_most("5xx answers", len(tally.server_errors), 0)
    result.at_most("gates released by a bad request", len(tally.released), 0)
    result.at_most("gates wedged by a bad request (a proper choice then failed)", len(tally.wedged), 0)
    result.at_most("unexpected exceptions caught by the routes' guard (logged)", len(catches), 0)
    result.stated("requests that declared more body than they sent and half-closed (aiohttp then drops the "
                  "connection unanswered)", tally.half_closed)
    result.at_most("other requests the server closed without answering", len(tally.silent), 0)
    for line in tally.server_errors[:10] + tally.released[:10] + tally.wedged[:10] + catches[:10] + tally.silent[:5]:
        result.note(line)
    return result


def run_in_process(*, gates: int, per_gate: int, seed_value: int = 1, strict: bool = False,
                   oversize: bool = True) -> PartResult:
    # On a thread of its own: the browser tier's Playwright keeps an event loop running on the main
    # thread for the whole session, and the in-process server needs to run loops of its own.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as worker:
        return worker.submit(
            lambda: run(InProcessTarget(), gates=gates, per_gate=per_gate, seed_value=seed_value, strict=strict,
                        oversize=oversize, title="HTTP fuzzing (pack handlers in a plain aiohttp app)")).result()


def run_comfy(server, *, gates: int, per_gate: int, seed_value: int = 1, strict: bool = False,
              oversize: bool = True) -> PartResult:
    started = time.monotonic()
    result = run(ComfyTarget(server), gates=gates, per_gate=per_gate, seed_value=seed_value, strict=strict,
                 oversize=oversize, title="HTTP fuzzing (real ComfyUI)")
    result.seconds = round(time.monotonic() - started, 1)
    return result
