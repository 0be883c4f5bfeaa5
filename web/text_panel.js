// The Text Gate's panel: the image (if any) and the text in an editable box, with a word and
// character count and the trigger word highlighted; Approve (Ctrl+Enter), Reject and Cancel (Esc).
// It only renders and reports; text_gate.js (in a node) and review.js (on the review page) talk to
// the server. No frontend import, so a page without ComfyUI's frontend can use it.

import { el, previewURL } from "./gate_panel.js";
import { PausePanel } from "./pause_panel.js";
import { t } from "./i18n_core.js";

const MAX_TEXT_BYTES = 1024 * 1024;

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

export class TextPanel extends PausePanel {
    constructor(hooks) {
        super(hooks);
        this.confirming = false;
        this.original = "";
        this.element = el("div", { class: "dsg-gate dsg-text-gate", dataset: { state: "idle" } });
        this.idle = el("div", { class: "dsg-text-idle", text: idleHint() });
        this.#buildPause();
        this.element.append(this.idle, this.pause);
    }

    #buildPause() {
        this.file = el("span", { class: "dsg-text-file" });
        this.meta = el("span", { class: "dsg-meta" });
        const head = el("div", { class: "dsg-head" }, [
            el("span", { class: "dsg-dot" }), el("span", { class: "dsg-title", text: t("text.title", "Edit the text") }),
            this.file, this.meta, this.countdown.element]);

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
        this.countdown.watch(this.pause); // a keystroke in the text, a click: the person is still at it
    }

    /** A new text to edit (the same pause shown again keeps the person's edit). */
    startPause(entry) {
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

    endPause(note) {
        this.confirming = false;
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
        super.setBusy(busy);
        for (const button of [this.approveButton, this.rejectButton, this.cancelButton]) button.disabled = busy;
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
