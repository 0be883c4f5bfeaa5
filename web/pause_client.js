// The browser side of the pause protocol, for one gate kind: which nodes wait, and answering them.
//
// The server announces a waiting gate with `datasete_gate.preview` and its end with
// `datasete_gate.resolved`; GET /datasete_gate/pending restores the waiting gates after a reload or a
// reconnect. A tracker keeps the entries of its own kind only, by node id, and never brings back a
// token it saw resolved. Only the frontend's public `api` object is used.

import { t } from "./i18n.js";

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

export class PauseTracker {
    /**
     * @param {object} api the frontend's api object
     * @param {string} kind the gate kind this tracker keeps ("text", ...)
     * @param {(nodeId: string, note?: string) => void} onChange called when a node's entry changes
     */
    constructor(api, kind, onChange) {
        this.api = api;
        this.kind = kind;
        this.onChange = onChange;
        this.pauses = new Map(); // node_id -> entry
        this.seen = new Map(); // node_id -> counter value when the entry was last set
        this.counter = 0;
        this.resolved = new Set();
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

    entryFor(nodeId) {
        return this.pauses.get(String(nodeId)) ?? null;
    }

    add(entry) {
        if (!entry || typeof entry.token !== "string" || kindOf(entry) !== this.kind) return;
        if (this.resolved.has(entry.token)) return;
        const key = String(entry.node_id);
        this.pauses.set(key, entry);
        this.seen.set(key, ++this.counter);
        this.onChange(key);
    }

    drop(token, note = "") {
        this.#remember(token);
        for (const [key, entry] of this.pauses) {
            if (entry.token !== token) continue;
            this.pauses.delete(key);
            this.seen.delete(key);
            this.onChange(key, note);
        }
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
            if (kindOf(entry) === this.kind && !this.resolved.has(entry.token)) fresh.set(String(entry.node_id), entry);
        }
        for (const [key, entry] of this.pauses) {
            if ((this.seen.get(key) ?? 0) > startedAt) fresh.set(key, entry);
        }
        const keys = new Set([...this.pauses.keys(), ...fresh.keys()]);
        this.pauses = fresh;
        this.seen = new Map([...fresh.keys()].map((key) => [key, startedAt]));
        for (const key of keys) this.onChange(key);
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
