"""Part 1: hostile slot ids through every door. The figures' bounds are the assertions."""

from __future__ import annotations

import sys

import pytest
from comfy_server import REPO_ROOT

from .harness import CanaryWatch, snapshot, snapshot_diff, write_slot_files
from .hostile_ids import CATALOGUE, run_real, run_unit


def test_catalogue_covers_every_kind_of_hostile_id():
    categories = {h.category for h in CATALOGUE}
    assert len(CATALOGUE) >= 40
    assert {"traversal", "absolute", "windows", "separator", "control", "unicode", "reserved", "length",
            "whitespace", "symlink"} <= categories


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the canary watch uses Linux inotify")
def test_canary_watch_sees_a_read_and_the_snapshot_sees_a_write(tmp_path):
    """The detectors themselves: without this, zero escapes could mean blind detectors."""
    canary = tmp_path / "canary"
    write_slot_files(canary, (255, 0, 255))
    before = snapshot(tmp_path)
    watch = CanaryWatch()
    watch.watch(canary)
    (canary / "image.png").read_bytes()
    events = watch.drain()
    watch.close()
    (tmp_path / "stray.txt").write_text("x")
    assert any("open" in event and event.endswith("image.png") for event in events), events
    assert snapshot_diff(before, snapshot(tmp_path)) == ["created stray.txt"]


def test_hostile_ids_through_the_pack_functions(tmp_path):
    run_unit(tmp_path).assert_passed()


@pytest.mark.comfy
def test_hostile_ids_through_a_real_comfyui_and_the_command_line(rel_comfy):
    run_real(rel_comfy, REPO_ROOT, cli_processes=2).assert_passed()
