// The review page (GET /datasete_gate/review): every waiting gate of every kind, for a phone or a
// second screen, without ComfyUI's canvas.
//
// It is built from the same pieces as the nodes: the panels (gate_panel.js, grid_panel.js,
// text_panel.js), the pause client (pause_client.js) and the strings (i18n_core.js). In place of the
// frontend's api object it has a small one of its own over ComfyUI's websocket (/ws), which carries
// the pack's `datasete_gate.preview` / `datasete_gate.resolved` events to every connected page.
//
// ComfyUI's frontend loads every .js file of the pack's web folder as an extension, this one too:
// importing it does nothing; only the page's own shell calls start().

import { GatePanel, el } from "./gate_panel.js";
import { GridPanel } from "./grid_panel.js";
import { loadMessages, loadedLocales, setLocaleSource, t } from "./i18n_core.js";
import { isTyping, PauseTracker } from "./pause_client.js";
import { TextPanel } from "./text_panel.js";

const KINDS = ["image", "grid", "text"];
const EVENT_RESOLVED = "datasete_gate.resolved";
const ROUTE_CHOOSE = "/datasete_gate/choose";
const ROUTE_CANCEL = "/datasete_gate/cancel";
const ROUTE_PENDING = "/datasete_gate/pending";
const ROUTE_QUEUE = "/queue";
const STYLES = ["image_gate.css", "grid_gate.css", "text_gate.css", "review.css"];
const RECONNECT_MS = [500, 1000, 2000, 4000, 8000];
const I18N_TIMEOUT_MS = 5000;
const NAME_MEMORY = 256;
// Grid tiles: the panel's gap between them (grid_gate.css) and the largest a tile is made on a wide screen.
const TILE_GAP = 6;
const MAX_TILE = 220;
const LANGUAGE_TAG = /^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$/;

// --- the server: the few parts of the frontend's api object the pause client needs ---------------

export class ReviewApi extends EventTarget {
    /** @param {string} prefix the server's root path ("" or a reverse proxy's prefix) */
    constructor(prefix) {
        super();
        this.prefix = prefix;
        this.clientId = `dsg-review-${Math.random().toString(36).slice(2, 10)}`;
        this.socket = null;
        this.attempt = 0;
        this.online = false;
        // Server clock minus this device's clock, in seconds (from the Date header): a phone whose
        // clock is off still counts a gate's timeout down right.
        this.skew = 0;
    }

    apiURL(path) {
        return `${this.prefix}/api${path}`;
    }

    async fetchApi(path, options = {}) {
        const response = await fetch(this.apiURL(path), { cache: "no-store", ...options });
        const date = Date.parse(response.headers.get("Date") ?? "");
        if (path === ROUTE_PENDING && Number.isFinite(date)) this.skew = (date - Date.now()) / 1000;
        return response;
    }

    /** Seconds since the epoch, by the server's clock. */
    now() {
        return Date.now() / 1000 + this.skew;
    }

    connect() {
        const url = new URL(`${this.prefix}/ws?clientId=${encodeURIComponent(this.clientId)}`, location.href);
        url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
        const socket = new WebSocket(url);
        this.socket = socket;
        socket.addEventListener("open", () => {
            this.attempt = 0;
            this.#setOnline(true);
            // Whatever happened while the socket was down (or before it first opened) is in /pending.
            this.dispatchEvent(new CustomEvent("reconnected"));
        });
        socket.addEventListener("message", (event) => {
            if (typeof event.data !== "string") return; // binary previews of other nodes
            let message;
            try {
                message = JSON.parse(event.data);
            } catch {
                return;
            }
            if (message && typeof message.type === "string") {
                this.dispatchEvent(new CustomEvent(message.type, { detail: message.data }));
            }
        });
        socket.addEventListener("close", () => {
            if (this.socket !== socket) return;
            this.#setOnline(false);
            const delay = RECONNECT_MS[Math.min(this.attempt, RECONNECT_MS.length - 1)];
            this.attempt++;
            setTimeout(() => this.connect(), delay);
        });
    }

    #setOnline(online) {
        this.online = online;
        this.dispatchEvent(new CustomEvent("dsr-connection", { detail: { online } }));
    }
}

// --- the language: ?lang=, else the browser's -------------------------------------------------

function chooseLanguage(query) {
    const have = new Set(loadedLocales());
    const wanted = [query, ...(navigator.languages ?? []), navigator.language]
        .filter((tag) => typeof tag === "string" && LANGUAGE_TAG.test(tag));
    for (const tag of wanted) {
        if (have.has(tag)) return tag;
        const base = tag.split("-")[0].toLowerCase();
        if (have.has(base)) return base;
    }
    return "en";
}

// --- a waiting gate's card ----------------------------------------------------------------------

function kindName(kind) {
    if (kind === "grid") return t("review.kindGrid", "Grid Pool Gate");
    if (kind === "text") return t("review.kindText", "Text Gate");
    return t("review.kindImage", "Image Gate");
}

/** Titles and route targets from the queued prompt (API format: `_meta.title`, links as [id, output]). */
class PromptInfo {
    constructor(prompt) {
        this.prompt = prompt && typeof prompt === "object" ? prompt : {};
    }

    title(nodeId) {
        const node = this.prompt[String(nodeId)];
        return node?._meta?.title || "";
    }

    /** What output `output` of `nodeId` is wired to: the titles of the nodes that take it. */
    targets(nodeId, output) {
        const titles = [];
        for (const node of Object.values(this.prompt)) {
            for (const value of Object.values(node?.inputs ?? {})) {
                if (Array.isArray(value) && String(value[0]) === String(nodeId) && Number(value[1]) === output) {
                    const title = node._meta?.title || node.class_type || "";
                    if (title && !titles.includes(title)) titles.push(title);
                }
            }
        }
        return titles.join(", ");
    }
}

class Card {
    constructor(page, entry) {
        this.page = page;
        this.entry = entry;
        this.kind = entry.kind ?? "image";
        this.panel = this.#panel();
        this.kindLabel = el("span", { class: "dsr-kind", text: kindName(this.kind) });
        this.title = el("span", { class: "dsr-title" });
        this.nodeLabel = el("span", { class: "dsr-node" });
        this.element = el("article", {
            class: "dsr-card", dataset: { token: entry.token, kind: this.kind, nodeId: String(entry.node_id) },
        }, [el("header", { class: "dsr-card-head" }, [this.kindLabel, this.title, this.nodeLabel]),
            this.panel.element]);
        // Any interaction with the card (a stroke, a tap, a key) says the person is still there.
        for (const type of ["pointerdown", "keydown", "input"]) {
            this.element.addEventListener(type, () => {
                page.active = this;
                this.touch();
            }, { capture: true });
        }
        this.show(entry);
        if (this.kind === "grid") {
            this.resize = new ResizeObserver(() => this.sizeTiles());
            this.resize.observe(this.element);
        }
    }

    #panel() {
        const apiURL = (path) => this.page.api.apiURL(path);
        const cancel = () => this.answer(ROUTE_CANCEL, {});
        if (this.kind === "grid") {
            return new GridPanel({
                api: this.page.api,
                onSend: (keep) => this.answer(ROUTE_CHOOSE, { keep }),
                onCancel: cancel,
                onPickPool: () => {},
                onOpenPicker: () => {},
                onInteract: () => this.touch(),
                apiURL,
            });
        }
        if (this.kind === "text") {
            return new TextPanel({
                api: this.page.api,
                onApprove: (text) => this.answer(ROUTE_CHOOSE, { approve: true, text }),
                onReject: () => this.answer(ROUTE_CHOOSE, { approve: false }),
                onCancel: cancel,
                apiURL,
            });
        }
        return new GatePanel({
            api: this.page.api,
            onChoose: (route, mask) => this.answer(ROUTE_CHOOSE, mask ? { route, mask } : { route }),
            onCancel: cancel,
            onPickSlot: () => {},
            onOpenPicker: () => {},
            // route_N is output N of the gate (output 0 is the mask).
            routeLabel: (route) => this.page.promptInfo(this.entry.prompt_id)?.targets(this.entry.node_id, route) ?? "",
            apiURL,
        });
    }

    show(entry) {
        this.entry = entry;
        this.panel.showPause(entry);
        if (this.kind === "image" && entry.width && entry.height) {
            // The preview box takes the image's shape (up to a height the CSS caps), so a phone shows it big.
            this.panel.viewport.style.aspectRatio = `${entry.width} / ${entry.height}`;
        }
        if (this.kind === "grid") this.sizeTiles();
        this.refreshNames();
    }

    /** The grid's box as tall as its tiles need: as many columns as tiles of at most MAX_TILE take, and
     * when their rows do not fit in most of the screen's height, that height (the panel then picks the
     * largest tiles that fit in it). */
    sizeTiles() {
        const tiles = this.panel.tiles;
        const width = tiles.clientWidth - 4; // its padding
        const count = this.entry.items?.length ?? 0;
        if (width <= 0 || !count) return;
        const room = Math.max(240, window.innerHeight * 0.7);
        const columns = Math.min(count, Math.max(1, Math.ceil((width + TILE_GAP) / (MAX_TILE + TILE_GAP))));
        const size = (width - (columns - 1) * TILE_GAP) / columns;
        const rows = Math.ceil(count / columns);
        const needed = rows * size + (rows - 1) * TILE_GAP + 4;
        tiles.style.height = `${Math.ceil(Math.min(needed, room))}px`;
    }

    refreshNames() {
        const info = this.page.promptInfo(this.entry.prompt_id);
        const title = info?.title(this.entry.node_id) ?? "";
        this.title.textContent = title || kindName(this.kind);
        this.title.title = title;
        this.nodeLabel.textContent = `#${this.entry.node_id}`;
        if (this.kind === "image") this.panel.refreshRouteLabels();
    }

    /** The person is still here: restart the gate's timeout (the panel's countdown throttles it). */
    touch() {
        this.panel.countdown.touch();
    }

    async answer(path, body) {
        const panel = this.panel;
        const entry = this.entry;
        if (!entry || panel.busy) return;
        panel.setBusy(true);
        panel.setError("");
        const result = await this.page.tracker(this.kind).answer(entry, path, body);
        if (result.error) panel.setError(result.error);
        if (this.element.isConnected && this.entry.token === entry.token) panel.setBusy(false);
    }

    /** Keys on a desktop second screen, as on the node: the card the person last touched takes them. */
    handleKey(event) {
        if (this.kind === "grid") return this.panel.handleKey(event);
        if (event.ctrlKey || event.metaKey || event.altKey) {
            if (this.kind === "text" && event.key === "Enter" && !event.altKey) {
                this.panel.approve();
                return true;
            }
            return false;
        }
        if (event.key === "Escape") {
            this.answer(ROUTE_CANCEL, {});
            return true;
        }
        if (this.kind === "image" && event.key.length === 1 && event.key >= "1" && event.key <= "9") {
            const route = Number(event.key);
            if (route > this.entry.routes) return false;
            const mask = this.panel.mask();
            this.answer(ROUTE_CHOOSE, mask ? { route, mask } : { route });
            return true;
        }
        return false;
    }

    remove() {
        this.panel.closeViewer?.();
        this.panel.fitObserver?.disconnect();
        this.panel.layoutObserver?.disconnect();
        this.resize?.disconnect();
        this.element.remove();
    }
}

// --- the page ------------------------------------------------------------------------------------

export class ReviewPage {
    constructor(api) {
        this.api = api;
        this.cards = new Map(); // token -> Card
        this.names = new Map(); // token -> {name, kind} of the cards shown, for the line on how each ended
        this.prompts = new Map(); // prompt_id -> PromptInfo
        this.promptRequest = null;
        this.active = null;
        this.renderQueued = false;
        this.trackers = new Map(KINDS.map((kind) => [kind, new PauseTracker(api, kind, () => this.renderSoon())]));
        this.#build();
    }

    tracker(kind) {
        return this.trackers.get(kind) ?? this.trackers.get("image");
    }

    promptInfo(promptId) {
        return promptId ? this.prompts.get(promptId) ?? null : null;
    }

    #build() {
        this.connection = el("span", { class: "dsr-connection", role: "status", dataset: { online: "false" },
                                        text: t("review.connecting", "connecting…") });
        this.count = el("span", { class: "dsr-count" });
        this.log = el("div", { class: "dsr-log", role: "status", "aria-live": "polite" });
        this.empty = el("div", { class: "dsr-empty" }, [
            el("p", { class: "dsr-empty-title", text: t("review.emptyTitle", "Nothing is waiting") }),
            el("p", { text: t("review.emptyHint", "A gate shows up here the moment a workflow pauses at one: Image Gate, Grid Pool Gate or Text Gate, from any workflow or tab.") }),
        ]);
        this.list = el("main", { class: "dsr-list" });
        const header = el("header", { class: "dsr-top" }, [
            el("h1", { text: t("review.title", "Waiting gates") }), this.count, this.connection]);
        this.root = el("div", { class: "dsr-root" }, [header, this.log, this.empty, this.list]);
        this.api.addEventListener("dsr-connection", ({ detail }) => {
            this.connection.dataset.online = String(detail.online);
            this.connection.textContent = detail.online ? t("review.live", "live")
                : t("review.reconnecting", "offline · reconnecting…");
        });
        this.api.addEventListener(EVENT_RESOLVED, ({ detail }) => this.#resolved(detail));
        window.addEventListener("keydown", (event) => this.#onKey(event));
    }

    mount(parent) {
        parent.append(this.root);
        this.render();
    }

    /** Listen to the server and fetch what already waits. */
    listen() {
        this.api.connect();
        return Promise.all([...this.trackers.values()].map((tracker) => tracker.listen()));
    }

    renderSoon() {
        if (this.renderQueued) return;
        this.renderQueued = true;
        queueMicrotask(() => {
            this.renderQueued = false;
            this.render();
        });
    }

    render() {
        const entries = [];
        for (const tracker of this.trackers.values()) entries.push(...tracker.pauses.values());
        const wanted = new Map(entries.map((entry) => [entry.token, entry]));
        for (const [token, card] of this.cards) {
            if (wanted.has(token)) continue;
            card.remove();
            this.cards.delete(token);
            if (this.active === card) this.active = null;
        }
        let unknownPrompt = false;
        for (const [token, entry] of wanted) {
            const card = this.cards.get(token);
            if (card) {
                if (card.entry !== entry) card.show(entry);
                continue;
            }
            const created = new Card(this, entry);
            this.cards.set(token, created);
            this.#remember(token, created);
            this.list.append(created.element);
            if (entry.prompt_id && !this.prompts.has(entry.prompt_id)) unknownPrompt = true;
        }
        if (unknownPrompt) this.#fetchPrompts();
        const count = this.cards.size;
        this.empty.hidden = count > 0;
        this.count.textContent = count ? t("review.count", "{count} waiting", { count }) : "";
        document.title = (count ? `(${count}) ` : "") + t("review.title", "Waiting gates");
    }

    #remember(token, card) {
        this.names.set(token, { name: `${card.title.textContent} #${card.entry.node_id}`, kind: card.kind });
        if (this.names.size > NAME_MEMORY) this.names.delete(this.names.keys().next().value);
    }

    /** Node titles and route labels come from the queued prompt: ComfyUI lists the running one at /queue. */
    async #fetchPrompts() {
        if (this.promptRequest) return;
        this.promptRequest = (async () => {
            try {
                const response = await this.api.fetchApi(ROUTE_QUEUE);
                if (!response.ok) return;
                const queue = await response.json();
                for (const item of [...(queue.queue_running ?? []), ...(queue.queue_pending ?? [])]) {
                    if (Array.isArray(item) && typeof item[1] === "string") this.prompts.set(item[1], new PromptInfo(item[2]));
                }
            } catch (error) {
                console.warn("Datasete gates: could not read the queue for node names", error);
            } finally {
                this.promptRequest = null;
            }
            for (const card of this.cards.values()) {
                card.refreshNames();
                this.#remember(card.entry.token, card);
            }
        })();
    }

    /** One line on what became of a gate that left the list: answered here, elsewhere, or timed out. */
    #resolved(detail) {
        if (!detail?.token || !this.names.has(detail.token)) return;
        const { name, kind } = this.names.get(detail.token);
        let what;
        if (detail.timed_out) what = t("review.timedOut", "timed out");
        else if (kind === "grid") {
            what = Array.isArray(detail.keep) ? t("review.kept", "kept {count}", { count: detail.keep.length })
                : t("review.cancelled", "cancelled");
        } else if (kind === "text") {
            what = detail.approved === true ? t("review.approved", "approved")
                : detail.approved === false ? t("review.rejected", "rejected") : t("review.cancelled", "cancelled");
        } else {
            what = detail.route === null || detail.route === undefined ? t("review.cancelled", "cancelled")
                : t("review.routeChosen", "route {route}", { route: detail.route });
        }
        this.log.textContent = t("review.logLine", "{name}: {what}", { name, what });
        this.log.dataset.token = detail.token;
    }

    #onKey(event) {
        if (event.repeat || isTyping(event.composedPath()[0])) return;
        const viewing = [...this.cards.values()].find((card) => card.panel.viewerOpen);
        const card = viewing ?? (this.cards.size === 1 ? [...this.cards.values()][0] : this.active);
        if (card && this.cards.get(card.entry.token) === card && card.handleKey(event)) {
            event.preventDefault();
            card.touch();
        }
    }
}

function loadStyles(base) {
    for (const file of STYLES) {
        document.head.append(el("link", { rel: "stylesheet", href: `${base}/${file}` }));
    }
}

/** Build the page into document.body; `config` comes from the page's shell (gates/review_page.py). */
export async function start({ prefix, base }) {
    loadStyles(base);
    const api = new ReviewApi(prefix);
    await Promise.race([loadMessages(() => api.fetchApi("/i18n")),
        new Promise((resolve) => setTimeout(resolve, I18N_TIMEOUT_MS))]);
    const language = chooseLanguage(new URLSearchParams(location.search).get("lang"));
    setLocaleSource(() => language);
    document.documentElement.lang = language;
    const page = new ReviewPage(api);
    page.mount(document.body);
    await page.listen();
    return page;
}
