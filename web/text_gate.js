// Text Gate: the browser side. While the gate waits, the node shows the image (if any) and the text
// in an editable box, with a word and character count and the trigger word highlighted; Approve
// (Ctrl+Enter), Reject and Cancel (Esc) answer it. Only the frontend's public extension API is used.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { waitingGates } from "./dock.js";
import { t } from "./i18n.js";
import { isTyping, PauseTracker } from "./pause_client.js";
import { countText, TextPanel } from "./text_panel.js";

// Kept for scripts that took countText from here before the panel moved to text_panel.js.
export { countText };
import { onGateStatus } from "./gate_status.js";

const NODE_CLASS = "DataseteTextGate";
const KIND = "text";
const ROUTE_CHOOSE = "/datasete_gate/choose";
const ROUTE_CANCEL = "/datasete_gate/cancel";
const PANEL_WIDGET = "text_gate_panel";
// The node's size when it is created; it never grows on its own afterwards.
const NODE_WIDTH = 440;
const PANEL_MIN_HEIGHT = 300;

const panels = new WeakMap(); // node -> TextPanel
const tracker = new PauseTracker(api, KIND, (nodeId, note) => {
    const node = app.graph?.getNodeById?.(nodeId);
    if (isTextGate(node) && panels.has(node)) syncNode(node, note);
});

function loadStyles() {
    for (const file of ["./image_gate.css", "./text_gate.css"]) {
        const href = new URL(file, import.meta.url).href;
        if ([...document.querySelectorAll("link[rel=stylesheet]")].some((link) => link.href === href)) continue;
        const link = document.createElement("link");
        link.rel = "stylesheet";
        link.href = href;
        document.head.append(link);
    }
}


// --- the graph -----------------------------------------------------------------------------------

function isTextGate(node) {
    return !!node && (node.comfyClass === NODE_CLASS || node.type === NODE_CLASS);
}

function textGateNodes() {
    return (app.graph?.nodes ?? []).filter((node) => isTextGate(node) && panels.has(node));
}

function syncNode(node, note = "") {
    const panel = panels.get(node);
    if (!panel) return;
    panel.element.dataset.nodeId = String(node.id);
    const entry = tracker.entryFor(node.id);
    if (entry) panel.showPause(entry);
    else if (panel.waiting || note) panel.showIdle(note);
    node.setDirtyCanvas?.(true, true);
    waitingGates.reconcileSoon();
}

// A waiting Text Gate whose node cannot show its panel goes to the shared "Waiting gates" dock.
waitingGates.addSource(() => textGateNodes().map((node) => ({ node, panel: panels.get(node) })));

function syncAll() {
    for (const node of textGateNodes()) syncNode(node);
}

async function answer(node, path, body, doneNote) {
    const panel = panels.get(node);
    const entry = panel?.entry;
    if (!entry || panel.busy) return;
    panel.setBusy(true);
    panel.setError("");
    const result = await tracker.answer(entry, path, body);
    if (result.ok && doneNote && !panel.waiting) panel.showIdle(doneNote);
    if (result.error) panel.setError(result.error);
    if (panel.entry && panel.entry.token === entry.token) panel.setBusy(false);
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
    const selected = Object.values(app.canvas?.selected_nodes ?? {})
        .filter((node) => isTextGate(node) && panels.get(node)?.waiting);
    if (selected.length !== 1) return;
    const panel = panels.get(selected[0]);
    if (approveKey) panel.approve();
    else cancel(selected[0]);
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
    const widget = node.addDOMWidget(PANEL_WIDGET, "datasete_text_gate_panel", panel.element, {
        serialize: false,
        hideOnZoom: false,
        margin: 6,
        getMinHeight: () => PANEL_MIN_HEIGHT,
        getValue: () => "",
        setValue: () => {},
    });
    widget.serialize = false;
    panels.set(node, panel);
    panel.element.dataset.nodeId = String(node.id);
    // One size, set once: the panel fits itself into it, waiting or not (a loaded node keeps its saved size).
    const [, height] = node.computeSize();
    node.setSize([Math.max(node.size[0], NODE_WIDTH), Math.max(node.size[1], height)]);
}

app.registerExtension({
    name: "datasete.gates.TextGate",

    async setup() {
        loadStyles();
        window.addEventListener("keydown", onKeyDown, { capture: true });
        // A timeout's outcome, a caption that could not be written: said on the idle node.
        onGateStatus(KIND, (key, text) => {
            const node = app.graph?.getNodeById?.(key);
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
