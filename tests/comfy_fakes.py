"""ComfyUI faked for the unit tier, once for every node kind: the modules a node's run() imports lazily,
and the threads the prompt worker and the HTTP handlers would run it on.

Only ComfyUI is faked (folder_paths, server.PromptServer, comfy.model_management, comfy_execution);
torch, numpy and the pack's own modules are the real ones.
"""

from __future__ import annotations

import sys
import threading
import time
import types
from pathlib import Path
from unittest import mock

from gates.constants import PREVIEW_PREFIX
from gates.pause import GateBus

JOIN_SECONDS = 20.0  # a thread that has not finished by then is stuck: the test fails instead of hanging


class FakeQueue:
    """ComfyUI's PromptQueue as far as the commit hook sees it: currently_running and task_done."""

    def __init__(self):
        self.mutex = threading.RLock()
        self.currently_running: dict[int, tuple] = {}
        self.history: dict[str, dict] = {}
        self.counter = 0

    def start(self, prompt_id: str) -> int:
        with self.mutex:
            self.counter += 1
            self.currently_running[self.counter] = (self.counter, prompt_id, {}, {}, [])
            return self.counter

    def task_done(self, item_id, history_result, status):
        with self.mutex:
            prompt = self.currently_running.pop(item_id)
            self.history[prompt[1]] = {"status": status}


class FakeComfy:
    """Just enough of ComfyUI for a node's run(): folders, events, the interrupt flag, the blocker, the
    running prompt's id and its queue. `installed()` puts the fake modules in sys.modules."""

    def __init__(self, root, prompt_id: str | None = "prompt-1"):
        self.root = Path(root)
        self.input = self.root / "input"
        self.user = self.root / "user"
        self.temp = self.root / "temp"  # not created: temp/ may have been deleted under ComfyUI
        self.input.mkdir(parents=True, exist_ok=True)
        self.events: list[tuple[str, dict]] = []
        self.prompt_id = prompt_id
        self.queue = FakeQueue()
        self.interrupt_flag = threading.Event()
        self.interrupt_checks = 0

        class InterruptProcessingException(Exception):
            pass

        class ExecutionBlocker:
            def __init__(self, message):
                self.message = message

        self.InterruptProcessingException = InterruptProcessingException
        self.ExecutionBlocker = ExecutionBlocker
        fake = self

        def throw_exception_if_processing_interrupted():
            fake.interrupt_checks += 1
            if fake.interrupt_flag.is_set():
                fake.interrupt_flag.clear()  # ComfyUI resets the flag when it raises
                raise InterruptProcessingException()

        folder_paths = types.ModuleType("folder_paths")
        folder_paths.get_input_directory = lambda: str(self.input)
        folder_paths.get_user_directory = lambda: str(self.user)
        folder_paths.get_temp_directory = lambda: str(self.temp)
        server = types.ModuleType("server")
        server.PromptServer = types.SimpleNamespace(instance=types.SimpleNamespace(
            send_sync=lambda event, data, sid=None: self.events.append((event, data)), prompt_queue=self.queue))
        comfy = types.ModuleType("comfy")
        model_management = types.ModuleType("comfy.model_management")
        model_management.InterruptProcessingException = InterruptProcessingException
        model_management.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
        comfy.model_management = model_management
        comfy_execution = types.ModuleType("comfy_execution")
        graph_utils = types.ModuleType("comfy_execution.graph_utils")
        graph_utils.ExecutionBlocker = ExecutionBlocker
        utils = types.ModuleType("comfy_execution.utils")
        utils.get_executing_context = lambda: (
            None if fake.prompt_id is None else types.SimpleNamespace(prompt_id=fake.prompt_id, node_id="5"))
        comfy_execution.graph_utils, comfy_execution.utils = graph_utils, utils
        self.modules = {
            "folder_paths": folder_paths, "server": server, "comfy": comfy,
            "comfy.model_management": model_management, "comfy_execution": comfy_execution,
            "comfy_execution.graph_utils": graph_utils, "comfy_execution.utils": utils,
        }

    def installed(self):
        return mock.patch.dict(sys.modules, self.modules)

    def events_of(self, kind: str) -> list[dict]:
        return [data for event, data in self.events if event == kind]

    def preview_files(self) -> list[str]:
        if not self.temp.is_dir():
            return []
        return sorted(path.name for path in self.temp.iterdir() if path.name.startswith(PREVIEW_PREFIX))

    def run_prompt(self, fn, prompt_id: str, success: bool = True):
        """Run `fn()` as the one node of prompt `prompt_id`, then finish the prompt as ComfyUI's worker does."""
        self.prompt_id = prompt_id
        item = self.queue.start(prompt_id)
        try:
            result = fn()
        except BaseException:
            self.queue.task_done(item, {}, status=types.SimpleNamespace(status_str="error", completed=False))
            raise
        status = "success" if success else "error"
        self.queue.task_done(item, {}, status=types.SimpleNamespace(status_str=status, completed=success))
        return result


class _Waiter:
    """A body run on its own thread whose result or exception the test looks at after join()."""

    def __init__(self, body):
        self.result = None
        self.error: BaseException | None = None

        def run():
            try:
                self.result = body()
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self):
        self.thread.join(JOIN_SECONDS)
        assert not self.thread.is_alive(), "the gate did not return"
        return self


class RunningNode(_Waiter):
    """node.run(**inputs) on its own thread, as in ComfyUI's prompt worker."""

    def __init__(self, node, **inputs):
        super().__init__(lambda: node.run(**inputs))


class WaitingPause(_Waiter):
    """A pause already armed on the bus, waited for on another thread as a node does (for the HTTP tests)."""

    def __init__(self, bus: GateBus, pause):
        self.pause = pause
        self.token = pause.token
        super().__init__(lambda: bus.wait(pause, None, 3600.0))


def wait_for_pause(bus: GateBus, running: _Waiter | None = None, after: str | None = None) -> dict:
    """The first pending entry (other than the pause with token `after`), once the node has paused."""
    deadline = time.monotonic() + JOIN_SECONDS
    while time.monotonic() < deadline:
        pending = [entry for entry in bus.pending() if entry["token"] != after]
        if pending:
            return pending[0]
        if running is not None and not running.thread.is_alive():
            raise AssertionError(f"the gate returned without pausing: {running.error!r}")
        time.sleep(0.005)
    raise AssertionError("the gate never paused")
