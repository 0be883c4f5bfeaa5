"""4. Resume: from the POST that chooses a route to ImageGate.run() returning, over many pauses.

A real aiohttp server on 127.0.0.1 serves the gate's own route handlers; the gate's real
run() waits in a worker thread, as in ComfyUI's prompt worker. Only ComfyUI's few hooks
(temp folder, websocket broadcast, interrupt flag, blocker) are stand-ins.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import queue
import shutil
import statistics
import tempfile
import threading
import time
from contextlib import contextmanager

import torch


class _ComfyHooks:
    """The functions of gates_compat that need ComfyUI, replaced for the length of the run."""

    def __init__(self, temp: str):
        self.temp = temp
        self.previews: queue.Queue = queue.Queue()

    @contextmanager
    def installed(self):
        from gates import gates_compat

        names = ("execution_blocker", "gate_bus_base", "temp_directory", "current_prompt_id", "broadcast",
                 "check_interrupt", "interrupted_exception")
        saved = {name: getattr(gates_compat, name) for name in names}
        blocker = object()
        replacements = {
            "execution_blocker": lambda: blocker,
            "gate_bus_base": lambda: self.temp + "/gate_bus",
            "temp_directory": lambda: self.temp,
            "current_prompt_id": lambda: None,
            "broadcast": self._broadcast,
            "check_interrupt": lambda: None,
            "interrupted_exception": lambda: RuntimeError("interrupted"),
        }
        for name, fn in replacements.items():
            setattr(gates_compat, name, fn)
        try:
            yield
        finally:
            for name, fn in saved.items():
                setattr(gates_compat, name, fn)

    def _broadcast(self, event: str, data: dict) -> None:
        json.dumps(data)  # send_sync serializes every event
        if event.endswith(".preview"):
            self.previews.put(data)


@contextmanager
def _server(bus):
    from aiohttp import web

    from gates.server import make_handlers

    ready = threading.Event()
    state = {}

    def serve():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = web.Application()
        for (method, path), handler in make_handlers(bus).items():
            app.router.add_route(method, path, handler)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        state["port"] = site._server.sockets[0].getsockname()[1]
        state["loop"] = loop
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(30)
    try:
        yield state["port"]
    finally:
        state["loop"].call_soon_threadsafe(state["loop"].stop)
        thread.join(10)


def run(quick: bool) -> dict:
    from gates.nodes import image_gate
    from gates.pause import GateBus

    pauses = 10 if quick else 200
    temp = tempfile.mkdtemp(prefix="bench-resume-")
    hooks = _ComfyHooks(temp)
    node = image_gate.ImageGate()
    node.bus = GateBus()
    image = torch.rand(1, 64, 64, 3)
    returned: queue.Queue = queue.Queue()
    latencies, posts = [], []
    try:
        with hooks.installed(), _server(node.bus) as port:
            def worker():
                for _ in range(pauses + 1):
                    node.run(2, unique_id="7", image=image)
                    returned.put(time.perf_counter())

            thread = threading.Thread(target=worker, daemon=True)
            thread.start()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for index in range(pauses + 1):
                entry = hooks.previews.get(timeout=30)
                body = json.dumps({"token": entry["token"], "route": 1})
                sent = time.perf_counter()
                connection.request("POST", "/datasete_gate/choose", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                answered = time.perf_counter()
                if response.status != 200:
                    raise AssertionError(f"choose answered {response.status}")
                done = returned.get(timeout=30)
                if index:  # the first pause warms up the server and imports
                    latencies.append(done - sent)
                    posts.append(answered - sent)
            thread.join(30)
            connection.close()
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    return {"pauses": pauses, "median_s": statistics.median(latencies), "p99_s": p99, "max_s": latencies[-1],
            "post_median_s": statistics.median(posts)}
