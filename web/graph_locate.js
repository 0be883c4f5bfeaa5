// Where a pause's node is: in which workflow, and at which depth of subgraphs.
//
// The server names a waiting node by its execution id: "5" at the top of the workflow, "12:5" for node
// 5 inside the subgraph of node 12, "3:12:5" two levels down (the frontend flattens subgraphs so when
// it queues a prompt). The pending entry also names the workflow that queued it (`workflow_id`, the
// root graph's id), so a page with another workflow open, whose node ids repeat, does not take the
// pause for its own. Only public objects are used: app.graph (the root graph of the open workflow),
// app.canvas (its .graph is the (sub)graph on screen), a subgraph node's .subgraph, and the workflow
// store (app.extensionManager.workflow) for the open workflow tabs.

// A graph that never got an id of its own (1.27 keeps this one from a file that has it): it names no
// workflow in particular, so it matches nothing (the server sends no workflow_id for it either).
const ZERO_UUID = "00000000-0000-0000-0000-000000000000";

/** The id of the workflow open on this page (its root graph's), or null. */
export function openWorkflowId(app) {
    const id = app.graph?.id;
    return id && id !== ZERO_UUID ? String(id) : null;
}

/** The pause was queued from the workflow open on this page (or did not say which workflow queued it). */
export function belongsHere(app, entry) {
    return !entry?.workflow_id || entry.workflow_id === openWorkflowId(app);
}

/**
 * The node of an execution id in the open workflow: {node, hosts}, where hosts are the subgraph nodes
 * from the top down that hold it (none at the top level); null when there is no such node.
 */
export function locateId(app, executionId) {
    const parts = String(executionId ?? "").split(":");
    let graph = app.graph;
    const hosts = [];
    for (const part of parts.slice(0, -1)) {
        const host = graph?.getNodeById?.(part);
        if (!host?.subgraph) return null;
        hosts.push(host);
        graph = host.subgraph;
    }
    const node = graph?.getNodeById?.(parts.at(-1)) ?? null;
    return node ? { node, hosts } : null;
}

/** Where a pending entry's node is in this page, or null (another workflow, or no such node). */
export function locate(app, entry) {
    return entry && belongsHere(app, entry) ? locateId(app, entry.node_id) : null;
}

/** Every node of the open workflow, inside subgraphs too (each subgraph once). */
export function allNodes(app) {
    const nodes = [];
    const seen = new Set();
    const walk = (graph) => {
        if (!graph || seen.has(graph)) return;
        seen.add(graph);
        for (const node of graph.nodes ?? []) {
            nodes.push(node);
            if (node.subgraph) walk(node.subgraph);
        }
    };
    walk(app.graph);
    return nodes;
}

/** The workflow tab of this page whose graph has this id, or null. */
export function openWorkflowById(app, workflowId) {
    if (!workflowId) return null;
    const store = app.extensionManager?.workflow;
    for (const workflow of store?.openWorkflows ?? []) {
        const state = workflow.activeState ?? workflow.initialState ?? null;
        if (state?.id === workflowId) return workflow;
    }
    return null;
}

/** A workflow's name as its tab shows it ("image_gate_basic"), or "". */
export function workflowName(workflow) {
    const name = workflow?.filename ?? workflow?.path?.split("/").at(-1) ?? "";
    return String(name).replace(/\.json$/i, "");
}

/** The name of the workflow an entry came from, as far as this page knows it ("" when it does not). */
export function entryWorkflowName(app, entry) {
    if (!entry.workflow_id || entry.workflow_id === openWorkflowId(app)) {
        return workflowName(app.extensionManager?.workflow?.activeWorkflow);
    }
    return workflowName(openWorkflowById(app, entry.workflow_id));
}

/**
 * Show an entry's node: open its workflow tab (when it is another tab of this page), then the subgraphs
 * that hold it, and centre and select it. False when this page has no such node.
 */
export async function jumpTo(app, entry) {
    if (!belongsHere(app, entry)) {
        const workflow = openWorkflowById(app, entry.workflow_id);
        if (!workflow) return false;
        // What the workflow tabs do when one is clicked: load its current state into the canvas.
        await app.loadGraphData(workflow.activeState ?? workflow.initialState, true, true, workflow);
    }
    const found = locate(app, entry);
    const canvas = app.canvas;
    if (!found || !canvas) return false;
    if (canvas.graph !== app.graph) canvas.setGraph(app.graph);
    for (const host of found.hosts) canvas.openSubgraph(host.subgraph, host);
    await new Promise((resolve) => requestAnimationFrame(resolve));
    canvas.centerOnNode?.(found.node);
    canvas.deselectAll?.();
    canvas.selectNode?.(found.node, false);
    canvas.setDirty?.(true, true);
    return true;
}

/** The node is drawn in the (sub)graph on screen. */
export function onOpenGraph(app, node) {
    return !!node && !!app.canvas && node.graph === app.canvas.graph;
}
