// Image Gate (Manual Router): the browser side.
//
// Each gate node carries a DOM widget (gate_panel.js). The server announces a waiting
// gate with the `datasete_gate.preview` event and its end with `datasete_gate.resolved`;
// GET /datasete_gate/pending restores the waiting gates after a reload or a reconnect.
// Only the frontend's public extension API is used.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { waitingGates } from "./dock.js";
import { onGateStatus, timedOutText } from "./gate_status.js";
import { GatePanel, drawWaitingMarker } from "./gate_panel.js";
import { t } from "./i18n.js";
import { addPanelWidget, chainCallback, isNodeOf, loadStylesheets, soleSelected } from "./node_glue.js";
import { allNodes, locate } from "./graph_locate.js";
import { answerFromPanel, EVENT_RESOLVED, isTyping, kindOf, PauseTracker, ROUTE_CANCEL, ROUTE_CHOOSE } from "./pause_client.js";

const NODE_CLASS = "DataseteImageGate";
const KIND = "image";
const ROUTE_BUS_LIST = "/datasete_gate/bus/list";
const PANEL_WIDGET = "gate_panel";
// A new gate node's width: room for the tools row and two labelled route buttons.
const DEFAULT_WIDTH = 420;

const panels = new WeakMap(); // node -> GatePanel
let slotIds = [];
// node -> what was decided last at that gate ("route 2 → Needs inpaint · published to x").
const lastDecisions = new WeakMap();

// The waiting gates of this kind (pause_client.js); a change shows on its node, if the workflow open
// here queued it (at any depth of subgraphs: graph_locate.js).
const tracker = new PauseTracker(api, KIND, (nodeId, note, entry) => {
    const node = locate(app, entry)?.node;
    if (isGate(node) && panels.has(node)) syncNode(node, note);
});

// --- the graph -------------------------------------------------------------------------

function isGate(node) {
    return isNodeOf(node, NODE_CLASS);
}

/** The gate nodes of the open workflow, inside subgraphs too. */
function gateNodes() {
    return allNodes(app).filter((node) => isGate(node) && panels.has(node));
}

/** The gate nodes of the top level, the ones a node view without DOM widgets hands to the dock. */
function topGateNodes() {
    return (app.graph?.nodes ?? []).filter((node) => isGate(node) && panels.has(node));
}

/** The pause waiting at this node (queued from this workflow), or null. */
function entryOf(node) {
    return tracker.find((entry) => locate(app, entry)?.node === node);
}

/**
 * The title of the node route `route` of the gate leads to, or "". A gate inside a subgraph may be wired
 * to the subgraph's output (a link to no node of its graph): the route then continues from the
 * subgraph node outside, so `hosts` (the subgraph nodes from the top down that hold the gate) are
 * followed outwards.
 */
function routeLabel(node, route, hosts = locate(app, entryOf(node))?.hosts ?? []) {
    const output = node.outputs?.find((slot) => slot.name === `route_${route}`);
    return linkTargetTitle(node, output, hosts);
}

function linkTargetTitle(node, output, hosts) {
    const linkId = output?.links?.[0];
    if (linkId === undefined || linkId === null) return "";
    const graph = node.graph ?? app.graph; // a subgraph's links are its own
    const link = graph?.links?.get?.(linkId) ?? graph?.links?.[linkId];
    if (!link) return "";
    const target = graph.getNodeById(link.target_id);
    if (target) return target.title ?? "";
    const host = hosts.at(-1);
    if (!host) return "";
    return linkTargetTitle(host, host.outputs?.[link.target_slot], hosts.slice(0, -1));
}

/** Show on `node` what the server says about it: its pending entry, or idle. */
function syncNode(node, note = "") {
    const panel = panels.get(node);
    if (!panel) return;
    panel.element.dataset.nodeId = String(node.id); // lets scripts and tests find a node's panel
    const entry = entryOf(node);
    const shownBefore = panel.entry?.token ?? null;
    panel.setLastDecision(lastDecisions.get(node) ?? "");
    if (entry) panel.element.dataset.executionId = String(entry.node_id);
    else delete panel.element.dataset.executionId;
    if (entry) panel.showPause(entry);
    else if (shownBefore || note) panel.showIdle(note);
    // The panel keeps its size in both states; only the canvas (low-zoom marker) needs a redraw.
    node.setDirtyCanvas?.(true, true);
    waitingGates.reconcileSoon();
}

// A waiting gate whose node cannot show its panel goes to the shared "Waiting gates" dock (dock.js).
waitingGates.addSource(() => topGateNodes().map((node) => ({ node, panel: panels.get(node) })));
// A waiting gate whose node is not on screen gets a panel of its own in the "Waiting gates" panel.
waitingGates.addKind(KIND, {
    tracker,
    panelOf: (node) => (isGate(node) ? panels.get(node) : null),
    createPanel: (entry) => {
        const found = locate(app, entry);
        const panel = new GatePanel({
            api,
            onChoose: (route, mask) => answerFromPanel(tracker, panel, panel.entry, ROUTE_CHOOSE, chooseBody(route, mask)),
            onCancel: () => answerFromPanel(tracker, panel, panel.entry, ROUTE_CANCEL, {}),
            onPickSlot: () => {},
            onOpenPicker: () => {},
            routeLabel: (route) => (found ? routeLabel(found.node, route, found.hosts) : ""),
            apiURL: (path) => api.apiURL(path),
        });
        panel.slotPicker.element.style.display = "none"; // get_id is the node's setting, not this pause's
        panel.showPause(entry);
        return panel;
    },
});

/** "Last: route 2 → Needs inpaint · published to restart_point", or "Last: cancelled". */
function describeDecision(detail, node) {
    if (detail.route === null || detail.route === undefined) {
        return detail.timed_out ? timedOutText(detail) : t("gate.lastCancelled", "Last: cancelled");
    }
    const label = isGate(node) ? routeLabel(node, detail.route) : "";
    let text = t("gate.lastRoute", "Last: route {route}", { route: detail.route })
        + (label ? " " + t("gate.lastRouteTarget", "→ {label}", { label }) : "");
    if (detail.published) text += " " + t("gate.lastPublished", "· published to {slot}", { slot: detail.published });
    if (detail.publish_error) {
        text += " " + t("gate.lastPublishFailed", "· publish failed: {error}", { error: detail.publish_error });
    }
    if (detail.timed_out) text = timedOutText(detail) + " · " + text;
    return text;
}

function syncAll() {
    for (const node of gateNodes()) syncNode(node);
}

/** Send a choice or a cancel for the pause `node` shows; a stale pause is simply cleared. */
async function answerPause(node, path, body) {
    const panel = panels.get(node);
    if (panel) await answerFromPanel(tracker, panel, panel.entry, path, body);
}

function chooseBody(route, mask) {
    return mask ? { route, mask } : { route };
}

function choose(node, route, mask) {
    return answerPause(node, ROUTE_CHOOSE, chooseBody(route, mask));
}

function cancel(node) {
    return answerPause(node, ROUTE_CANCEL, {});
}

// --- the disk bus slot picker ----------------------------------------------------------

let slotRequest = null;

function getIdWidget(node) {
    return node.widgets?.find((widget) => widget.name === "get_id");
}

function showSlots(node) {
    panels.get(node)?.setSlots(slotIds, String(getIdWidget(node)?.value ?? ""));
}

/** Fetch the slot ids once at a time; a call while one is in flight waits for it and reruns. */
async function refreshSlots() {
    if (slotRequest) {
        slotRequest.again = true;
        return slotRequest.promise;
    }
    const request = { again: false };
    slotRequest = request;
    request.promise = (async () => {
        try {
            do {
                request.again = false;
                const response = await api.fetchApi(ROUTE_BUS_LIST, { cache: "no-store" });
                if (response.ok) slotIds = (await response.json()).ids ?? [];
            } while (request.again);
        } catch (error) {
            console.warn("Image Gate: could not list the bus slots", error);
        } finally {
            slotRequest = null;
        }
        for (const node of gateNodes()) showSlots(node);
    })();
    return request.promise;
}

function pickSlot(node, id) {
    const widget = getIdWidget(node);
    if (!widget) return;
    widget.value = id;
    widget.callback?.(id, app.canvas, node);
    node.setDirtyCanvas?.(true, true);
    app.graph?.change?.();
}

// --- keys ------------------------------------------------------------------------------

/** Keys 1-9 choose and Esc cancels, for the one selected gate that waits. */
function onKeyDown(event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const isDigit = event.key.length === 1 && event.key >= "1" && event.key <= "9";
    if (!isDigit && event.key !== "Escape") return;
    if (isTyping(event.composedPath()[0])) return;
    const node = soleSelected(app.canvas, (candidate) => isGate(candidate) && panels.get(candidate)?.waiting);
    if (!node) return;
    const panel = panels.get(node);
    if (isDigit) {
        const route = Number(event.key);
        if (route > panel.entry.routes) return;
        choose(node, route, panel.mask());
    } else {
        cancel(node);
    }
    event.preventDefault();
    event.stopImmediatePropagation();
}

// --- the extension ---------------------------------------------------------------------

function attachPanel(node) {
    const panel = new GatePanel({
        api,
        onChoose: (route, mask) => choose(node, route, mask),
        onCancel: () => cancel(node),
        onPickSlot: (id) => pickSlot(node, id),
        onOpenPicker: () => refreshSlots(),
        routeLabel: (route) => routeLabel(node, route),
        apiURL: (path) => api.apiURL(path),
    });
    const widget = addPanelWidget(node, PANEL_WIDGET, "datasete_gate_panel", panel.element,
                                  { hideOnZoom: true, minHeight: () => panel.minHeight() });
    panels.set(node, panel);

    // Keep the picker in step when get_id is typed in.
    chainCallback(getIdWidget(node), "callback", () => showSlots(node));
    chainCallback(node, "onConnectionsChange", () => panel.refreshRouteLabels());
    showSlots(node);
    chainCallback(routesWidget(node), "callback", () => syncRouteOutputs(node));
    // A saved node comes back with the outputs it was saved with.
    chainCallback(node, "onConfigure", function () {
        syncRouteOutputs(this);
    });
    syncRouteOutputs(node);
    // A new node gets room for a preview; a loaded node gets its saved size right after this.
    node.setSize([Math.max(node.size[0], DEFAULT_WIDTH),
        node.computeSize()[1] - panel.minHeight() + panel.defaultHeight()]);

    // Zoomed out, the frontend hides DOM widgets and paints a plain block where they were: paint a
    // marker over that block, so a waiting gate never looks idle.
    const drawWidget = widget.draw;
    widget.draw = function (ctx, drawnNode, width, y, ...rest) {
        const result = drawWidget?.call(this, ctx, drawnNode, width, y, ...rest);
        if (panel.waiting && app.canvas?.low_quality) drawWaitingMarker(drawnNode ?? node, ctx, y);
        return result;
    };
}

// --- outputs follow `routes` -----------------------------------------------------------
//
// The node declares mask + route_1..route_8; only the first `routes` route outputs are shown.
// Outputs are only ever removed from the end, so the index of every remaining output (what a
// link and the queued prompt refer to) never changes. A route output beyond `routes` that still
// has links stays until it is unlinked, so opening a workflow never silently drops a connection.

const MAX_ROUTES = 8;
const ROUTE_OUTPUT = /^route_(\d+)$/;

function routesWidget(node) {
    return node.widgets?.find((widget) => widget.name === "routes");
}

function syncRouteOutputs(node) {
    const wanted = Math.max(1, Math.min(MAX_ROUTES, Math.round(Number(routesWidget(node)?.value ?? MAX_ROUTES)) || 1));
    const outputs = node.outputs ?? [];
    for (let index = outputs.length - 1; index > wanted; index--) {
        const output = outputs[index];
        if (!ROUTE_OUTPUT.test(output?.name ?? "") || output.links?.length) break;
        node.removeOutput(index);
    }
    for (let route = (node.outputs?.length ?? 1); route <= wanted; route++) {
        node.addOutput(`route_${route}`, "IMAGE");
    }
    node.setDirtyCanvas?.(true, true);
}

/** Loaded nodes keep their saved size, but never less than the panel needs. */
function ensureMinimumSize(node) {
    const minimum = node.computeSize();
    if (node.size[0] < minimum[0] || node.size[1] < minimum[1]) {
        node.setSize([Math.max(node.size[0], minimum[0]), Math.max(node.size[1], minimum[1])]);
    }
}

app.registerExtension({
    name: "datasete.gates.ImageGate",

    async setup() {
        loadStylesheets("./image_gate.css");
        // The tracker drops the pause on this event; the event may come after this tab's own answer
        // already cleared it: record and show the decision either way.
        // The node is the one the pause was shown for (this workflow's, at its depth), not any node of that id.
        api.addEventListener(EVENT_RESOLVED, ({ detail }) => {
            const node = detail?.token ? locate(app, tracker.byToken(detail.token))?.node : null;
            if (isGate(node) && panels.has(node) && kindOf(detail) === KIND) {
                lastDecisions.set(node, describeDecision(detail, node));
                panels.get(node).setLastDecision(lastDecisions.get(node));
            }
            if (detail?.published) refreshSlots();
        });
        api.addEventListener("reconnected", () => refreshSlots());
        // "slot 'x' not found: nothing to gate", a timeout: shown on the node like a decision.
        onGateStatus("image", (node, text) => {
            if (!isGate(node) || !panels.has(node)) return;
            lastDecisions.set(node, text);
            panels.get(node).setLastDecision(text);
        });
        window.addEventListener("keydown", onKeyDown, { capture: true });
        await Promise.all([tracker.listen(), refreshSlots()]);
    },

    nodeCreated(node) {
        if (isGate(node)) attachPanel(node);
    },

    // A loaded or restored workflow gets fresh nodes: show what is waiting on them.
    afterConfigureGraph() {
        syncAll();
        for (const node of gateNodes()) {
            ensureMinimumSize(node);
            showSlots(node);
            panels.get(node).refreshRouteLabels();
        }
    },
});
