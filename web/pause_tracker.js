// Which gates of one kind wait, as the server says: the `datasete_gate.preview` and `.resolved` events,
// and GET /datasete_gate/pending after a reload or a reconnect. Kept apart from the nodes, because a
// preview can arrive before the graph is loaded, or for a node of another workflow.

const ROUTE_PENDING = "/datasete_gate/pending";
const RESOLVED_MEMORY = 512;

export class PauseTracker {
    /**
     * @param {object} options
     * @param {string} options.kind the gate kind this tracker follows ("grid")
     * @param {object} options.api the frontend's api object
     * @param {(nodeId: string, note: string) => void} options.onChange called when a node's pause changes
     */
    constructor({ kind, api, onChange }) {
        this.kind = kind;
        this.api = api;
        this.onChange = onChange;
        this.pauses = new Map(); // node_id (as the server sends it) -> pending entry
        // Where each entry came from: a counter value, so a /pending answer does not undo an event that
        // arrived while the request was in flight.
        this.seen = new Map();
        this.counter = 0;
        this.resolved = new Set(); // tokens already answered: a late /pending answer must not bring them back
    }

    get(nodeId) {
        return this.pauses.get(String(nodeId)) ?? null;
    }

    add(entry) {
        if (!entry || typeof entry.token !== "string" || entry.kind !== this.kind) return;
        if (this.resolved.has(entry.token)) return;
        const key = String(entry.node_id);
        this.pauses.set(key, entry);
        this.seen.set(key, ++this.counter);
        this.onChange(key, "");
    }

    drop(token, note = "") {
        this.resolved.add(token);
        if (this.resolved.size > RESOLVED_MEMORY) this.resolved.delete(this.resolved.values().next().value);
        for (const [key, entry] of this.pauses) {
            if (entry.token !== token) continue;
            this.pauses.delete(key);
            this.seen.delete(key);
            this.onChange(key, note);
        }
    }

    async refresh() {
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
            if (entry.kind === this.kind && !this.resolved.has(entry.token)) fresh.set(String(entry.node_id), entry);
        }
        for (const [key, entry] of this.pauses) {
            if ((this.seen.get(key) ?? 0) > startedAt) fresh.set(key, entry); // newer events know better
        }
        const keys = new Set([...this.pauses.keys(), ...fresh.keys()]);
        this.pauses = fresh;
        this.seen = new Map([...fresh.keys()].map((key) => [key, startedAt]));
        for (const key of keys) this.onChange(key, "");
    }
}

/** POST a JSON body; the status and the JSON answer (or {} when it has none). */
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
