"""Tiers: unit tests always run; `comfy` and `browser` tests need a real ComfyUI from COMFYUI_DIR and
COMFYUI_PYTHON (and Debian chromium for `browser`); `heavy` tests run only with --heavy."""

from __future__ import annotations

import os
import shutil

import pytest
from comfy_server import SKIP_REASON, ComfyServer, comfy_paths

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str | None:
    explicit = os.environ.get("CHROMIUM_PATH")
    if explicit:
        return explicit
    return next((p for p in CHROMIUM_CANDIDATES if os.path.exists(p)), shutil.which("chromium"))


def pytest_addoption(parser):
    parser.addoption("--heavy", action="store_true", help="also run the long reliability runs (kill loops, soak)")


def _skip_reasons(config) -> dict[str, str]:
    reasons = {}
    if comfy_paths() is None:
        reasons["comfy"] = SKIP_REASON
        reasons["browser"] = SKIP_REASON
    elif chromium_path() is None:
        reasons["browser"] = "browser tier skipped: no chromium found (apt-get install chromium, or set CHROMIUM_PATH)"
    if not config.getoption("--heavy"):
        reasons["heavy"] = "heavy reliability run skipped: pass --heavy"
    return reasons


def pytest_report_header(config):
    reasons = _skip_reasons(config)
    lines = [reasons[k] for k in ("comfy", "browser") if k in reasons]
    return lines or [f"real ComfyUI tier: {os.environ['COMFYUI_DIR']}"]


def pytest_collection_modifyitems(config, items):
    reasons = _skip_reasons(config)
    for item in items:
        for marker, reason in reasons.items():
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
                break


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    reasons = _skip_reasons(config)
    for key in ("comfy", "browser"):
        if key in reasons:
            terminalreporter.write_line(reasons[key])
            break


@pytest.fixture(scope="session")
def comfy():
    """One real ComfyUI server for the session, with this pack in its custom_nodes."""
    server = ComfyServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def fresh_comfy(tmp_path):
    """A server of its own, for tests that restart or kill it; stopped after the test."""
    server = ComfyServer(base_dir=tmp_path / "comfy-base")
    try:
        yield server
    finally:
        server.stop()
