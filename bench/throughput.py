"""7. Throughput: gated prompts in a row through a real ComfyUI, the choice made by a script
through the HTTP API, against the same prompts without the gate, interleaved one by one.
The gate's share of the wall time per prompt = (gated - plain) / gated."""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
import uuid

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GATE = "10"


def _prompt(colour: int, side: int, gated: bool) -> dict:
    from gates.constants import NODE_ID

    prompt = {"1": {"class_type": "EmptyImage",
                    "inputs": {"width": side, "height": side, "batch_size": 1, "color": colour}}}
    source = ["1", 0]
    if gated:
        prompt[GATE] = {"class_type": NODE_ID, "inputs": {"routes": 2, "image": ["1", 0]}}
        source = [GATE, 1]
    prompt["20"] = {"class_type": "PreviewImage", "inputs": {"images": source}}
    return prompt


class _Socket:
    """ComfyUI's websocket for one client: hands each gate preview to the chooser at once."""

    def __init__(self, port: int, on_preview):
        import websocket

        self.client_id = uuid.uuid4().hex
        self._ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws?clientId={self.client_id}", timeout=60)
        self._on_preview = on_preview
        self._done: dict[str, threading.Event] = {}
        self._finished: dict[str, float] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def expect(self, prompt_id: str) -> threading.Event:
        with self._lock:
            return self._done.setdefault(prompt_id, threading.Event())

    def finished_at(self, prompt_id: str) -> float:
        return self._finished[prompt_id]

    def _read(self):
        while True:
            try:
                message = self._ws.recv()
            except Exception:  # noqa: BLE001 - the socket closed
                return
            if not message:
                return
            if not isinstance(message, str):
                continue
            message = json.loads(message)
            kind, data = message.get("type"), message.get("data") or {}
            if kind == "datasete_gate.preview":
                self._on_preview(data)
            elif kind in ("execution_success", "execution_error", "execution_interrupted"):
                prompt_id = data.get("prompt_id")
                self._finished[prompt_id] = time.perf_counter()
                self.expect(prompt_id).set()

    def close(self):
        self._ws.close()


def run(quick: bool) -> dict:
    sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))
    try:
        import websocket  # noqa: F401
    except ImportError:
        return {"skipped": "needs websocket-client (pip install websocket-client)"}
    from comfy_server import ComfyServer

    prompts = 10 if quick else 100
    side = 256 if quick else 1024
    server = ComfyServer().start()
    marks: dict[str, dict] = {}
    try:
        def choose(entry):
            seen = time.perf_counter()
            server.post_json("/datasete_gate/choose", {"token": entry["token"], "route": 1})
            marks[entry["prompt_id"]] = {"preview": seen, "chosen": time.perf_counter()}

        socket = _Socket(server.port, choose)
        walls = {True: [], False: []}
        phases = {"to_preview": [], "choice": [], "after_choice": []}
        try:
            for index in range(2 * (prompts + 1)):
                gated = index % 2 == 0 if (index // 2) % 2 == 0 else index % 2 == 1
                colour = (index * 2654435761) & 0xFFFFFF  # a new colour each time: nothing comes from the cache
                started = time.perf_counter()
                prompt_id = server.queue(_prompt(colour, side, gated), client_id=socket.client_id)
                if not socket.expect(prompt_id).wait(120):
                    raise AssertionError(f"prompt {prompt_id} did not finish:\n{server.log_tail()}")
                if index >= 2:  # the first pair warms up ComfyUI
                    finished = socket.finished_at(prompt_id)
                    walls[gated].append(finished - started)
                    if gated:
                        mark = marks[prompt_id]
                        phases["to_preview"].append(mark["preview"] - started)
                        phases["choice"].append(mark["chosen"] - mark["preview"])
                        phases["after_choice"].append(finished - mark["chosen"])
        finally:
            socket.close()
    finally:
        server.cleanup()
    gated, plain = statistics.median(walls[True]), statistics.median(walls[False])
    return {"prompts": prompts, "side": side, "gated_s": gated, "plain_s": plain,
            "gate_s": gated - plain, "share": (gated - plain) / gated,
            # gated prompts, medians: queued -> preview event at the script; the script's POST
            # (its HTTP round trip); POST answered -> ComfyUI reports the prompt done
            "phases_s": {name: statistics.median(values) for name, values in phases.items()}}
