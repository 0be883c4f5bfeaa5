"""The few ComfyUI facts the pack needs, each behind a function so imports stay lazy."""

from __future__ import annotations

import logging
import os

from .constants import BUS_DIR_NAME

log = logging.getLogger("datasete_gates")


def gate_bus_base():
    """Where the image bus keeps its slots: ComfyUI's input folder + gate_bus, or gate_bus/ under the
    object store DATASETE_GATES_STORE names (an ObjectLocation; a bad value raises StoreConfigError)."""
    from .storage import configured_store

    store = configured_store()
    if store is not None:
        return store.child(BUS_DIR_NAME)
    import folder_paths

    return os.path.join(folder_paths.get_input_directory(), BUS_DIR_NAME)


def temp_directory() -> str:
    import folder_paths

    return folder_paths.get_temp_directory()


def current_prompt_id() -> str | None:
    """The id of the prompt whose node is running on this thread, if ComfyUI says."""
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:
        return None
    context = get_executing_context()
    return context.prompt_id if context is not None else None


def broadcast(event: str, data: dict) -> None:
    """Send a websocket event to every connected browser tab."""
    from server import PromptServer

    server = getattr(PromptServer, "instance", None)
    if server is not None:
        server.send_sync(event, data)


def check_interrupt() -> None:
    """Raise ComfyUI's InterruptProcessingException if Cancel (POST /interrupt) was pressed."""
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()


def interrupted_exception() -> Exception:
    import comfy.model_management

    return comfy.model_management.InterruptProcessingException()


def execution_blocker():
    """A silent blocker: the nodes behind it do not run and no error dialog appears."""
    from comfy_execution.graph_utils import ExecutionBlocker

    return ExecutionBlocker(None)


def input_directory() -> str:
    """ComfyUI's input folder: where the Image Folder Loader walks and the Text Gate writes captions."""
    import folder_paths

    return folder_paths.get_input_directory()


def user_directory() -> str:
    """ComfyUI's user folder: where the loader keeps its walk positions."""
    import folder_paths

    return folder_paths.get_user_directory()


def prompt_queue():
    """ComfyUI's prompt queue (the one the prompt worker calls task_done on), or None outside a server."""
    try:
        from server import PromptServer
    except ImportError:
        return None
    server = getattr(PromptServer, "instance", None)
    return getattr(server, "prompt_queue", None)


def gate_pool_base():
    """Where the image pools live: ComfyUI's input folder + gate_pool, or gate_pool/ on the store."""
    from .constants import POOL_DIR_NAME
    from .storage import configured_store

    store = configured_store()
    if store is not None:
        return store.child(POOL_DIR_NAME)
    import folder_paths

    return os.path.join(folder_paths.get_input_directory(), POOL_DIR_NAME)
