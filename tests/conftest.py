"""Tiers: unit tests always run; `comfy` and `browser` tests need a real ComfyUI from COMFYUI_DIR and
COMFYUI_PYTHON (and Debian chromium for `browser`); `heavy` tests run only with --heavy."""

from __future__ import annotations

import os
import shutil

import frontends
import pytest
from comfy_server import PACK_FOLDER_NAME, SETTLE_SECONDS, SKIP_REASON, ComfyServer, Events, comfy_paths
from s3_testkit import moto_server, s3_env, s3_store  # noqa: F401 - the S3 fixtures (moto on loopback)

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
    if os.environ.get("DATASETE_REQUIRE_TIERS") == "1":
        # CI: a tier that would be skipped whole is a failure, never a quiet green.
        missing = [reasons[k] for k in ("comfy", "browser") if k in reasons]
        if missing:
            raise pytest.UsageError("DATASETE_REQUIRE_TIERS=1 but " + "; ".join(missing))
    for item in items:
        for marker, reason in reasons.items():
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
                break


def _tier(item_keywords, name: str) -> str:
    if "browser" in item_keywords:
        found = [f.id for f in frontends.ALL if f.id in name]
        return f"browser {found[0]}" if found else "browser (one frontend)"
    if "comfy" in item_keywords:
        return "real ComfyUI"
    return "unit"


def pytest_runtest_logreport(report):
    # Counted on the call phase (or the setup phase for a test skipped or failed before it ran).
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        tier = _tier(report.keywords, report.nodeid)
        _TIER_COUNTS.setdefault(tier, {"passed": 0, "failed": 0, "skipped": 0})[report.outcome] += 1


_TIER_COUNTS: dict[str, dict[str, int]] = {}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    reasons = _skip_reasons(config)
    for key in ("comfy", "browser"):
        if key in reasons:
            terminalreporter.write_line(reasons[key])
            break
    if _TIER_COUNTS:
        terminalreporter.write_line("tests per tier:")
        for tier in sorted(_TIER_COUNTS, key=lambda t: (not t.startswith("unit"), not t.startswith("real"), t)):
            counts = _TIER_COUNTS[tier]
            terminalreporter.write_line(
                f"  {tier}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")


@pytest.fixture(scope="session")
def comfy():
    """One real ComfyUI server for the session, with this pack in its custom_nodes."""
    server = ComfyServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def server(comfy):
    """The session's ComfyUI, left with no gate waiting and an empty queue after each test."""
    yield comfy
    comfy.settle(SETTLE_SECONDS)


@pytest.fixture
def events(server):
    """ComfyUI's websocket as one browser tab sees it, for the test's length."""
    listener = Events(server)
    yield listener
    listener.close()


@pytest.fixture
def fresh_comfy(tmp_path):
    """A server of its own, for tests that restart or kill it; stopped after the test."""
    server = ComfyServer(base_dir=tmp_path / "comfy-base")
    try:
        yield server
    finally:
        server.stop()


# --- the browser tier: Debian chromium, and the frontend matrix (see frontends.py) ----------------

BROWSER_VIEWPORT = {"width": 1600, "height": 1000}


def pytest_generate_tests(metafunc):
    # Every test that uses a browser server runs once per frontend combination.
    if "frontend" in metafunc.fixturenames:
        chosen = frontends.selected()
        metafunc.parametrize("frontend", chosen, ids=[f.id for f in chosen], indirect=True, scope="session")


@pytest.fixture(scope="session")
def frontend(request):
    return request.param


# Per module, not per session: Playwright's sync API keeps an event loop running on the main thread
# while it is open, and the unit tests that run their own loops (aiohttp apps) must not meet it.
@pytest.fixture(scope="module")
def chromium():
    from browser_helpers import launch_chromium
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, chromium_path())
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def frontend_servers(comfy):
    """One ComfyUI per frontend release: the session's server serves the pinned one."""
    servers = {frontends.PINNED: comfy}
    try:
        yield servers
    finally:
        for release, server in servers.items():
            if release != frontends.PINNED:
                server.cleanup()


def frontend_server_for(frontend: frontends.Frontend, servers: dict) -> ComfyServer:
    if frontend.release in servers:
        return servers[frontend.release]
    root, why = frontends.newest_root()
    if root is None:
        if frontends.strict():
            pytest.fail(why)
        pytest.skip(why)
    server = ComfyServer(front_end_root=root).start()
    server.frontend_version = why
    servers[frontend.release] = server
    return server


@pytest.fixture
def browser_server(frontend, frontend_servers):
    """The ComfyUI serving `frontend`, with Nodes 2.0 set as the combination asks and first-run screens
    off; left with no gate waiting after the test."""
    from browser_helpers import prepare_frontend

    server = frontend_server_for(frontend, frontend_servers)
    prepare_frontend(server, vue_nodes=frontend.vue_nodes)
    yield server
    server.settle(60.0)


@pytest.fixture
def context(chromium):
    """A fresh browser profile (empty local and session storage) per test."""
    context = chromium.new_context(viewport=BROWSER_VIEWPORT)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page_errors():
    """Uncaught errors on the page thrown from this pack's scripts (served under /extensions/<pack>/)."""
    errors: list[str] = []
    yield errors
    ours = [error for error in errors if f"/extensions/{PACK_FOLDER_NAME}/" in error]
    assert not ours, f"the pack's scripts threw on the page: {ours}"
