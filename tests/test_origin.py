"""The workflow a pause belongs to (gates/origin.py) and that every gate kind's pending entry carries it."""

from __future__ import annotations

import pytest
import torch

from gates import origin
from gates.nodes import NODE_CLASS_MAPPINGS

WORKFLOW_ID = "0d4e1f9a-5b6c-4d7e-8f90-a1b2c3d4e5f6"


@pytest.mark.parametrize(("extra", "expected"), [
    ({"workflow": {"id": WORKFLOW_ID, "nodes": []}}, WORKFLOW_ID),
    (None, None),
    ({}, None),
    ({"workflow": None}, None),
    ({"workflow": {"nodes": []}}, None),
    ({"workflow": {"id": 7}}, None),
    ({"workflow": {"id": ""}}, None),
    ({"workflow": {"id": "x" * 65}}, None),
    ({"workflow": {"id": "a\nb"}}, None),
    ({"workflow": {"id": "00000000-0000-0000-0000-000000000000"}}, None),
    ("not a dict", None),
])
def test_the_workflow_id_is_the_queued_workflows_own_or_none(extra, expected):
    assert origin.workflow_id(extra) == expected


def test_the_node_title_comes_from_the_prompt_meta_at_any_depth():
    prompt = {"12:5": {"class_type": "DataseteImageGate", "_meta": {"title": "Inner gate"}},
              "3": {"class_type": "X"}, "4": {"_meta": "bad"}, "6": {"_meta": {"title": "t" * 500}}}
    assert origin.node_title(prompt, "12:5") == "Inner gate"
    assert origin.node_title(prompt, "3") is None
    assert origin.node_title(prompt, "4") is None
    assert origin.node_title(prompt, "99") is None
    assert origin.node_title(None, "3") is None
    assert origin.node_title(prompt, "6") == "t" * 200
    assert origin.origin({"workflow": {"id": WORKFLOW_ID}}, prompt, "12:5") == {
        "workflow_id": WORKFLOW_ID, "node_title": "Inner gate"}


@pytest.mark.parametrize("node_class", ["DataseteImageGate", "DataseteTextGate", "DataseteGridPoolGate"])
def test_every_gate_kind_asks_for_the_prompt_and_the_workflow(node_class):
    hidden = NODE_CLASS_MAPPINGS[node_class].INPUT_TYPES()["hidden"]
    assert hidden == {"unique_id": "UNIQUE_ID", "prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


# --- what a node says (not a pause) names the workflow too ---------------------------------------------
# A status is shown on the node the page finds by execution id and workflow, as a pause is: without the
# workflow, another tab's node of the same id would show it, and a gate in a subgraph would show nothing.

EXTRA = {"workflow": {"id": WORKFLOW_ID, "nodes": []}}


@pytest.fixture
def fake(tmp_path):
    from comfy_fakes import FakeComfy

    fake = FakeComfy(tmp_path)
    with fake.installed():
        yield fake


def said(fake, event: str) -> list[dict]:
    return [data for name, data in fake.events if name == event]


def test_an_image_gate_with_nothing_to_gate_names_the_workflow(fake):
    from gates.constants import EVENT_GATE_STATUS, GATE_STATUS_UI_KEY
    from gates.nodes.image_gate import ImageGate

    out = ImageGate().run(image=None, routes=2, get_id="never_published", unique_id="12:5", extra_pnginfo=EXTRA)
    [status] = said(fake, EVENT_GATE_STATUS)
    assert status["node_id"] == "12:5" and status["reason"] == "no_slot" and status["workflow_id"] == WORKFLOW_ID
    assert out["ui"][GATE_STATUS_UI_KEY] == [status]
    ImageGate().run(image=None, routes=2, get_id="", unique_id="3")  # queued by a script: no workflow
    assert said(fake, EVENT_GATE_STATUS)[-1]["workflow_id"] is None


def test_a_timed_out_gate_names_the_workflow(fake):
    from gates.constants import GATE_STATUS_UI_KEY
    from gates.nodes.image_gate import ImageGate

    image = torch.zeros((1, 4, 4, 3))
    out = ImageGate().run(image=image, routes=2, unique_id="12:5", timeout=1, on_timeout="block", extra_pnginfo=EXTRA)
    [status] = out["ui"][GATE_STATUS_UI_KEY]
    assert status["reason"] == "timed_out" and status["workflow_id"] == WORKFLOW_ID


def test_the_pool_nodes_statuses_name_the_workflow(fake):
    from gates.constants import EVENT_POOL_STATUS
    from gates.nodes.grid_pool_gate import GridPoolGate
    from gates.nodes.pool_add import AddToImagePool

    AddToImagePool().run(torch.zeros((1, 4, 4, 3)), "night", unique_id="4", extra_pnginfo=EXTRA)
    GridPoolGate().run("no_such_pool", unique_id="7:2", extra_pnginfo=EXTRA)
    GridPoolGate().run("", unique_id="7:2", extra_pnginfo=EXTRA)
    added, missing, no_pool = said(fake, EVENT_POOL_STATUS)
    assert (added["reason"], missing["reason"], no_pool["reason"]) == ("added", "missing", "no_pool")
    assert [s["workflow_id"] for s in (added, missing, no_pool)] == [WORKFLOW_ID] * 3
    assert [s["node_id"] for s in (added, missing, no_pool)] == ["4", "7:2", "7:2"]
