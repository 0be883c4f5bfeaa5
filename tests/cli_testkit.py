"""Running the pack's command lines from tests: as a person would (a subprocess from the repository
root) or in this process (much faster, for the many variants)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _argv(args, input_dir: Path | None) -> list[str]:
    return (["--input-dir", str(input_dir)] if input_dir is not None else []) + [str(a) for a in args]


def run_module(module: str, *args, input_dir: Path | None = None,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m <module> [--input-dir DIR] args...` in a subprocess, without the test run's PYTHONPATH."""
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", module, *_argv(args, input_dir)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, env={**clean, **(env or {})})


def run_in_process(main, *args, input_dir: Path | None = None) -> subprocess.CompletedProcess:
    """main(argv) in this process, with what it prints and its exit code, shaped like a subprocess's."""
    argv = _argv(args, input_dir)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse
            code = exit_.code
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
