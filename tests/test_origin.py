"""The workflow a pause belongs to (gates/origin.py) and that every gate kind's pending entry carries it."""

from __future__ import annotations

import pytest

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
