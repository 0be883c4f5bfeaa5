// Image Gate (Manual Router): the browser side.
//
// Each gate node carries a DOM widget (gate_panel.js). The server announces a waiting
// gate with the `datasete_gate.preview` event and its end with `datasete_gate.resolved`;
// GET /datasete_gate/pending restores the waiting gates after a reload or a reconnect.
// Only the frontend's public extension API is used.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { GatePanel } from "./gate_panel.js";

const NODE_CLASS = "DataseteImageGate";
const EVENT_PREVIEW = "datasete_gate.preview";
const EVENT_RESOLVED = "datasete_gate.resolved";
const ROUTE_PENDING = "/datasete_gate/pending";
const ROUTE_CHOOSE = "/datasete_gate/choose";
const ROUTE_CANCEL = "/datasete_gate/cancel";
const ROUTE_BUS_LIST = "/datasete_gate/bus/list";
const PANEL_WIDGET = "gate_panel";
const MIN_IDLE_WIDTH = 320;
const MIN_PAUSED_WIDTH = 380;

// node_id (as the server sends it) -> pending entry. Kept apart from the nodes because
// the preview can arrive before the graph is loaded, or for a node of another workflow.
const pauses = new Map();
// Where each entry came from: a counter value, so a /pending answer does not undo an
// event that arrived while the request was in flight.
const pauseSeen = new Map();
let eventCounter = 0;
// Tokens already answered: a late /pending answer must not bring them back.
const resolvedTokens = new Set();
const RESOLVED_MEMORY = 512;

const panels = new WeakMap(); // node -> GatePanel
let slotIds = [];

// --- styles ----------------------------------------------------------------------------

function loadStyles() {
    const href = new URL("./image_gate.css", import.meta.url).href;
    if (document.querySelector(`link[data-datasete-gate]`)) return;
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = href;
    link.dataset.dataseteGate = "";
    document.head.append(link);
}

// --- the graph -------------------------------------------------------------------------

function isGate(node) {
    return !!node && (node.comfyClass === NODE_CLASS || node.type === NODE_CLASS);
}

function gateNodes() {
    return (app.graph?.nodes ?? []).filter((node) => isGate(node) && panels.has(node));
}

/** The gate node an entry is for, in the graph on screen; null for any other graph. */
function nodeFor(entry) {
    const node = app.graph?.getNodeById?.(entry.node_id);
    return isGate(node) && panels.has(node) ? node : null;
}

function routeLabel(node, route) {
    const output = node.outputs?.find((slot) => slot.name === `route_${route}`);
    const linkId = output?.links?.[0];
    if (linkId === undefined) return "";
    const link = app.graph?.links?.get?.(linkId) ?? app.graph?.links?.[linkId];
    const target = link ? app.graph.getNodeById(link.target_id) : null;
    return target?.title ?? "";
}

/** Make room for the preview when a pause starts, and give the room back when it ends. */
function fitNode(node, panel) {
    if (panel.waiting) {
        const width = Math.max(node.size[0], MIN_PAUSED_WIDTH);
        // computeSize() counts the panel at its minimum height; swap in the height it would like.
        const wanted = node.computeSize()[1] - panel.minHeight() + panel.preferredHeight(width);
        if (width > node.size[0] || wanted > node.size[1]) {
            panel.sizeBeforePause ??= [...node.size];
            node.setSize([width, Math.max(node.size[1], wanted)]);
            panel.sizeDuringPause = [...node.size];
        }
    } else if (panel.sizeBeforePause) {
        // Only undo our own growth: a node the person resized meanwhile keeps its size.
        const untouched = panel.sizeDuringPause
            && node.size[0] === panel.sizeDuringPause[0] && node.size[1] === panel.sizeDuringPause[1];
        if (untouched) {
            const [width, height] = panel.sizeBeforePause;
            const minimum = node.computeSize(); // computeSize(out) would write into its argument
            node.setSize([Math.max(width, minimum[0]), Math.max(height, minimum[1])]);
        }
        panel.sizeBeforePause = null;
        panel.sizeDuringPause = null;
    }
    node.setDirtyCanvas?.(true, true);
}

/** Show on `node` what the server says about it: its pending entry, or idle. */
function syncNode(node, note = "") {
    const panel = panels.get(node);
    if (!panel) return;
    panel.element.dataset.nodeId = String(node.id); // lets scripts and tests find a node's panel
    const entry = pauses.get(String(node.id));
    const shownBefore = panel.entry?.token ?? null;
    if (entry) panel.showPause(entry);
    else if (shownBefore || note) panel.showIdle(note);
    if ((panel.entry?.token ?? null) !== shownBefore) fitNode(node, panel);
}

function syncAll() {
    for (const node of gateNodes()) syncNode(node);
}

// --- pauses ----------------------------------------------------------------------------

function rememberResolved(token) {
    resolvedTokens.add(token);
    if (resolvedTokens.size > RESOLVED_MEMORY) {
        resolvedTokens.delete(resolvedTokens.values().next().value);
    }
}

function addPause(entry) {
    if (!entry || typeof entry.token !== "string" || resolvedTokens.has(entry.token)) return;
    if (entry.kind && entry.kind !== "image") return; // the other kinds have panels of their own
    const key = String(entry.node_id);
    pauses.set(key, entry);
    pauseSeen.set(key, ++eventCounter);
    const node = nodeFor(entry);
    if (node) syncNode(node);
}

function dropPause(token, note = "") {
    rememberResolved(token);
    for (const [key, entry] of pauses) {
        if (entry.token !== token) continue;
        pauses.delete(key);
        pauseSeen.delete(key);
        const node = nodeFor(entry);
        if (node) syncNode(node, note);
    }
}

async function fetchPending() {
    const startedAt = eventCounter;
    let answer;
    try {
        const response = await api.fetchApi(ROUTE_PENDING, { cache: "no-store" });
        if (!response.ok) return;
        answer = await response.json();
    } catch (error) {
        console.warn("Image Gate: could not fetch the waiting gates", error);
        return;
    }
    const fresh = new Map();
    for (const entry of answer.pending ?? []) {
        if (!resolvedTokens.has(entry.token)) fresh.set(String(entry.node_id), entry);
    }
    // Events newer than the request know better than its answer.
    for (const [key, entry] of pauses) {
        if ((pauseSeen.get(key) ?? 0) > startedAt) fresh.set(key, entry);
    }
    pauses.clear();
    pauseSeen.clear();
    for (const [key, entry] of fresh) {
        pauses.set(key, entry);
        pauseSeen.set(key, startedAt);
    }
    syncAll();
}

async function postJSON(path, body) {
    const response = await api.fetchApi(path, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    let data = {};
    try {
        data = await response.json();
    } catch {
        // An answer without a JSON body still has a status to act on.
    }
    return { status: response.status, ok: response.ok, data };
}

/** Send a choice or a cancel for the pause `node` shows; a stale pause is simply cleared. */
async function answerPause(node, path, body) {
    const panel = panels.get(node);
    const entry = panel?.entry;
    if (!entry || panel.busy) return;
    panel.setBusy(true);
    panel.setError("");
    try {
        const { status, ok, data } = await postJSON(path, { token: entry.token, ...body });
        if (ok) {
            dropPause(entry.token);
        } else if (status === 404 || status === 409) {
            dropPause(entry.token, "that pause was already answered or has ended");
        } else {
            panel.setError(data.error ?? `the server answered ${status}`);
        }
    } catch (error) {
        panel.setError(`could not reach the server: ${error.message ?? error}`);
    } finally {
        if (panel.entry && panel.entry.token === entry.token) panel.setBusy(false);
    }
}

function choose(node, route, mask) {
    const body = { route };
    if (mask) body.mask = mask;
    return answerPause(node, ROUTE_CHOOSE, body);
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

function isTyping(target) {
    if (!(target instanceof HTMLElement)) return false;
    if (target.isContentEditable || target.tagName === "TEXTAREA" || target.tagName === "SELECT") return true;
    if (target.tagName !== "INPUT") return false;
    return !["button", "checkbox", "radio", "range", "color", "submit", "reset"].includes(target.type);
}

/** Keys 1-9 choose and Esc cancels, for the one selected gate that waits. */
function onKeyDown(event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const isDigit = event.key.length === 1 && event.key >= "1" && event.key <= "9";
    if (!isDigit && event.key !== "Escape") return;
    if (isTyping(event.composedPath()[0])) return;
    const selected = Object.values(app.canvas?.selected_nodes ?? {})
        .filter((node) => isGate(node) && panels.get(node)?.waiting);
    if (selected.length !== 1) return;
    const node = selected[0];
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
        onChoose: (route, mask) => choose(node, route, mask),
        onCancel: () => cancel(node),
        onPickSlot: (id) => pickSlot(node, id),
        onOpenPicker: () => refreshSlots(),
        routeLabel: (route) => routeLabel(node, route),
        apiURL: (path) => api.apiURL(path),
    });
    const widget = node.addDOMWidget(PANEL_WIDGET, "datasete_gate_panel", panel.element, {
        serialize: false,
        hideOnZoom: true,
        margin: 6,
        getMinHeight: () => panel.minHeight(),
        getValue: () => "",
        setValue: () => {},
    });
    widget.serialize = false; // nothing of the panel belongs in the saved workflow
    panels.set(node, panel);

    // Keep the picker in step when get_id is typed in.
    const getId = getIdWidget(node);
    if (getId) {
        const typed = getId.callback;
        getId.callback = function (value, ...rest) {
            const result = typed?.call(this, value, ...rest);
            showSlots(node);
            return result;
        };
    }
    const onConnectionsChange = node.onConnectionsChange;
    node.onConnectionsChange = function (...args) {
        const result = onConnectionsChange?.apply(this, args);
        panel.refreshRouteLabels();
        return result;
    };
    showSlots(node);
    // Room for the title and the tool row; a loaded node gets its saved size right after this.
    node.setSize([Math.max(node.size[0], MIN_IDLE_WIDTH), node.computeSize()[1]]);
}

app.registerExtension({
    name: "datasete.gates.ImageGate",

    async setup() {
        loadStyles();
        api.addEventListener(EVENT_PREVIEW, ({ detail }) => addPause(detail));
        api.addEventListener(EVENT_RESOLVED, ({ detail }) => {
            if (detail?.token) dropPause(detail.token);
            if (detail?.published) refreshSlots();
        });
        api.addEventListener("reconnected", () => {
            fetchPending();
            refreshSlots();
        });
        window.addEventListener("keydown", onKeyDown, { capture: true });
        await Promise.all([fetchPending(), refreshSlots()]);
    },

    nodeCreated(node) {
        if (isGate(node)) attachPanel(node);
    },

    // A loaded or restored workflow gets fresh nodes: show what is waiting on them.
    afterConfigureGraph() {
        syncAll();
        for (const node of gateNodes()) {
            showSlots(node);
            panels.get(node).refreshRouteLabels();
        }
    },
});
