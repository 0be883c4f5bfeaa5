"""A workflow saved in one frontend loads and runs in the others.

The workflow is edited and saved (graphToPrompt().workflow, what the Save command writes) in the newest
frontend with Nodes 2.0 on, then opened in the pinned frontend with classic nodes and run there; and the
other way round. Needs both frontends, so it runs once, not per combination.
"""

from __future__ import annotations

import frontends
import pytest
from browser_helpers import (
    GATE_NODE_ID,
    NewOutputs,
    example_workflow,
    load_workflow,
    open_comfy,
    panel,
    prepare_frontend,
    queue_gate,
    wait_paused,
)
from conftest import frontend_server_for

pytestmark = pytest.mark.browser

SAVE = "async () => (await window.app.graphToPrompt()).workflow"


def edit_and_save(page) -> dict:
    """A person's edits: three routes, the accept route publishing, a retitled save node; then Save."""
    page.evaluate("""id => {
        const node = window.app.graph.getNodeById(id);
        const routes = node.widgets.find(w => w.name === 'routes');
        routes.value = 3;
        routes.callback?.(3, window.app.canvas, node);
        node.widgets.find(w => w.name === 'send_on').value = 'route_2';
        for (const other of window.app.graph.nodes) {
            if (other.title === 'Needs inpaint') other.title = 'Keep for inpaint';
        }
    }""", GATE_NODE_ID)
    return page.evaluate(SAVE)


@pytest.mark.parametrize("saved_in, opened_in", [
    (frontends.Frontend(frontends.NEWEST, True), frontends.Frontend(frontends.PINNED, False)),
    (frontends.Frontend(frontends.PINNED, False), frontends.Frontend(frontends.NEWEST, True)),
], ids=["saved-in-nodes2-newest-opened-in-classic-pinned", "saved-in-classic-pinned-opened-in-nodes2-newest"])
def test_a_workflow_saved_in_one_frontend_loads_and_runs_in_another(
        frontend_servers, chromium, page_errors, saved_in, opened_in):
    source = frontend_server_for(saved_in, frontend_servers)
    target = frontend_server_for(opened_in, frontend_servers)

    prepare_frontend(source, vue_nodes=saved_in.vue_nodes)
    context = chromium.new_context(viewport={"width": 1600, "height": 1000})
    try:
        page = open_comfy(context, source, page_errors)
        load_workflow(page, example_workflow())
        saved = edit_and_save(page)
    finally:
        context.close()

    prepare_frontend(target, vue_nodes=opened_in.vue_nodes)
    context = chromium.new_context(viewport={"width": 1600, "height": 1000})
    try:
        page = open_comfy(context, target, page_errors)
        load_workflow(page, saved)
        gate = page.evaluate("""id => {
            const node = window.app.graph.getNodeById(id);
            return {outputs: node.outputs.map(o => o.name),
                    widgets: Object.fromEntries(node.widgets.filter(w => w.name !== 'gate_panel')
                                                .map(w => [w.name, w.value]))};
        }""", GATE_NODE_ID)
        assert gate["outputs"] == ["mask", "route_1", "route_2", "route_3"]
        assert gate["widgets"]["routes"] == 3 and gate["widgets"]["send_on"] == "route_2"
        outputs = NewOutputs(target.output_dir)
        entry = queue_gate(page, target)
        assert entry["routes"] == 3
        wait_paused(page, entry["token"])
        button = panel(page).locator("button[data-route='2']")
        assert "Keep for inpaint" in button.inner_text()
        button.click()
        assert target.wait_done(entry["prompt_id"])["status"]["status_str"] == "success"
        assert len(outputs.of("gate_route2")) == 1 and outputs.of("gate_route1") == []
    finally:
        context.close()
        target.settle()
