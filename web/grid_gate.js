// Add to Image Pool and the Grid Pool Gate: the browser side.
//
// The Grid Pool Gate carries a DOM widget (grid_panel.js) that shows a waiting page as a grid of
// thumbnails; Add to Image Pool carries a small one with its last status ("added 4 · pending 37 ·
// kept 12 · rejected 9"). Both have a pool picker fed by GET /datasete_gate/pool/list. The server
// announces pauses with `datasete_gate.preview` (kind "grid"), their end with `.resolved`, and what
// a pool node did (or why a grid did not pause) with `datasete_gate.pool_status`.
// Only the frontend's public extension API is used.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { waitingGates } from "./dock.js";
import { IdPicker, drawWaitingMarker, el } from "./gate_panel.js";
import { GridPanel } from "./grid_panel.js";
import { t } from "./i18n.js";
import { onGateStatus, statusText as gateStatusText, timedOutText } from "./gate_status.js";
import { addPanelWidget, chainCallback, isNodeOf, loadStylesheets, soleSelected } from "./node_glue.js";
import { allNodes, locate, openWorkflowId } from "./graph_locate.js";
import { answerFromPanel, isTyping, PauseTracker, ROUTE_CANCEL, ROUTE_CHOOSE } from "./pause_client.js";

const GRID_CLASS = "DataseteGridPoolGate";
const ADD_CLASS = "DataseteAddToImagePool";
const KIND = "grid";
const EVENT_STATUS = "datasete_gate.pool_status";
const ROUTE_POOL_LIST = "/datasete_gate/pool/list";
// A predictable size: the grid fits into the node (thumbnails scale), the node never grows on a pause.
const GRID_NODE_SIZE = [560, 640];
const GRID_MIN_HEIGHT = 220;
const ADD_MIN_WIDTH = 340;

const gridPanels = new WeakMap(); // node -> GridPanel
const addPanels = new WeakMap(); // node -> { element, picker, status }
// Keyed by noteKey(workflow id, execution id): node ids repeat across workflows and subgraphs.
const notes = new Map(); // -> the last status text the server sent for that node
const statusCount = new Map(); // -> how many status events came for it
let poolIds = [];
let poolLabels = new Map();

const tracker = new PauseTracker(api, KIND, (nodeId, note, entry) => {
    const node = locate(app, entry)?.node;
    if (node && gridPanels.has(node)) syncGrid(node, note);
});

// --- the graph -------------------------------------------------------------------------------

function isGrid(node) {
    return isNodeOf(node, GRID_CLASS);
}

/** The key of a node's notes: the workflow that queued its run ("" when a script did) and its execution id. */
function noteKey(workflowId, executionId) {
    return `${workflowId ?? ""}|${executionId}`;
}

/** The last status said for a node of the open workflow's top level (queued from it, or by a script). */
function noteOf(node) {
    return notes.get(noteKey(openWorkflowId(app), node.id)) ?? notes.get(noteKey(null, node.id));
}

/** The grid nodes of the open workflow, inside subgraphs too. */
function gridNodes() {
    return allNodes(app).filter((node) => isGrid(node) && gridPanels.has(node));
}

/** The pause waiting at this node (queued from this workflow), or null. */
function entryOf(node) {
    return tracker.find((entry) => locate(app, entry)?.node === node);
}

function addNodes() {
    return (app.graph?.nodes ?? []).filter((node) => isNodeOf(node, ADD_CLASS) && addPanels.has(node));
}

function syncGrid(node, note = "") {
    const panel = gridPanels.get(node);
    panel.element.dataset.nodeId = String(node.id); // lets scripts and tests find a node's panel
    const entry = entryOf(node);
    if (entry) {
        panel.element.dataset.executionId = String(entry.node_id);
        panel.showPause(entry);
    } else {
        if (panel.waiting || note) panel.showIdle(note);
        if (!note) panel.setNote(noteOf(node) ?? "");
    }
    node.setDirtyCanvas?.(true, true);
    waitingGates.reconcileSoon();
}

function selectNode(node) {
    const canvas = app.canvas;
    if (!canvas || canvas.selected_nodes?.[node.id]) return;
    canvas.selectNode?.(node, false);
}

// --- answering -------------------------------------------------------------------------------

async function answer(node, path, body, doneNote) {
    const panel = gridPanels.get(node);
    if (!panel) return;
    // The server names the node as the pause did: by the workflow that queued it and its execution id.
    const key = noteKey(panel.entry?.workflow_id, panel.entry?.node_id ?? node.id);
    const statusesBefore = statusCount.get(key) ?? 0;
    const result = await answerFromPanel(tracker, panel, panel.entry, path, body);
    if (result.ok && doneNote && !panel.waiting) {
        // The server's own line ("kept 3 of 16 · …") may have come over the websocket before this answer
        // did: it says more than "sent", so it stays.
        const newer = (statusCount.get(key) ?? 0) > statusesBefore;
        panel.showIdle(newer ? notes.get(key) : doneNote);
    }
}

// --- the pool picker -------------------------------------------------------------------------

let poolRequest = null;

function poolWidget(node) {
    return node.widgets?.find((widget) => widget.name === "pool");
}

function pickerOf(node) {
    return gridPanels.get(node)?.picker ?? addPanels.get(node)?.picker ?? null;
}

function showPools(node) {
    pickerOf(node)?.setIds(poolIds, String(poolWidget(node)?.value ?? ""), poolLabels);
}

/** Fetch the pools once at a time; a call while one is in flight waits for it and reruns. */
async function refreshPools() {
    if (poolRequest) {
        poolRequest.again = true;
        return poolRequest.promise;
    }
    const request = { again: false };
    poolRequest = request;
    request.promise = (async () => {
        try {
            do {
                request.again = false;
                const response = await api.fetchApi(ROUTE_POOL_LIST, { cache: "no-store" });
                if (response.ok) {
                    const pools = (await response.json()).pools ?? [];
                    poolIds = pools.map((pool) => pool.id);
                    poolLabels = new Map(pools.map((pool) => [pool.id, t("pool.pickerEntry", "{pool} · {pending} pending",
                                                                          { pool: pool.id, pending: pool.pending })]));
                }
            } while (request.again);
        } catch (error) {
            console.warn("Datasete gates: could not list the pools", error);
        } finally {
            poolRequest = null;
        }
        for (const node of [...gridNodes(), ...addNodes()]) showPools(node);
    })();
    return request.promise;
}

function pickPool(node, id) {
    const widget = poolWidget(node);
    if (!widget) return;
    widget.value = id;
    widget.callback?.(id, app.canvas, node);
    node.setDirtyCanvas?.(true, true);
    app.graph?.change?.();
}

function followPoolWidget(node) {
    chainCallback(poolWidget(node), "callback", () => showPools(node));
}

// --- status lines ----------------------------------------------------------------------------

/** What a pool node did, in the frontend's language, from the fields of its status event. */
function statusText(detail) {
    const timedOut = timedOutText(detail);
    const text = poolStatusText(detail);
    return timedOut && detail.reason !== "timed_out" ? `${timedOut} · ${text}` : text;
}

function poolStatusText(detail) {
    const counts = detail.counts ?? {};
    const totals = { pending: counts.pending, kept: counts.kept, rejected: counts.rejected };
    switch (detail.reason) {
        case "added": {
            let text = t("pool.added", "added {added} · pending {pending} · kept {kept} · rejected {rejected}",
                         { added: detail.added?.length ?? 0, ...totals });
            if (detail.duplicates) {
                text += " · " + t("pool.duplicates", "{count} duplicates skipped", { count: detail.duplicates });
            }
            return text;
        }
        case "missing":
            return t("grid.missing", "pool '{pool}' does not exist", { pool: detail.pool });
        case "empty":
            return t("grid.empty", "pool '{pool}' has nothing pending (kept {kept}, rejected {rejected})",
                     { pool: detail.pool, ...totals });
        case "no_pool":
            return t("grid.noPool", "no pool given and no images wired: nothing to review");
        case "decided":
            return t("grid.decided", "kept {kept} of {shown} · pool: pending {pending} · kept {total_kept} · rejected {rejected}",
                     { kept: detail.kept?.length ?? 0, shown: detail.shown, pending: counts.pending,
                       total_kept: counts.kept, rejected: counts.rejected });
        case "batch_decided":
            return t("grid.batchDecided", "kept {kept} of {total} frames", { kept: detail.kept_count, total: detail.shown });
        case "timed_out":
            return gateStatusText(detail);
        default:
            return detail.text ?? "";
    }
}

function onStatus(detail) {
    if (!detail || detail.node_id === null || detail.node_id === undefined) return;
    const key = noteKey(detail.workflow_id, detail.node_id);
    const text = statusText(detail);
    notes.set(key, text);
    statusCount.set(key, (statusCount.get(key) ?? 0) + 1);
    const node = locate(app, detail)?.node ?? null; // not another workflow's node of the same id
    if (node && gridPanels.has(node) && !gridPanels.get(node).waiting) gridPanels.get(node).setNote(text);
    if (node && addPanels.has(node)) {
        addPanels.get(node).element.dataset.nodeId = String(detail.node_id);
        addPanels.get(node).status.textContent = text;
    }
    waitingGates.reconcileSoon();
    refreshPools();
}

// --- the dock (dock.js): a waiting grid whose node view cannot show its panel ----------------

waitingGates.addSource(() => (app.graph?.nodes ?? []).filter((node) => isGrid(node) && gridPanels.has(node))
    .map((node) => ({ node, panel: gridPanels.get(node) })));
// A waiting grid whose node is not on screen gets a grid of its own in the "Waiting gates" panel.
waitingGates.addKind(KIND, {
    tracker,
    panelOf: (node) => (isGrid(node) ? gridPanels.get(node) : null),
    createPanel: (entry) => {
        const panel = new GridPanel({
            api,
            onSend: (keep) => answerFromPanel(tracker, panel, panel.entry, ROUTE_CHOOSE, { keep }),
            onCancel: () => answerFromPanel(tracker, panel, panel.entry, ROUTE_CANCEL, {}),
            onPickPool: () => {},
            onOpenPicker: () => {},
            onInteract: () => {},
            apiURL: (path) => api.apiURL(path),
        });
        panel.picker.element.style.display = "none"; // the pool is the node's setting, not this pause's
        panel.showPause(entry);
        return panel;
    },
});

// --- keys ------------------------------------------------------------------------------------

/** The keys of a waiting grid go to it while its node is the one selected node (or its viewer is open). */
function onKeyDown(event) {
    if (isTyping(event.composedPath()[0])) return;
    const viewing = gridNodes().map((node) => gridPanels.get(node)).find((panel) => panel.viewerOpen);
    let panel = viewing;
    if (!panel) {
        const node = soleSelected(app.canvas, (candidate) => isGrid(candidate) && gridPanels.get(candidate)?.waiting);
        if (!node) return;
        panel = gridPanels.get(node);
    }
    if (panel.handleKey(event)) {
        event.preventDefault();
        event.stopImmediatePropagation();
    }
}

// --- the extension ---------------------------------------------------------------------------

function attachGrid(node) {
    const panel = new GridPanel({
        api,
        onSend: (keep) => answer(node, ROUTE_CHOOSE, { keep }, t("grid.sent", "sent")),
        onCancel: () => answer(node, ROUTE_CANCEL, {}, t("grid.cancelled", "cancelled: nothing was moved")),
        onPickPool: (id) => pickPool(node, id),
        onOpenPicker: () => refreshPools(),
        onInteract: () => selectNode(node),
        apiURL: (path) => api.apiURL(path),
    });
    const widget = addPanelWidget(node, "grid_panel", "datasete_grid_panel", panel.element,
                                  { hideOnZoom: true, minHeight: () => GRID_MIN_HEIGHT });
    gridPanels.set(node, panel);
    followPoolWidget(node);
    showPools(node);
    // A new node gets its fixed size; a loaded one gets its saved size right after this.
    node.setSize([Math.max(node.size[0], GRID_NODE_SIZE[0]), Math.max(node.size[1], GRID_NODE_SIZE[1])]);
    // Zoomed out the frontend hides the grid: mark a waiting one, as the Image Gate does.
    const drawWidget = widget.draw;
    widget.draw = function (ctx, drawnNode, width, y, ...rest) {
        const result = drawWidget?.call(this, ctx, drawnNode, width, y, ...rest);
        if (panel.waiting && app.canvas?.low_quality) drawWaitingMarker(drawnNode ?? node, ctx, y);
        return result;
    };
}

function attachAdd(node) {
    const picker = new IdPicker({
        label: t("grid.poolBar", "pool"),
        title: t("pool.pickerTitle", "Pick an existing pool (the list is refreshed each time it is opened). The pool field stays free text: a new id makes a new pool."),
        ariaLabel: t("pool.pickerLabel", "pick a pool to add to"),
        prompt: t("grid.pickPool", "pick a pool…"),
        empty: t("grid.noPools", "no pools yet"),
        onPick: (id) => pickPool(node, id),
        onOpen: () => refreshPools(),
    });
    const status = el("div", { class: "dsg-pool-status", role: "status",
                               text: t("pool.idle", "Adds each frame to the pool without pausing; what it did shows here.") });
    const element = el("div", { class: "dsg-gate dsg-pool-add" }, [picker.element, status]);
    addPanelWidget(node, "pool_status", "datasete_pool_status", element, { minHeight: () => 62 });
    addPanels.set(node, { element, picker, status });
    followPoolWidget(node);
    showPools(node);
    node.setSize([Math.max(node.size[0], ADD_MIN_WIDTH), node.computeSize()[1]]);
}

app.registerExtension({
    name: "datasete.gates.GridPoolGate",

    async setup() {
        loadStylesheets("./grid_gate.css");
        api.addEventListener(EVENT_STATUS, ({ detail }) => onStatus(detail));
        onGateStatus("grid", (_key, _text, detail) => onStatus(detail)); // a timeout with block or cancel
        api.addEventListener("reconnected", () => refreshPools());
        window.addEventListener("keydown", onKeyDown, { capture: true });
        await Promise.all([tracker.listen(), refreshPools()]);
    },

    nodeCreated(node) {
        if (isGrid(node)) attachGrid(node);
        else if (isNodeOf(node, ADD_CLASS)) attachAdd(node);
    },

    // A loaded or restored workflow gets fresh nodes: show what waits on them.
    afterConfigureGraph() {
        for (const node of gridNodes()) {
            syncGrid(node);
            showPools(node);
        }
        for (const node of addNodes()) {
            addPanels.get(node).element.dataset.nodeId = String(node.id);
            showPools(node);
            const note = noteOf(node);
            if (note) addPanels.get(node).status.textContent = note;
        }
    },
});
