"""What the pack's command lines share: finding ComfyUI's input folder and turning refusals into exit codes.

Each command line (python -m gates.bus, python -m gates.pool) keeps its own commands and exit-code
table; the plumbing that makes them behave alike (the same messages, the same "error:" line on stderr,
the same code for a disk that refuses) is written once here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

# Codes every command line gives the same meaning; each adds its own from 3 on.
EXIT_OK = 0
EXIT_OS_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A refusal with the exit code to leave with; its message is printed after "<prog>: error:"."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def comfy_input_dir() -> str | None:
    """ComfyUI's input folder when its folder_paths module is importable, else None."""
    try:
        import folder_paths
    except ImportError:
        return None
    return folder_paths.get_input_directory()


def resolve_input_dir(explicit: str | None, holds: str) -> Path:
    """The input folder to work in: --input-dir, else ComfyUI's. `holds` names what lives in it
    (gate_bus/, gate_pool/), for the message that asks for --input-dir."""
    if explicit is None:
        found = comfy_input_dir()
        if found is None:
            raise CliError(EXIT_USAGE, "no input folder: ComfyUI is not importable here, so pass "
                                       f"--input-dir PATH (ComfyUI's input folder, which holds {holds})")
        explicit = found
    path = Path(explicit).expanduser()
    if not path.is_dir():
        raise CliError(EXIT_USAGE, f"input folder {str(path)!r} does not exist or is not a folder")
    return path


def store_base(input_dir: str | None, name: str):
    """Where <name> (gate_bus, gate_pool) lives: on the object store DATASETE_GATES_STORE names (then
    --input-dir is not needed: the servers that share the store share their slots and pools there),
    else PATH/<name> in the input folder."""
    from ..storage import StoreConfigError, configured_store

    try:
        store = configured_store()
    except StoreConfigError as exc:
        raise CliError(EXIT_USAGE, str(exc)) from None
    if store is not None:
        return store.child(name)
    return resolve_input_dir(input_dir, f"{name}/") / name


def reason(exc: BaseException) -> str:
    """The operating system's words for a refusal ("Permission denied"), else the exception's text."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def run_reporting(run: Callable[[], int], prog: str,
                  refusals: Sequence[tuple[type[BaseException], int]]) -> int:
    """Run a command; a refusal becomes one "<prog>: error: ..." line on stderr and its exit code.

    `refusals` pairs the command line's own exception types with their codes, most specific first;
    CliError, then any other OSError (EXIT_OS_ERROR, with the file it concerns) are handled after them.
    """
    try:
        return run()
    except CliError as exc:
        code, message = exc.code, str(exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BaseException as exc:
        code = next((code for kind, code in refusals if isinstance(exc, kind)), None)
        if code is not None:
            message = str(exc)
        elif isinstance(exc, OSError):
            code, message = EXIT_OS_ERROR, f"{reason(exc)}: {exc.filename}" if exc.filename else reason(exc)
        else:
            raise
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code
