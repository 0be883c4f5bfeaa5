// The browser side of the pause protocol, for one gate kind: which nodes wait, and answering them.
//
// The server announces a waiting gate with `datasete_gate.preview` and its end with
// `datasete_gate.resolved`; GET /datasete_gate/pending restores the waiting gates after a reload or a
// reconnect. A tracker keeps the entries of its own kind only, by node id, and never brings back a
// token it saw resolved. Only the frontend's public `api` object is used.

import { t } from "./i18n_core.js";

// The names of gates/constants.py the browser needs, for every gate kind.
export const EVENT_PREVIEW = "datasete_gate.preview";
export const EVENT_RESOLVED = "datasete_gate.resolved";
export const ROUTE_PENDING = "/datasete_gate/pending";
export const ROUTE_CHOOSE = "/datasete_gate/choose";
export const ROUTE_CANCEL = "/datasete_gate/cancel";
const RESOLVED_MEMORY = 512;

export async function postJSON(api, path, body) {
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

/** An entry's gate kind; one without a kind is an Image Gate's (the server's default). */
export function kindOf(entry) {
    return entry?.kind ?? "image";
}

// Every tracker of the page, and who wants to hear of any change (the waiting-gates panel, dock.js).
export const trackers = new Set();
const changeListeners = new Set();

/** `listener()` runs after any tracker's entries changed. */
export function onAnyChange(listener) {
    changeListeners.add(listener);
}

export class PauseTracker {
    /**
     * @param {object} api the frontend's api object
     * @param {string} kind the gate kind this tracker keeps ("text", ...)
     * @param {(nodeId: string, note?: string, entry?: object) => void} onChange called when an entry comes or
     *     goes, with its node id (the execution id: "5", or "12:5" inside a subgraph) and the entry
     */
    constructor(api, kind, onChange) {
        this.api = api;
        this.kind = kind;
        this.onChange = onChange;
        // token -> entry: one per pause, so pauses of two workflows at the same node id are both kept.
        this.pauses = new Map();
        this.seen = new Map(); // token -> counter value when the entry was last set
        this.counter = 0;
        this.resolved = new Set();
        this.gone = new Map(); // token -> entry, of the last pauses that ended (their node, for the decision)
        trackers.add(this);
    }

    /** Listen to the server's events; call once, from the extension's setup(). */
    listen() {
        this.api.addEventListener(EVENT_PREVIEW, ({ detail }) => this.add(detail));
        this.api.addEventListener(EVENT_RESOLVED, ({ detail }) => {
            if (detail?.token) this.drop(detail.token);
        });
        this.api.addEventListener("reconnected", () => this.fetch());
        return this.fetch();
    }

    /** Every waiting entry of this kind. */
    entries() {
        return [...this.pauses.values()];
    }

    /** The newest waiting entry that `test` accepts, or null. */
    find(test) {
        let found = null;
        for (const entry of this.pauses.values()) if (test(entry)) found = entry;
        return found;
    }

    /** The newest waiting entry of a node id, whichever workflow queued it. */
    entryFor(nodeId) {
        return this.find((entry) => String(entry.node_id) === String(nodeId));
    }

    /** A waiting entry, or one that ended lately, by its token. */
    byToken(token) {
        return this.pauses.get(token) ?? this.gone.get(token) ?? null;
    }

    add(entry) {
        if (!entry || typeof entry.token !== "string" || kindOf(entry) !== this.kind) return;
        if (this.resolved.has(entry.token)) return;
        this.pauses.delete(entry.token); // re-added last: the newest entry of a node is the one shown
        this.pauses.set(entry.token, entry);
        this.seen.set(entry.token, ++this.counter);
        this.#changed(entry);
    }

    drop(token, note = "") {
        this.#remember(token);
        const entry = this.pauses.get(token);
        if (!entry) return;
        this.pauses.delete(token);
        this.seen.delete(token);
        this.gone.set(token, entry);
        if (this.gone.size > RESOLVED_MEMORY) this.gone.delete(this.gone.keys().next().value);
        this.#changed(entry, note);
    }

    /** Replace what is known with the server's /pending, except what events said meanwhile. */
    async fetch() {
        const startedAt = this.counter;
        let answer;
        try {
            const response = await this.api.fetchApi(ROUTE_PENDING, { cache: "no-store" });
            if (!response.ok) return;
            answer = await response.json();
        } catch (error) {
            console.warn("Datasete gates: could not fetch the waiting gates", error);
            return;
        }
        const fresh = new Map();
        for (const entry of answer.pending ?? []) {
            if (kindOf(entry) === this.kind && typeof entry.token === "string" && !this.resolved.has(entry.token)) {
                fresh.set(entry.token, entry);
            }
        }
        // Events newer than the request know better than its answer.
        for (const [token, entry] of this.pauses) {
            if ((this.seen.get(token) ?? 0) > startedAt) fresh.set(token, entry);
        }
        const before = [...this.pauses.values()];
        this.pauses = fresh;
        this.seen = new Map([...fresh.keys()].map((token) => [token, startedAt]));
        for (const entry of before) if (!fresh.has(entry.token)) this.#changed(entry);
        for (const entry of fresh.values()) this.#changed(entry);
    }

    /**
     * POST `body` (with the entry's token) to `path`; drops the pause on success or when the server
     * says it is gone (404/409). Returns {ok, error}.
     */
    async answer(entry, path, body) {
        try {
            const { status, ok, data } = await postJSON(this.api, path, { token: entry.token, ...body });
            if (ok) {
                this.drop(entry.token);
                return { ok: true };
            }
            if (status === 404 || status === 409) {
                this.drop(entry.token, t("gate.alreadyAnswered", "that pause was already answered or has ended"));
                return { ok: false, gone: true };
            }
            return { ok: false, error: data.error ?? t("gate.serverAnswered", "the server answered {status}", { status }) };
        } catch (error) {
            return { ok: false, error: t("gate.unreachable", "could not reach the server: {error}", { error: error.message ?? error }) };
        }
    }

    #changed(entry, note = "") {
        this.onChange(String(entry.node_id), note, entry);
        for (const listener of changeListeners) listener();
    }

    #remember(token) {
        this.resolved.add(token);
        if (this.resolved.size > RESOLVED_MEMORY) this.resolved.delete(this.resolved.values().next().value);
    }
}

/** A key event's target is a text field (keys belong to it, not to the canvas or a gate). */
export function isTyping(target) {
    if (!(target instanceof HTMLElement)) return false;
    if (target.isContentEditable || target.tagName === "TEXTAREA" || target.tagName === "SELECT") return true;
    if (target.tagName !== "INPUT") return false;
    return !["button", "checkbox", "radio", "range", "color", "submit", "reset"].includes(target.type);
}

/**
 * Answer `entry` from a panel (anything with busy, setBusy and setError) through `tracker`: the panel is
 * busy meanwhile and shows the server's error. Returns the tracker's {ok, error, gone}.
 */
export async function answerFromPanel(tracker, panel, entry, path, body) {
    if (!entry || panel.busy) return { ok: false };
    panel.setBusy(true);
    panel.setError("");
    const result = await tracker.answer(entry, path, body);
    if (result.error) panel.setError(result.error);
    if (panel.entry && panel.entry.token === entry.token) panel.setBusy(false);
    return result;
}
