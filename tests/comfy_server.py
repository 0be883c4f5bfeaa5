"""A real ComfyUI server for the integration tiers, and a small client to drive it.

The ComfyUI source tree comes from COMFYUI_DIR and its interpreter from
COMFYUI_PYTHON; nothing of ComfyUI lives in this repository.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

# How long a test waits for a prompt, an event or an empty queue before it fails instead of hanging.
SETTLE_SECONDS = 60.0

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_FOLDER_NAME = "datasete_gates"
SKIP_REASON = "real ComfyUI tier skipped: set COMFYUI_DIR (ComfyUI source tree) and COMFYUI_PYTHON (its interpreter)"


def comfy_paths() -> tuple[Path, str] | None:
    comfy_dir, python = os.environ.get("COMFYUI_DIR"), os.environ.get("COMFYUI_PYTHON")
    if not comfy_dir or not python:
        return None
    return Path(comfy_dir), python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComfyServer:
    """One ComfyUI process on 127.0.0.1 with its own --base-directory and this pack installed."""

    def __init__(self, base_dir: Path | None = None, port: int | None = None,
                 input_directory: Path | None = None, front_end_root: Path | None = None,
                 extra_args: tuple[str, ...] = ()):
        """`input_directory` points ComfyUI's input folder elsewhere (--input-directory), e.g. at a mount;
        `front_end_root` serves another frontend (an unzipped comfyui-frontend-package's static folder)."""
        paths = comfy_paths()
        if paths is None:
            raise RuntimeError(SKIP_REASON)
        self.comfy_dir, self.python = paths
        self.owns_base = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="datasete-comfy-"))
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log_path = self.base_dir / "comfyui.log"
        self.input_directory = Path(input_directory) if input_directory is not None else None
        self.front_end_root = Path(front_end_root) if front_end_root is not None else None
        self.extra_args = tuple(extra_args)

    @property
    def input_dir(self) -> Path:
        return self.input_directory or self.base_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def temp_dir(self) -> Path:
        return self.base_dir / "temp"

    @property
    def bus_dir(self) -> Path:
        return self.input_dir / "gate_bus"

    def start(self, timeout: float = 180.0) -> ComfyServer:
        custom_nodes = self.base_dir / "custom_nodes"
        custom_nodes.mkdir(parents=True, exist_ok=True)
        link = custom_nodes / PACK_FOLDER_NAME
        if not link.exists():
            link.symlink_to(REPO_ROOT, target_is_directory=True)
        for sub in ("input", "output", "temp", "user", "models"):
            (self.base_dir / sub).mkdir(exist_ok=True)
        command = [
            self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base_dir), "--disable-api-nodes", "--disable-auto-launch",
            "--database-url", f"sqlite:///{self.base_dir / 'comfyui.db'}",
        ]
        if self.input_directory is not None:
            command += ["--input-directory", str(self.input_directory)]
        if self.front_end_root is not None:
            command += ["--front-end-root", str(self.front_end_root)]
        command += list(self.extra_args)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, cwd=self.comfy_dir, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.get_json("/object_info/DataseteImageGate", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, OSError, ValueError):
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"ComfyUI did not start within {timeout}s:\n{self.log_tail()}")

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(15)
        self.process = None
        self._log.close()

    def cleanup(self) -> None:
        self.stop()
        if self.owns_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # --- HTTP -----------------------------------------------------------------------------

    def request(self, method: str, path: str, body=None, timeout: float = 30.0, raw: bytes | None = None,
                headers: dict | None = None) -> tuple[int, object]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, payload = err.code, err.read()
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload

    def get_json(self, path: str, timeout: float = 30.0):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            return json.loads(resp.read())

    def post_json(self, path: str, body) -> tuple[int, object]:
        return self.request("POST", path, body)

    def view(self, entry: dict) -> bytes:
        query = urllib.parse.urlencode(entry)
        with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=30) as resp:
            return resp.read()

    # --- prompts --------------------------------------------------------------------------

    def queue(self, prompt: dict, client_id: str | None = None) -> str:
        status, answer = self.post_json("/prompt", {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex})
        if status != 200:
            raise AssertionError(f"/prompt answered {status}: {answer}")
        return answer["prompt_id"]

    def pending(self) -> list[dict]:
        return self.get_json("/datasete_gate/pending")["pending"]

    def wait_pending(self, count: int = 1, timeout: float = 60.0, prompt_id: str | None = None) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entries = [e for e in self.pending() if prompt_id is None or e["prompt_id"] == prompt_id]
            if len(entries) >= count:
                return entries
            time.sleep(0.05)
        raise AssertionError(f"no gate paused within {timeout}s:\n{self.log_tail()}")

    def history(self, prompt_id: str) -> dict | None:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def wait_done(self, prompt_id: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.history(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and (
                    entry["status"].get("status_str") in ("success", "error")):
                return entry
            time.sleep(0.05)
        raise AssertionError(f"prompt {prompt_id} did not finish within {timeout}s:\n{self.log_tail()}")

    def queue_remaining(self) -> int:
        return self.get_json("/prompt")["exec_info"]["queue_remaining"]

    def settle(self, timeout: float = 60.0) -> None:
        """Cancel every waiting gate until the queue is empty: leave the server as a next test expects it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.pending():
                self.post_json("/datasete_gate/cancel", {"token": entry["token"]})
            if self.queue_remaining() == 0 and not self.pending():
                return
            time.sleep(0.05)
        raise AssertionError(f"ComfyUI did not settle:\n{self.log_tail()}")


def status_messages(history_entry: dict) -> list[str]:
    return [message[0] for message in history_entry.get("status", {}).get("messages", [])]


def python_has(python: str, module: str) -> bool:
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


if __name__ == "__main__":  # manual use: python tests/comfy_server.py -> a server until Ctrl-C
    server = ComfyServer().start()
    print(server.url, server.base_dir, flush=True)
    try:
        signal.pause()
    finally:
        server.cleanup()
        sys.exit(0)


class Events:
    """ComfyUI's websocket for one clientId; keeps every JSON message, like a browser tab would see them."""

    def __init__(self, server):
        import websocket  # websocket-client, as ComfyUI's own execution tests use

        self.client_id = uuid.uuid4().hex
        self.messages: list[dict] = []
        self._lock = threading.Lock()
        self._ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?clientId={self.client_id}",
                                               timeout=30)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while True:
            try:
                message = self._ws.recv()
            except Exception:  # noqa: BLE001 - the socket closed: stop reading
                return
            if not message:
                return  # websocket-client hands back "" once the socket is closed
            if isinstance(message, str):
                with self._lock:
                    self.messages.append(json.loads(message))

    def of(self, kind: str) -> list[dict]:
        with self._lock:
            return [m["data"] for m in self.messages if m.get("type") == kind]

    def wait_for(self, kind: str, predicate=lambda data: True, timeout: float = SETTLE_SECONDS) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [data for data in self.of(kind) if predicate(data)]
            if found:
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"no {kind} event within {timeout}s; got {[m.get('type') for m in self.messages]}")

    def close(self):
        self._ws.close()
        self._thread.join(10)
