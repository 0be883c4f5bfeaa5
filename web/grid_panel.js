// The Grid Pool Gate's in-node panel: a pool picker, and while the gate waits a grid of thumbnails to
// keep or not, a counter, All / None / Send / Cancel, and a full-size viewer. It only renders and
// reports; grid_gate.js talks to the server and routes the keys.
//
// Keys (grid_gate.js sends them here while the node is selected, or while the viewer is open):
//   grid:   arrows move · Enter toggles · Space opens full size · A all · N none · Ctrl+Enter sends · Esc cancels
//   viewer: ←/→ previous/next · Space or Enter toggles · Ctrl+Enter sends · Esc (or a click outside) closes

import { IdPicker, el, previewURL } from "./gate_panel.js";
import { t } from "./i18n_core.js";
import { PausePanel } from "./pause_panel.js";

const GAP = 6; // px between tiles; the CSS uses the same
export const IDLE_HINT = "Pauses here when the workflow runs: a page of the pool shows here as a grid. Click the ones to keep, then Send.";

/** "000012 · 512×384" */
function describe(item) {
    return `${item.name}${item.width ? ` · ${item.width}×${item.height}` : ""}`;
}

export class GridPanel extends PausePanel {
    /**
     * @param {object} hooks
     * @param {(keep: number[]) => void} hooks.onSend
     * @param {() => void} hooks.onCancel
     * @param {(id: string) => void} hooks.onPickPool
     * @param {() => void} hooks.onOpenPicker
     * @param {() => void} hooks.onInteract the person clicked into the panel (select the node)
     * @param {(path: string) => string} hooks.apiURL
     * @param {object} hooks.api where the countdown's touches go (the frontend's api, or the review page's)
     */
    constructor(hooks) {
        super(hooks);
        this.kept = new Set();
        this.focus = 0;
        this.viewerIndex = null;
        this.element = el("div", { class: "dsg-gate dsg-grid", dataset: { state: "idle" } });
        this.picker = new IdPicker({
            label: t("grid.poolBar", "pool"),
            title: t("grid.poolPickerTitle", "Pick a pool to review (the list is refreshed each time it is opened). The pool field stays free text: type any id above."),
            ariaLabel: t("grid.poolPickerLabel", "pick a pool to review"),
            prompt: t("grid.pickPool", "pick a pool…"),
            empty: t("grid.noPools", "no pools yet"),
            onPick: (id) => hooks.onPickPool(id),
            onOpen: () => hooks.onOpenPicker(),
        });
        this.hint = el("div", { class: "dsg-hint dsg-grid-hint", text: t("grid.idleHint", IDLE_HINT) });
        this.idle = el("div", { class: "dsg-idle" }, [this.hint]); // shown while idle (image_gate.css)
        this.#buildPause();
        this.element.append(this.picker.element, this.idle, this.pause);
        this.element.addEventListener("pointerdown", () => hooks.onInteract(), { capture: true });
        // Buttons do not take the focus when clicked: the keys must keep going to the grid, and Space on a
        // focused button would press it.
        this.element.addEventListener("mousedown", (event) => {
            if (event.target.closest?.("button")) event.preventDefault();
        });
        this.layoutObserver = new ResizeObserver(() => this.layout());
        this.layoutObserver.observe(this.tiles);
    }

    get viewerOpen() {
        return this.viewerIndex !== null;
    }

    // --- building ----------------------------------------------------------------------------

    #buildPause() {
        this.source = el("span", { class: "dsg-source" });
        this.count = el("span", { class: "dsg-grid-count", role: "status" });
        this.remaining = el("span", { class: "dsg-meta dsg-grid-remaining" });
        const head = el("div", { class: "dsg-head" }, [
            el("span", { class: "dsg-dot" }), el("span", { class: "dsg-title", text: t("grid.title", "Keep or reject") }),
            this.source, this.count, this.remaining, this.countdown.element]);
        this.tiles = el("div", {
            class: "dsg-grid-tiles", role: "listbox", "aria-multiselectable": "true",
            "aria-label": t("grid.tilesLabel", "items to keep"),
        });
        this.status = el("div", { class: "dsg-status", role: "status" });
        this.allButton = el("button", {
            class: "dsg-tool dsg-grid-all", type: "button", text: t("grid.all", "All"),
            title: t("grid.allTitle", "Keep every item (A)"),
            onclick: () => this.setAll(true),
        });
        this.noneButton = el("button", {
            class: "dsg-tool dsg-grid-none", type: "button", text: t("grid.none", "None"),
            title: t("grid.noneTitle", "Keep none (N)"),
            onclick: () => this.setAll(false),
        });
        this.sendButton = el("button", {
            class: "dsg-route dsg-grid-send", type: "button",
            title: t("grid.sendTitle", "Send: the kept items move to kept/ and go on down the workflow, every other shown item moves to rejected/ (Ctrl+Enter)"),
            onclick: () => this.send(),
        });
        this.cancelButton = el("button", {
            class: "dsg-cancel", type: "button", text: t("panel.cancel", "Cancel"),
            title: t("grid.cancelTitle", "Stop this run here; nothing is moved (Esc while the node is selected)"),
            onclick: () => this.hooks.onCancel(),
        });
        const actions = el("div", { class: "dsg-routes dsg-grid-actions" }, [
            this.allButton, this.noneButton, el("span", { class: "dsg-grid-spacer" }), this.sendButton,
            this.cancelButton]);
        this.pause = el("div", { class: "dsg-pause" }, [head, this.tiles, this.status, actions]);
        this.countdown.watch(this.pause); // a click, a key: the person is still at it
    }

    #buildTiles(entry) {
        const tiles = entry.items.map((item) => {
            const caption = item.caption ?? "";
            const tile = el("button", {
                class: "dsg-grid-tile", type: "button", role: "option", tabindex: "-1",
                dataset: { index: String(item.index) },
                title: `${describe(item)}` + (caption ? `\n${caption}` : "")
                    + `\n${t("grid.tileHint", "click: keep or not · double click: full size")}`,
                "aria-pressed": "false", "aria-selected": "false",
                onclick: () => {
                    this.focus = item.index;
                    this.toggle(item.index);
                },
                ondblclick: () => this.openViewer(item.index),
            }, [
                el("img", { src: previewURL(item.image, this.hooks.apiURL), alt: item.name, draggable: "false",
                            loading: "eager" }),
                el("span", { class: "dsg-grid-check", "aria-hidden": "true", text: "✓" }),
                el("span", { class: "dsg-grid-name", text: item.name }),
            ]);
            return tile;
        });
        this.tiles.replaceChildren(...tiles);
    }

    // --- state ---------------------------------------------------------------------------------

    /** A new page to review (the same pause shown again keeps its selection). */
    startPause(entry) {
        this.kept = new Set();
        this.focus = 0;
        this.status.textContent = "";
        this.closeViewer();
        this.source.textContent = entry.pool ? t("grid.fromPool", "pool {pool}", { pool: entry.pool })
            : t("grid.fromBatch", "batch");
        const more = entry.remaining ?? 0;
        this.remaining.textContent = more ? t("grid.remaining", "{count} more after this page", { count: more })
            : t("grid.lastPage", "last page");
        this.#buildTiles(entry);
        this.refresh();
        this.layout();
    }

    endPause(note) {
        this.kept = new Set();
        if (note) this.hint.textContent = note;
        this.tiles.replaceChildren();
        this.closeViewer();
    }

    /** A status line from the server ("pool 'x' has nothing pending"), shown while idle. */
    setNote(note) {
        this.hint.textContent = note || t("grid.idleHint", IDLE_HINT);
    }

    setBusy(busy) {
        super.setBusy(busy);
        for (const button of this.pause.querySelectorAll(".dsg-grid-actions button")) button.disabled = busy;
    }

    keep() {
        return [...this.kept].sort((a, b) => a - b);
    }

    toggle(index) {
        this.countdown.touch(); // a toggle by click or key: the person is still at it
        if (!this.entry || this.busy || index < 0 || index >= this.entry.items.length) return;
        if (this.kept.has(index)) this.kept.delete(index);
        else this.kept.add(index);
        this.refresh();
    }

    setAll(kept) {
        this.countdown.touch(); // a toggle by click or key: the person is still at it
        if (!this.entry || this.busy) return;
        this.kept = new Set(kept ? this.entry.items.map((item) => item.index) : []);
        this.refresh();
    }

    moveFocus(dx, dy) {
        if (!this.entry) return;
        const count = this.entry.items.length;
        const next = this.focus + dx + dy * (this.columns || 1);
        if (next >= 0 && next < count) this.focus = next;
        this.refresh();
        this.tiles.children[this.focus]?.scrollIntoView?.({ block: "nearest" });
    }

    send() {
        if (this.entry && !this.busy) this.hooks.onSend(this.keep());
    }

    /** Bring the tiles, the counter, the Send label and the viewer in line with the selection. */
    refresh() {
        if (!this.entry) return;
        const total = this.entry.items.length;
        for (const tile of this.tiles.children) {
            const index = Number(tile.dataset.index);
            const kept = this.kept.has(index);
            tile.setAttribute("aria-pressed", String(kept));
            tile.setAttribute("aria-selected", String(kept));
            tile.toggleAttribute("data-focused", index === this.focus);
        }
        this.count.textContent = t("grid.keptCount", "{kept} of {total} kept", { kept: this.kept.size, total });
        this.sendButton.textContent = this.kept.size ? t("grid.sendKeep", "Send · keep {count}", { count: this.kept.size })
            : t("grid.sendKeepNone", "Send · keep none");
        this.element.dataset.kept = String(this.kept.size);
        if (this.viewerOpen) this.#showInViewer(this.viewerIndex);
    }

    // --- layout: the largest square tiles that fit the node ----------------------------------

    layout() {
        if (!this.entry) return;
        const width = this.tiles.clientWidth;
        const height = this.tiles.clientHeight;
        const count = this.entry.items.length;
        if (!width || !height || !count) return;
        let best = { columns: 1, size: 0 };
        for (let columns = 1; columns <= count; columns++) {
            const rows = Math.ceil(count / columns);
            const size = Math.min((width - (columns - 1) * GAP) / columns, (height - (rows - 1) * GAP) / rows);
            if (size > best.size) best = { columns, size };
        }
        const size = Math.max(24, Math.floor(best.size));
        this.columns = best.columns;
        this.tiles.style.gridTemplateColumns = `repeat(${best.columns}, ${size}px)`;
        this.tiles.style.gridAutoRows = `${size}px`;
        this.tiles.dataset.columns = String(best.columns);
    }

    // --- the full-size viewer ------------------------------------------------------------------

    openViewer(index) {
        if (!this.entry) return;
        this.focus = index;
        if (!this.viewer) this.#buildViewer();
        this.viewerIndex = index;
        document.body.append(this.viewer);
        this.viewer.hidden = false;
        this.refresh();
    }

    closeViewer() {
        this.viewerIndex = null;
        if (this.viewer) {
            this.viewer.hidden = true;
            this.viewer.remove();
        }
    }

    stepViewer(delta) {
        if (!this.viewerOpen || !this.entry) return;
        const count = this.entry.items.length;
        this.viewerIndex = (this.viewerIndex + delta + count) % count;
        this.focus = this.viewerIndex;
        this.refresh();
    }

    #buildViewer() {
        this.viewerImage = el("img", { class: "dsg-grid-full", alt: t("grid.fullSize", "full size"), draggable: "false",
                                       ondblclick: () => this.closeViewer() });
        this.viewerName = el("span", { class: "dsg-grid-viewer-name" });
        this.viewerCaption = el("div", { class: "dsg-grid-viewer-caption" });
        this.viewerKeep = el("button", {
            class: "dsg-route dsg-grid-viewer-keep", type: "button",
            title: t("grid.viewerKeepTitle", "Keep or not (Space or Enter)"),
            onclick: () => this.toggle(this.viewerIndex),
        });
        const previous = el("button", { class: "dsg-tool", type: "button", text: "‹", title: t("grid.previous", "Previous (←)"),
                                        onclick: () => this.stepViewer(-1) });
        const next = el("button", { class: "dsg-tool", type: "button", text: "›", title: t("grid.next", "Next (→)"),
                                    onclick: () => this.stepViewer(1) });
        const close = el("button", { class: "dsg-tool", type: "button", text: t("grid.close", "Close"),
                                     title: t("grid.closeTitle", "Back to the grid (Esc)"),
                                     onclick: () => this.closeViewer() });
        const bar = el("div", { class: "dsg-grid-viewer-bar" }, [previous, this.viewerName, next, this.viewerKeep, close]);
        const figure = el("figure", { class: "dsg-grid-viewer-figure" }, [this.viewerImage, bar, this.viewerCaption]);
        this.viewer = el("div", { class: "dsg-gate dsg-grid-viewer", role: "dialog", "aria-label": t("grid.fullSize", "full size") },
                         [figure]);
        this.viewer.addEventListener("mousedown", (event) => {
            if (event.target.closest?.("button")) event.preventDefault();
        });
        // A click on the dark backdrop (not on the picture or its bar) closes the viewer.
        this.viewer.addEventListener("click", (event) => {
            if (event.target === this.viewer) this.closeViewer();
        });
    }

    #showInViewer(index) {
        const item = this.entry?.items[index];
        if (!item) return;
        const url = previewURL(item.full ?? item.image, this.hooks.apiURL);
        if (this.viewerImage.getAttribute("src") !== url) this.viewerImage.src = url;
        this.viewer.dataset.index = String(index);
        const kept = this.kept.has(index);
        this.viewer.dataset.kept = String(kept);
        this.viewerName.textContent = `${describe(item)} · `
            + t("grid.position", "{n} of {count}", { n: index + 1, count: this.entry.items.length });
        this.viewerCaption.textContent = item.caption ?? "";
        this.viewerCaption.hidden = !item.caption;
        this.viewerKeep.textContent = kept ? t("grid.viewerKept", "✓ Kept") : t("grid.viewerKeep", "Keep");
        this.viewerKeep.setAttribute("aria-pressed", String(kept));
    }

    // --- keys ------------------------------------------------------------------------------------

    /** Act on a key meant for this panel; true when it was one of ours. */
    handleKey(event) {
        if (!this.entry) return false;
        const send = event.key === "Enter" && (event.ctrlKey || event.metaKey);
        if (send) {
            if (!event.repeat) this.send();
            return true;
        }
        if (event.ctrlKey || event.metaKey || event.altKey) return false;
        const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
        if (this.viewerOpen) {
            if (event.key === "Escape") this.closeViewer();
            else if (event.key === "ArrowLeft" || event.key === "ArrowUp") this.stepViewer(-1);
            else if (event.key === "ArrowRight" || event.key === "ArrowDown") this.stepViewer(1);
            else if ((event.key === " " || event.key === "Enter") && !event.repeat) this.toggle(this.viewerIndex);
            else return false;
            return true;
        }
        if (event.key in arrows) this.moveFocus(...arrows[event.key]);
        else if (event.repeat) return ["a", "A", "n", "N", " ", "Enter", "Escape"].includes(event.key);
        else if (event.key === "Enter") this.toggle(this.focus);
        else if (event.key === " ") this.openViewer(this.focus);
        else if (event.key === "a" || event.key === "A") this.setAll(true);
        else if (event.key === "n" || event.key === "N") this.setAll(false);
        else if (event.key === "Escape") this.hooks.onCancel();
        else return false;
        return true;
    }
}
