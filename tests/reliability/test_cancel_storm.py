"""Part 5: /interrupt and the gate's cancel at random moments; no stuck worker, the next prompt runs."""

from __future__ import annotations

import pytest

from . import cancel_storm


def test_promises_are_strict_enough_to_fail():
    """The outcome check: a cancel during the pause that ended in success breaks the promise."""
    assert not cancel_storm.promised("cancel during the pause", {
        "outcome": "success", "answers": {"cancel": 200}, "outlived": False})
    assert not cancel_storm.promised("choose and cancel race", {
        "outcome": "success", "answers": {"choose": 200, "cancel": 200}, "outlived": False})
    assert not cancel_storm.promised("interrupt during the pause", {
        "outcome": "stuck", "answers": {}, "outlived": False})
    assert cancel_storm.promised("cancel right after a choice", {
        "outcome": "success", "answers": {"choose": 200, "cancel": 409}, "outlived": False})


@pytest.mark.comfy
def test_cancel_storm_light(rel_comfy):
    cancel_storm.run(rel_comfy, rounds=3 * len(cancel_storm.ACTIONS), seed_value=7).assert_passed()


@pytest.mark.comfy
@pytest.mark.heavy
def test_cancel_storm_200_rounds(rel_comfy):
    cancel_storm.run(rel_comfy, rounds=200, seed_value=8).assert_passed()
