// Text Gate: the browser side. While the gate waits, the node shows the image (if any) and the text
// in an editable box, with a word and character count and the trigger word highlighted; Approve
// (Ctrl+Enter), Reject and Cancel (Esc) answer it. Only the frontend's public extension API is used.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { el, previewURL } from "./gate_panel.js";
import { waitingGates } from "./dock.js";
import { t } from "./i18n.js";
import { addPanelWidget, isNodeOf, loadStylesheets, soleSelected } from "./node_glue.js";
import { allNodes, locate } from "./graph_locate.js";
import { answerFromPanel, isTyping, PauseTracker, ROUTE_CANCEL, ROUTE_CHOOSE } from "./pause_client.js";

const NODE_CLASS = "DataseteTextGate";
const KIND = "text";
const PANEL_WIDGET = "text_gate_panel";
const MAX_TEXT_BYTES = 1024 * 1024;
// The node's size when it is created; it never grows on its own afterwards.
const NODE_WIDTH = 440;
const PANEL_MIN_HEIGHT = 300;

const panels = new WeakMap(); // node -> TextPanel
const tracker = new PauseTracker(api, KIND, (nodeId, note, entry) => {
    const node = locate(app, entry)?.node;
    if (isTextGate(node) && panels.has(node)) syncNode(node, note);
});

// --- counting and the trigger ------------------------------------------------------------------

const wordSegmenter = typeof Intl !== "undefined" && Intl.Segmenter ? new Intl.Segmenter(undefined, { granularity: "word" }) : null;
const graphemeSegmenter = typeof Intl !== "undefined" && Intl.Segmenter ? new Intl.Segmenter(undefined, { granularity: "grapheme" }) : null;

/** Words (CJK counted per word as the browser segments it) and characters as a person sees them. */
export function countText(text) {
    let words = 0;
    let characters = 0;
    if (wordSegmenter) {
        for (const part of wordSegmenter.segment(text)) if (part.isWordLike) words++;
        for (const _ of graphemeSegmenter.segment(text)) characters++;
    } else {
        words = text.split(/\s+/u).filter(Boolean).length;
        characters = [...text].length;
    }
    return { words, characters };
}

function escapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** The trigger as a whole word or phrase, any case (as the server checks it); null without one. */
function triggerPattern(trigger) {
    const word = (trigger ?? "").trim();
    if (!word) return null;
    return new RegExp(`(?<![\\p{L}\\p{N}\\p{M}_])${escapeRegExp(word)}(?![\\p{L}\\p{N}\\p{M}_])`, "giu");
}

function utf8Length(text) {
    return new TextEncoder().encode(text).length;
}

// --- the panel -----------------------------------------------------------------------------------

function idleHint() {
    return t("text.idleHint", "Pauses here when the workflow runs: edit the text, then Approve (Ctrl+Enter), Reject or Cancel (Esc).");
}

class TextPanel {
    constructor(hooks) {
        this.hooks = hooks;
        this.entry = null;
        this.busy = false;
        this.confirming = false;
        this.original = "";
        this.element = el("div", { class: "dsg-gate dsg-text-gate", dataset: { state: "idle" } });
        this.idle = el("div", { class: "dsg-text-idle", text: idleHint() });
        this.#buildPause();
        this.element.append(this.idle, this.pause);
    }

    get waiting() {
        return this.entry !== null;
    }

    #buildPause() {
        this.file = el("span", { class: "dsg-text-file" });
        this.meta = el("span", { class: "dsg-meta" });
        const head = el("div", { class: "dsg-head" }, [
            el("span", { class: "dsg-dot" }), el("span", { class: "dsg-title", text: t("text.title", "Edit the text") }),
            this.file, this.meta]);

        this.image = el("img", { class: "dsg-text-img", alt: t("text.imageAlt", "the image of this text"), draggable: "false" });
        this.viewport = el("div", { class: "dsg-text-viewport" }, [this.image]);

        this.backdrop = el("div", { class: "dsg-text-backdrop", "aria-hidden": "true" });
        this.input = el("textarea", {
            class: "dsg-text-input", spellcheck: "true", "aria-label": t("text.boxLabel", "the text to approve"),
            title: t("text.boxTitle", "Ctrl+Enter approves, Esc cancels"),
        });
        this.input.addEventListener("input", () => this.#edited());
        this.input.addEventListener("scroll", () => this.#syncScroll());
        // Keys typed here are the person's text: none may reach ComfyUI's shortcuts (Delete removes the
        // node, Ctrl+Enter queues a prompt, r refreshes, ...). Ctrl+Enter and Esc answer the gate.
        this.input.addEventListener("keydown", (event) => {
            event.stopPropagation();
            if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !event.altKey) {
                event.preventDefault();
                this.approve();
            } else if (event.key === "Escape" && !event.ctrlKey && !event.metaKey && !event.altKey) {
                event.preventDefault();
                this.hooks.onCancel();
            }
        });
        for (const type of ["keyup", "keypress", "copy", "cut", "paste"]) {
            this.input.addEventListener(type, (event) => event.stopPropagation());
        }
        // A scrollable box scrolls itself instead of zooming the canvas.
        this.input.addEventListener("wheel", (event) => {
            if (this.input.scrollHeight > this.input.clientHeight) event.stopPropagation();
        }, { passive: true });
        this.editor = el("div", { class: "dsg-text-editor" }, [this.backdrop, this.input]);

        this.counts = el("span", { class: "dsg-text-counts", "aria-live": "polite" });
        this.trigger = el("span", { class: "dsg-text-trigger" });
        const info = el("div", { class: "dsg-text-info" }, [this.counts, this.trigger]);

        this.status = el("div", { class: "dsg-status", role: "status" });
        this.approveButton = el("button", {
            class: "dsg-text-approve", type: "button", text: t("text.approve", "Approve"),
            title: t("text.approveTitle", "Pass the text on (and save it as the caption file) — Ctrl+Enter"),
            onclick: () => this.approve(),
        });
        this.rejectButton = el("button", {
            class: "dsg-text-reject", type: "button", text: t("text.reject", "Reject"),
            title: t("text.rejectTitle", "Block every output of this gate; the run still succeeds. Nothing is saved."),
            onclick: () => this.hooks.onReject(),
        });
        this.cancelButton = el("button", {
            class: "dsg-cancel", type: "button", text: t("panel.cancel", "Cancel"),
            title: t("text.cancelTitle", "Stop this run here (Esc). Nothing is saved."),
            onclick: () => this.hooks.onCancel(),
        });
        const buttons = el("div", { class: "dsg-text-buttons" }, [this.approveButton, this.rejectButton, this.cancelButton]);
        this.pause = el("div", { class: "dsg-text-pause" }, [head, this.viewport, this.editor, info, this.status, buttons]);
    }

    showPause(entry) {
        const same = this.entry && this.entry.token === entry.token;
        this.entry = entry;
        this.element.dataset.state = "waiting";
        this.element.dataset.token = entry.token;
        if (same) return;
        this.setBusy(false);
        this.confirming = false;
        this.original = entry.text ?? "";
        this.pattern = triggerPattern(entry.trigger);
        this.input.value = this.original;
        this.input.scrollTop = 0;
        this.file.textContent = entry.caption_file ? t("text.savesTo", "→ {file}", { file: entry.caption_file }) : "";
        this.file.title = entry.caption_file
            ? t("text.savesToTitle", "Approve saves the text to {file}", { file: entry.caption_file }) : "";
        this.file.hidden = !entry.caption_file;
        const images = entry.images ?? [];
        this.viewport.hidden = images.length === 0;
        this.element.dataset.image = images.length ? "yes" : "no";
        if (images.length) {
            this.image.src = previewURL(images[0], this.hooks.apiURL);
            this.meta.textContent = `${entry.width}×${entry.height}`
                + (images.length > 1 ? " · " + t("panel.frameCount", "{count} frames", { count: images.length }) : "");
        } else {
            this.image.removeAttribute("src");
            this.meta.textContent = "";
        }
        this.status.textContent = entry.error ?? "";
        this.#setButtons();
        this.#edited();
        // The text is what the person came for: put the caret in it, without scrolling the page.
        requestAnimationFrame(() => {
            if (this.entry?.token === entry.token && document.activeElement === document.body) {
                this.input.focus({ preventScroll: true });
            }
        });
    }

    showIdle(note = "") {
        this.entry = null;
        this.setBusy(false);
        this.confirming = false;
        this.element.dataset.state = "idle";
        delete this.element.dataset.token;
        this.idle.textContent = note || idleHint();
        this.image.removeAttribute("src");
        if (this.input === document.activeElement) this.input.blur();
    }

    /** The text to send: the original, byte for byte, unless the person changed it. */
    text() {
        const value = this.input.value;
        // A textarea turns every line ending into \n; an untouched text goes back as it came.
        if (value === this.original.replace(/\r\n?/g, "\n")) return this.original;
        if (this.original.includes("\r\n") && !/(^|[^\r])\n/.test(this.original)) return value.replace(/\n/g, "\r\n");
        return value;
    }

    triggerMissing(text) {
        if (!this.pattern) return false;
        this.pattern.lastIndex = 0;
        return !this.pattern.test(text);
    }

    approve() {
        if (!this.entry || this.busy) return;
        const text = this.text();
        if (utf8Length(text) > MAX_TEXT_BYTES) {
            this.setError(t("text.tooLong", "the text is over {bytes} bytes; shorten it to approve", { bytes: MAX_TEXT_BYTES }));
            return;
        }
        if (this.triggerMissing(text) && !this.confirming) {
            this.confirming = true;
            this.#setButtons(); // and the warning in the status line
            return; // the warning shows; a second Approve (or Ctrl+Enter) goes ahead without the trigger
        }
        this.hooks.onApprove(text);
    }

    setBusy(busy) {
        this.busy = busy;
        for (const button of [this.approveButton, this.rejectButton, this.cancelButton]) button.disabled = busy;
    }

    setError(message) {
        this.status.textContent = message;
    }

    #edited() {
        const value = this.input.value;
        const { words, characters } = countText(value);
        this.counts.textContent = (words === 1 ? t("text.word", "{n} word", { n: words }) : t("text.words", "{n} words", { n: words }))
            + " · " + (characters === 1 ? t("text.character", "{n} character", { n: characters })
                : t("text.characters", "{n} characters", { n: characters }));
        if (this.confirming) {
            this.confirming = false;
            this.#setButtons();
            this.setError("");
        }
        this.#showTrigger(value);
        this.#paintBackdrop(value);
    }

    #showTrigger(value) {
        const word = (this.entry?.trigger ?? "").trim();
        this.trigger.hidden = !word;
        if (!word) return;
        const missing = this.triggerMissing(value);
        this.trigger.dataset.missing = String(missing);
        this.trigger.textContent = missing ? t("text.triggerMissing", "⚠ trigger “{trigger}” is missing", { trigger: word })
            : t("text.triggerPresent", "✓ trigger “{trigger}”", { trigger: word });
    }

    #setButtons() {
        const word = (this.entry?.trigger ?? "").trim();
        this.approveButton.textContent = this.confirming
            ? t("text.approveWithout", "Approve without “{trigger}”", { trigger: word }) : t("text.approve", "Approve");
        this.approveButton.dataset.confirm = String(this.confirming);
        if (this.confirming) {
            this.status.textContent = t("text.triggerConfirm",
                "The trigger “{trigger}” is not in the text. Approve again to pass it on anyway.", { trigger: word });
        }
    }

    /** The backdrop repeats the text in the box's own layout with the trigger marked. */
    #paintBackdrop(value) {
        const parts = [];
        let at = 0;
        if (this.pattern) {
            this.pattern.lastIndex = 0;
            for (const match of value.matchAll(this.pattern)) {
                if (!match[0]) break;
                parts.push(document.createTextNode(value.slice(at, match.index)));
                parts.push(el("mark", { text: match[0] }));
                at = match.index + match[0].length;
            }
        }
        // A trailing line ending needs a character after it to take up its line, as in the box.
        parts.push(document.createTextNode(value.slice(at) + "\u200b"));
        this.backdrop.replaceChildren(...parts);
        this.#syncScroll();
    }

    #syncScroll() {
        this.backdrop.scrollTop = this.input.scrollTop;
        this.backdrop.scrollLeft = this.input.scrollLeft;
    }
}

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
        await tracker.listen();
    },

    nodeCreated(node) {
        if (isTextGate(node)) attachPanel(node);
    },

    afterConfigureGraph() {
        syncAll();
    },
});
