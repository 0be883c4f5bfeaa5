// The Image Gate's in-node panel: a get_id slot picker, and while the gate waits the
// preview (every frame), the mask painting tools, one button per route and Cancel.
// It only renders and reports; image_gate.js talks to the server.

import { t } from "./i18n_core.js";
import { MaskPainter } from "./mask_painter.js";
import { PausePanel } from "./pause_panel.js";

// Heights (CSS px) of the panel's fixed rows. The panel has one size whether the gate is idle or
// waiting: the preview scales to the node, never the node to the image, so a pause never makes
// the node grow over its neighbours.
const ROW = { slotBar: 26, head: 22, tools: 28, routes: 34, gap: 6, pad: 8 };
const MIN_STAGE = 120;
/** The stage height a new node is given room for. */
export const DEFAULT_STAGE = 240;
export const IDLE_HINT = "Pauses here when the workflow runs: the image shows here, you paint a mask "
    + "and pick a route.";

export function el(tag, props = {}, children = []) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
        if (key === "class") node.className = value;
        else if (key === "text") node.textContent = value;
        else if (key === "dataset") Object.assign(node.dataset, value);
        else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
        else if (value !== undefined && value !== null) node.setAttribute(key, value);
    }
    for (const child of [].concat(children)) {
        if (child !== null && child !== undefined) node.append(child);
    }
    return node;
}

/**
 * A picker of ids the server lists (bus slots, pools) for a free-text widget: a labelled <select> that
 * asks for a fresh list each time it is opened. The widget itself stays free text.
 */
export class IdPicker {
    /**
     * @param {object} options
     * @param {string} options.label the text before the list
     * @param {string} options.title the tooltip
     * @param {string} options.ariaLabel
     * @param {string} options.prompt the first option when there are ids ("pick a slot…")
     * @param {string} options.empty the first option when there are none ("no slots published yet")
     * @param {(id: string) => void} options.onPick
     * @param {() => void} options.onOpen
     * @param {string} [options.barClass] @param {string} [options.selectClass]
     */
    constructor(options) {
        this.options = options;
        this.ids = [];
        this.labels = new Map();
        this.select = el("select", {
            class: options.selectClass ?? "dsg-slot-pick", title: options.title, "aria-label": options.ariaLabel,
            onchange: () => {
                const id = this.select.value;
                if (id) options.onPick(id);
                this.#syncSelection(id);
            },
        });
        // Opening the list (mouse or keyboard) refreshes it from the server.
        for (const type of ["pointerdown", "focus"]) this.select.addEventListener(type, () => options.onOpen());
        this.element = el("label", { class: options.barClass ?? "dsg-slotbar" }, [
            el("span", { class: "dsg-slotbar-label", text: options.label }), this.select]);
        this.setIds([], "");
    }

    /** Show `ids` (with an optional label per id); `current` is the widget's value. */
    setIds(ids, current, labels = new Map()) {
        const same = ids.length === this.ids.length && ids.every((id, i) => id === this.ids[i])
            && ids.every((id) => (labels.get(id) ?? id) === (this.labels.get(id) ?? id));
        if (!same || !this.select.options.length) {
            this.ids = [...ids];
            this.labels = new Map(labels);
            const options = [el("option", { value: "", text: ids.length ? this.options.prompt : this.options.empty })];
            for (const id of ids) options.push(el("option", { value: id, text: labels.get(id) ?? id }));
            this.select.replaceChildren(...options);
        }
        this.#syncSelection(current);
    }

    #syncSelection(current) {
        this.select.value = this.ids.includes(current) ? current : "";
    }
}

const LOW_ZOOM_MARKER = "waiting: zoom in to answer";

/** Zoomed out, the frontend hides DOM widgets and paints a plain block where they were: a waiting gate
 * paints this marker over that block from its widget's draw(), so it never looks idle. */
export function drawWaitingMarker(node, ctx, widgetY = 0) {
    const [width, height] = node.size;
    const room = Math.max(40, height - widgetY);
    const band = Math.min(160, Math.max(60, room * 0.5));
    const top = widgetY + (room - band) / 2;
    ctx.save();
    ctx.fillStyle = "rgba(255, 64, 129, 0.92)";
    ctx.beginPath();
    ctx.roundRect?.(8, top, width - 16, band, 12) ?? ctx.rect(8, top, width - 16, band);
    ctx.fill();
    ctx.fillStyle = "#fff";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.font = `bold ${Math.round(Math.min(40, band * 0.38))}px sans-serif`;
    ctx.fillText(t("gate.lowZoomMarker", LOW_ZOOM_MARKER), width / 2, top + band / 2, width - 32);
    ctx.restore();
}

export function previewURL(image, apiURL) {
    const query = new URLSearchParams({
        filename: image.filename, subfolder: image.subfolder ?? "", type: image.type ?? "temp",
    });
    return apiURL(`/view?${query}`);
}

export class GatePanel extends PausePanel {
    /**
     * @param {object} hooks
     * @param {(route: number, mask: string|null) => void} hooks.onChoose
     * @param {() => void} hooks.onCancel
     * @param {(id: string) => void} hooks.onPickSlot
     * @param {() => void} hooks.onOpenPicker
     * @param {(route: number) => string} hooks.routeLabel
     * @param {(path: string) => string} hooks.apiURL
     * @param {object} hooks.api where the countdown's touches go (the frontend's api, or the review page's)
     */
    constructor(hooks) {
        super(hooks);
        this.frame = 0;
        this.element = el("div", { class: "dsg-gate", dataset: { state: "idle" } });
        this.#buildSlotBar();
        this.hint = el("div", { class: "dsg-hint", text: t("panel.idleHint", IDLE_HINT) });
        this.last = el("div", { class: "dsg-last" });
        this.idle = el("div", { class: "dsg-idle" }, [this.hint, this.last]);
        this.#buildPause();
        this.element.append(this.slotBar, this.idle, this.pause);
        this.fitObserver = new ResizeObserver(() => this.#fitStage());
        this.fitObserver.observe(this.viewport);
    }

    /** The same in both states, so showing or ending a pause never resizes the node. */
    minHeight() {
        return this.#fixedHeight() + MIN_STAGE;
    }

    /** The height a new node gets for this panel. */
    defaultHeight() {
        return this.#fixedHeight() + DEFAULT_STAGE;
    }

    #fixedHeight() {
        return 2 * ROW.pad + ROW.slotBar + ROW.head + ROW.tools + ROW.routes + 4 * ROW.gap;
    }

    // --- the get_id picker --------------------------------------------------------------

    #buildSlotBar() {
        this.slotPicker = new IdPicker({
            label: t("panel.slotBar", "get_id slot"),
            title: t("panel.slotPickerTitle", "Pick a disk bus slot for get_id (the list is refreshed each time it is opened). get_id itself stays free text: type any id above."),
            ariaLabel: t("panel.slotPickerLabel", "pick a bus slot for get_id"),
            prompt: t("panel.pickSlot", "pick a slot…"),
            empty: t("panel.noSlots", "no slots published yet"),
            onPick: (id) => this.hooks.onPickSlot(id),
            onOpen: () => this.hooks.onOpenPicker(),
        });
        this.slotSelect = this.slotPicker.select;
        this.slotBar = this.slotPicker.element;
    }

    /** Show `ids` in the picker; `current` is the get_id widget's value. */
    setSlots(ids, current) {
        this.slotPicker.setIds(ids, current);
    }

    // --- the pause ----------------------------------------------------------------------

    #buildPause() {
        this.title = el("span", { class: "dsg-title", text: t("panel.chooseRoute", "Choose a route") });
        this.meta = el("span", { class: "dsg-meta" });
        this.source = el("span", { class: "dsg-source" });
        const head = el("div", { class: "dsg-head" }, [
            el("span", { class: "dsg-dot" }), this.title, this.source, this.meta, this.countdown.element]);

        this.image = el("img", { class: "dsg-img", alt: "gate preview", draggable: "false" });
        this.maskCanvas = el("canvas", { class: "dsg-mask" });
        this.cursor = el("div", { class: "dsg-cursor" });
        this.stage = el("div", { class: "dsg-stage" }, [this.image, this.maskCanvas, this.cursor]);
        this.viewport = el("div", { class: "dsg-viewport" }, [this.stage]);
        this.painter = new MaskPainter(this.maskCanvas, this.cursor);

        this.frames = el("div", { class: "dsg-frames", role: "tablist", "aria-label": "frames of the batch" });

        this.brushButton = el("button", {
            class: "dsg-tool", type: "button", title: "Brush: paint the mask",
            "aria-pressed": "true", text: t("panel.brush", "Brush"), onclick: () => this.#setTool("brush"),
        });
        this.eraserButton = el("button", {
            class: "dsg-tool", type: "button", title: "Eraser: remove painted mask",
            "aria-pressed": "false", text: t("panel.eraser", "Eraser"), onclick: () => this.#setTool("eraser"),
        });
        this.sizeInput = el("input", {
            class: "dsg-size", type: "range", min: "1", max: "64", value: "24",
            title: "Brush size, in image pixels", "aria-label": "brush size",
            oninput: () => this.#setSize(Number(this.sizeInput.value)),
        });
        this.sizeValue = el("span", { class: "dsg-value" });
        this.opacityInput = el("input", {
            class: "dsg-opacity", type: "range", min: "10", max: "100", value: "55",
            title: "Mask opacity on screen (the mask sent is unaffected)", "aria-label": "mask opacity",
            oninput: () => this.#setOpacity(Number(this.opacityInput.value)),
        });
        const clearButton = el("button", {
            class: "dsg-tool dsg-clear", type: "button", title: "Clear the painted mask", text: t("panel.clear", "Clear"),
            onclick: () => this.painter.clear(),
        });
        const tools = el("div", { class: "dsg-tools" }, [
            el("span", { class: "dsg-segment" }, [this.brushButton, this.eraserButton]),
            el("label", { class: "dsg-range", title: "Brush size, in image pixels" }, [
                el("span", { text: t("panel.size", "Size") }), this.sizeInput, this.sizeValue]),
            el("label", { class: "dsg-range", title: "Mask opacity on screen" }, [
                el("span", { text: t("panel.opacity", "Opacity") }), this.opacityInput]),
            clearButton,
        ]);

        this.status = el("div", { class: "dsg-status", role: "status" });
        this.routeButtons = el("div", { class: "dsg-route-buttons" });
        this.cancelButton = el("button", {
            class: "dsg-cancel", type: "button", text: t("panel.cancel", "Cancel"),
            title: "Stop this run here (Esc while the node is selected)",
            onclick: () => this.hooks.onCancel(),
        });
        const routes = el("div", { class: "dsg-routes" }, [this.routeButtons, this.cancelButton]);

        this.pause = el("div", { class: "dsg-pause" }, [head, this.viewport, this.frames, tools, this.status, routes]);
        this.countdown.watch(this.pause); // a stroke, a tool, a key: the person is still at it
        this.#setOpacity(55);
    }

    /** A new pause: its image, frames, tools and route buttons (the same pause shown again keeps its mask). */
    startPause(entry) {
        this.element.dataset.maskLoaded = "false";
        this.frame = 0;
        this.status.textContent = "";
        const frames = Math.max(1, entry.frames ?? entry.images.length);
        this.meta.textContent = `${entry.width}×${entry.height}` + (frames > 1 ? " · " + t("panel.frameCount", "{count} frames", { count: frames }) : "");
        this.source.textContent = entry.source === "bus" && entry.slot
            ? t("panel.fromSlot", "from slot {slot}", { slot: entry.slot }) : "";
        this.source.hidden = !this.source.textContent;
        this.source.title = entry.mask_source ? `image and mask loaded from ${entry.mask_source}` : "";

        this.painter.reset(entry.width, entry.height);
        if (entry.mask) this.#loadMask(entry);
        const longest = Math.max(entry.width, entry.height);
        this.sizeInput.max = String(Math.max(8, Math.round(longest / 4)));
        this.#setSize(Math.max(2, Math.round(longest / 24)));
        this.#setTool("brush");

        this.#buildFrames(entry);
        this.#showFrame(0);
        this.#buildRouteButtons(entry.routes);
        this.#fitStage();
    }

    /** Idle: say what will happen, and (when there was one) what was decided last. */
    endPause(note) {
        delete this.element.dataset.maskLoaded;
        this.hint.textContent = note || t("panel.idleHint", IDLE_HINT);
        this.image.removeAttribute("src");
        this.frames.replaceChildren();
        this.routeButtons.replaceChildren();
    }

    /** The last decision, shown under the idle hint ("" hides it). */
    setLastDecision(text) {
        this.last.textContent = text;
        this.last.hidden = !text;
    }

    /** The slot's mask, drawn into the painter so painting edits it (and Clear removes it). */
    async #loadMask(entry) {
        const token = entry.token;
        try {
            await this.painter.load(previewURL(entry.mask, this.hooks.apiURL));
            if (this.entry?.token !== token) return;
            this.element.dataset.maskLoaded = "true";
            this.source.textContent = t("panel.fromSlotMaskLoaded", "from slot {slot} · mask loaded", { slot: entry.slot });
        } catch (error) {
            if (this.entry?.token === token) {
                this.setError(t("panel.maskNotShown", "the slot's mask could not be shown: {error}",
                    { error: error.message ?? error }));
            }
        }
    }

    /** Route labels follow what is wired to each output, so refresh them when links change. */
    refreshRouteLabels() {
        for (const button of this.routeButtons.querySelectorAll("button[data-route]")) {
            const route = Number(button.dataset.route);
            const label = this.hooks.routeLabel(route);
            const span = button.querySelector(".dsg-route-label");
            span.textContent = label;
            span.hidden = !label;
            // The label may be cut with an ellipsis on the button: the tooltip has all of it.
            button.title = `Send the image down route_${route}` + (label ? ` → ${label}` : "")
                + (route <= 9 ? ` (key ${route})` : "");
        }
    }

    setBusy(busy) {
        super.setBusy(busy);
        for (const button of this.element.querySelectorAll(".dsg-routes button")) button.disabled = busy;
    }

    mask() {
        return this.painter.toDataURL();
    }

    #buildRouteButtons(count) {
        const buttons = [];
        for (let route = 1; route <= count; route++) {
            const button = el("button", {
                class: "dsg-route", type: "button", dataset: { route: String(route) },
                onclick: () => {
                    if (!this.busy) this.hooks.onChoose(route, this.mask());
                },
            }, [el("span", { class: "dsg-route-number", text: String(route) }),
                el("span", { class: "dsg-route-label" })]);
            buttons.push(button);
        }
        this.routeButtons.replaceChildren(...buttons);
        this.routeButtons.dataset.count = String(count);
        this.refreshRouteLabels();
    }

    #buildFrames(entry) {
        const images = entry.images ?? [];
        this.frames.hidden = images.length <= 1;
        this.frames.replaceChildren(...images.map((image, index) => el("button", {
            class: "dsg-frame", type: "button", role: "tab", title: `Frame ${index + 1} of ${images.length}`
                + " (the mask applies to every frame)",
            dataset: { frame: String(index) },
            onclick: () => this.#showFrame(index),
        }, [el("img", { src: previewURL(image, this.hooks.apiURL), alt: `frame ${index + 1}`, draggable: "false" }),
            el("span", { text: String(index + 1) })])));
    }

    #showFrame(index) {
        const images = this.entry?.images ?? [];
        if (!images.length) return;
        this.frame = Math.max(0, Math.min(index, images.length - 1));
        this.image.src = previewURL(images[this.frame], this.hooks.apiURL);
        this.image.dataset.frame = String(this.frame);
        for (const button of this.frames.children) {
            button.setAttribute("aria-selected", String(Number(button.dataset.frame) === this.frame));
        }
    }

    #setTool(tool) {
        this.painter.tool = tool;
        this.brushButton.setAttribute("aria-pressed", String(tool === "brush"));
        this.eraserButton.setAttribute("aria-pressed", String(tool === "eraser"));
    }

    #setSize(size) {
        this.painter.size = size;
        this.sizeInput.value = String(size);
        this.sizeValue.textContent = `${size}px`;
    }

    #setOpacity(percent) {
        this.maskCanvas.style.opacity = String(percent / 100);
    }

    /** Fit the image into the viewport, keeping its aspect ratio (the mask canvas follows). */
    #fitStage() {
        if (!this.entry) return;
        const width = this.viewport.clientWidth;
        const height = this.viewport.clientHeight;
        if (!width || !height) return;
        const scale = Math.min(width / this.entry.width, height / this.entry.height);
        this.stage.style.width = `${Math.max(1, Math.floor(this.entry.width * scale))}px`;
        this.stage.style.height = `${Math.max(1, Math.floor(this.entry.height * scale))}px`;
    }
}
