// Text Gate: the browser side. While the gate waits, the node shows the image (if any) and the text
// in an editable box, with a word and character count and the trigger word highlighted; Approve
// (Ctrl+Enter), Reject and Cancel (Esc) answer it. Only the frontend's public extension API is used.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { waitingGates } from "./dock.js";
import { t } from "./i18n.js";
import { addPanelWidget, isNodeOf, loadStylesheets, soleSelected } from "./node_glue.js";
import { allNodes, locate } from "./graph_locate.js";
import { answerFromPanel, isTyping, PauseTracker, ROUTE_CANCEL, ROUTE_CHOOSE } from "./pause_client.js";
import { countText, TextPanel } from "./text_panel.js";
import { onGateStatus } from "./gate_status.js";

// Kept for scripts that took countText from here before the panel moved to text_panel.js.
export { countText };

const NODE_CLASS = "DataseteTextGate";
const KIND = "text";
const PANEL_WIDGET = "text_gate_panel";
// The node's size when it is created; it never grows on its own afterwards.
const NODE_WIDTH = 440;
const PANEL_MIN_HEIGHT = 300;

const panels = new WeakMap(); // node -> TextPanel
const tracker = new PauseTracker(api, KIND, (nodeId, note, entry) => {
    const node = locate(app, entry)?.node;
    if (isTextGate(node) && panels.has(node)) syncNode(node, note);
});


// --- the graph -----------------------------------------------------------------------------------

function isTextGate(node) {
    return isNodeOf(node, NODE_CLASS);
}

/** The Text Gates of the open workflow, inside subgraphs too. */
function textGateNodes() {
    return allNodes(app).filter((node) => isTextGate(node) && panels.has(node));
}

/** The pause waiting at this node (queued from this workflow), or null. */
function entryOf(node) {
    return tracker.find((entry) => locate(app, entry)?.node === node);
}

function syncNode(node, note = "") {
    const panel = panels.get(node);
    if (!panel) return;
    panel.element.dataset.nodeId = String(node.id);
    const entry = entryOf(node);
    if (entry) panel.element.dataset.executionId = String(entry.node_id);
    if (entry) panel.showPause(entry);
    else if (panel.waiting || note) panel.showIdle(note);
    node.setDirtyCanvas?.(true, true);
    waitingGates.reconcileSoon();
}

// A waiting Text Gate whose node cannot show its panel goes to the shared "Waiting gates" dock.
waitingGates.addSource(() => (app.graph?.nodes ?? []).filter((node) => isTextGate(node) && panels.has(node))
    .map((node) => ({ node, panel: panels.get(node) })));
// A waiting Text Gate whose node is not on screen gets a text box of its own in the "Waiting gates" panel.
waitingGates.addKind(KIND, {
    tracker,
    panelOf: (node) => (isTextGate(node) ? panels.get(node) : null),
    createPanel: (entry) => {
        const panel = new TextPanel({
            api,
            onApprove: (text) => answerFromPanel(tracker, panel, panel.entry, ROUTE_CHOOSE, { approve: true, text }),
            onReject: () => answerFromPanel(tracker, panel, panel.entry, ROUTE_CHOOSE, { approve: false }),
            onCancel: () => answerFromPanel(tracker, panel, panel.entry, ROUTE_CANCEL, {}),
            apiURL: (path) => api.apiURL(path),
        });
        panel.showPause(entry);
        return panel;
    },
});

function syncAll() {
    for (const node of textGateNodes()) syncNode(node);
}

async function answer(node, path, body, doneNote) {
    const panel = panels.get(node);
    if (!panel) return;
    const result = await answerFromPanel(tracker, panel, panel.entry, path, body);
    if (result.ok && doneNote && !panel.waiting) panel.showIdle(doneNote);
}

function approve(node, text) {
    const entry = panels.get(node)?.entry;
    const note = entry?.caption_file ? t("text.approvedSaving", "approved · saving {file}", { file: entry.caption_file })
        : t("text.approved", "approved");
    return answer(node, ROUTE_CHOOSE, { approve: true, text }, note);
}

function reject(node) {
    return answer(node, ROUTE_CHOOSE, { approve: false }, t("text.rejected", "rejected: every output blocked"));
}

function cancel(node) {
    return answer(node, ROUTE_CANCEL, {}, t("text.cancelled", "cancelled"));
}

// --- keys ----------------------------------------------------------------------------------------

/** Ctrl+Enter approves and Esc cancels for the one selected Text Gate that waits (its box handles its own keys). */
function onKeyDown(event) {
    if (event.repeat) return;
    const approveKey = event.key === "Enter" && (event.ctrlKey || event.metaKey) && !event.altKey && !event.shiftKey;
    const cancelKey = event.key === "Escape" && !event.ctrlKey && !event.metaKey && !event.altKey;
    if (!approveKey && !cancelKey) return;
    if (isTyping(event.composedPath()[0])) return;
    const node = soleSelected(app.canvas, (candidate) => isTextGate(candidate) && panels.get(candidate)?.waiting);
    if (!node) return;
    if (approveKey) panels.get(node).approve();
    else cancel(node);
    event.preventDefault();
    event.stopImmediatePropagation();
}

// --- the extension -------------------------------------------------------------------------------

function attachPanel(node) {
    const panel = new TextPanel({
        api,
        onApprove: (text) => approve(node, text),
        onReject: () => reject(node),
        onCancel: () => cancel(node),
        apiURL: (path) => api.apiURL(path),
    });
    addPanelWidget(node, PANEL_WIDGET, "datasete_text_gate_panel", panel.element, { minHeight: () => PANEL_MIN_HEIGHT });
    panels.set(node, panel);
    panel.element.dataset.nodeId = String(node.id);
    // One size, set once: the panel fits itself into it, waiting or not (a loaded node keeps its saved size).
    const [, height] = node.computeSize();
    node.setSize([Math.max(node.size[0], NODE_WIDTH), Math.max(node.size[1], height)]);
}

app.registerExtension({
    name: "datasete.gates.TextGate",

    async setup() {
        loadStylesheets("./image_gate.css", "./text_gate.css");
        window.addEventListener("keydown", onKeyDown, { capture: true });
        // A timeout's outcome, a caption that could not be written: said on the idle node.
        onGateStatus(KIND, (node, text) => {
            if (isTextGate(node) && panels.has(node) && !panels.get(node).waiting) panels.get(node).showIdle(text);
        });
        await tracker.listen();
    },

    nodeCreated(node) {
        if (isTextGate(node)) attachPanel(node);
    },

    afterConfigureGraph() {
        syncAll();
    },
});
