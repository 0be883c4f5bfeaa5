"""Part 8: reload while waiting, two tabs, a dropped websocket: the gate stays answerable from the node."""

from __future__ import annotations

import pytest
from conftest import chromium_path

from . import browser_resilience

pytestmark = pytest.mark.browser


def test_browser_resilience_light(rel_comfy, chromium):
    browser_resilience.run(rel_comfy, chromium_path(), cycles=1, browser=chromium).assert_passed()


@pytest.mark.heavy
def test_browser_resilience_cycles(rel_comfy, chromium):
    browser_resilience.run(rel_comfy, chromium_path(), cycles=10, browser=chromium).assert_passed()
