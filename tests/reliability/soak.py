"""Part 6: hundreds of gated prompts in a row in one real ComfyUI, each chosen through the HTTP API.

The workload mixes what people do: batches of several sizes, painted masks, publishes to a slot and gates
loading from it. The server's threads and resident memory are read from /proc at the start, after a
warm-up (ComfyUI and torch allocate their pools lazily) and at the end; each prompt is removed from
ComfyUI's history once checked, so its own bookkeeping does not count as growth. A websocket client
counts the preview and resolved events, one of each per pause.
"""

from __future__ import annotations

import json
import random
import threading
import time

import websocket

from gates.constants import EVENT_PREVIEW, EVENT_RESOLVED

from .harness import (
    PartResult,
    gated_prompt,
    history_status,
    preview_files,
    proc_status,
    timed,
    uniform_mask_base64,
    wait_finished,
)

SLOT = "soak_slot"
THREAD_GROWTH_BOUND = 2
RSS_GROWTH_BOUND_MIB = 16


class EventCounter:
    """A browser stand-in: one websocket client counting the gate's events."""

    def __init__(self, port: int):
        self.counts = {EVENT_PREVIEW: 0, EVENT_RESOLVED: 0}
        self._socket = websocket.create_connection(f"ws://127.0.0.1:{port}/ws?clientId=soak-counter", timeout=5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while not self._stop.is_set():
            try:
                message = self._socket.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError):
                return
            if isinstance(message, str):
                try:
                    kind = json.loads(message).get("type")
                except ValueError:
                    continue
                if kind in self.counts:
                    self.counts[kind] += 1

    def settle(self, expected: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and min(self.counts.values()) < expected:
            time.sleep(0.05)

    def close(self):
        self._stop.set()
        self._socket.close()
        self._thread.join(10)


def one_prompt(server, index: int, rng: random.Random, published: bool) -> tuple[str, str]:
    """Queue one gated prompt of the mixed workload and choose for it; returns (status, kind)."""
    routes = rng.randint(1, 4)
    kind = "plain"
    if index % 10 == 7 and published:
        prompt = gated_prompt(routes=routes, get_id=SLOT, wire_image=False)
        kind = "get"
    else:
        size = rng.choice((32, 64, 96, 128))
        prompt = gated_prompt(width=size, height=size, routes=routes, batch=rng.randint(1, 3),
                              color=rng.randint(0, 0xFFFFFF), send_id=SLOT if index % 10 == 3 else "")
        kind = "send" if index % 10 == 3 else "plain"
    prompt_id = server.queue(prompt)
    entry = server.wait_pending(prompt_id=prompt_id, timeout=60)[0]
    body = {"token": entry["token"], "route": rng.randint(1, routes)}
    if index % 5 == 0:
        body["mask"] = uniform_mask_base64(entry["width"], entry["height"], rng.randint(0, 255))
    status, answer = server.post_json("/datasete_gate/choose", body)
    if status != 200:
        return f"choose answered {status}: {answer}", kind
    outcome = history_status(wait_finished(server, prompt_id, timeout=60)) or "stuck"
    server.request("POST", "/history", {"delete": [prompt_id]})
    return outcome, kind


def run(server, *, prompts: int, warmup: int | None = None, seed_value: int = 9) -> PartResult:
    result = PartResult("6", "Soak")
    rng = random.Random(seed_value)
    warmup = warmup if warmup is not None else max(1, prompts // 10)
    pid = server.process.pid
    failures = 0
    kinds: dict[str, int] = {}
    samples = []
    with timed(result):
        counter = EventCounter(server.port)
        try:
            start = proc_status(pid)
            published = False
            for index in range(prompts):
                outcome, kind = one_prompt(server, index, rng, published)
                kinds[kind] = kinds.get(kind, 0) + 1
                published = published or (kind == "send" and outcome == "success")
                if outcome != "success":
                    failures += 1
                    result.note(f"prompt {index} ({kind}): {outcome}")
                if index + 1 == warmup:
                    warm = proc_status(pid)
                if (index + 1) % max(1, prompts // 5) == 0:
                    samples.append((index + 1, proc_status(pid)))
            counter.settle(prompts)
            end = proc_status(pid)
        finally:
            counter.close()
    left = preview_files(server.temp_dir)
    rss_growth_mib = round((end["VmRSS"] - warm["VmRSS"]) / 1024, 1)
    result.stated("prompts by kind", ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    result.at_least("gated prompts run, each chosen through the HTTP API", prompts - failures, prompts)
    result.at_most("prompts that did not succeed", failures, 0)
    result.stated("server threads: start / after warm-up / end",
                  f"{start['Threads']} / {warm['Threads']} / {end['Threads']}")
    result.at_most(f"thread growth after the warm-up of {warmup} prompts", end["Threads"] - warm["Threads"],
                   THREAD_GROWTH_BOUND)
    result.stated("server RSS (MiB): start / after warm-up / end",
                  f"{start['VmRSS'] / 1024:.1f} / {warm['VmRSS'] / 1024:.1f} / {end['VmRSS'] / 1024:.1f}")
    result.stated("RSS along the run (MiB)",
                  ", ".join(f"#{n}: {s['VmRSS'] / 1024:.1f}" for n, s in samples))
    result.at_most("RSS growth after the warm-up (MiB)", rss_growth_mib, RSS_GROWTH_BOUND_MIB)
    result.stated("RSS growth per prompt after the warm-up (KiB)",
                  round((end["VmRSS"] - warm["VmRSS"]) / max(1, prompts - warmup), 1))
    result.at_most("preview files left in temp", len(left), 0)
    result.equal("websocket events preview / resolved", f"{counter.counts[EVENT_PREVIEW]} / "
                 f"{counter.counts[EVENT_RESOLVED]}", f"{prompts} / {prompts}")
    return result
