// A waiting gate's countdown to its timeout, and the touch that restarts it.
//
// The pending entry carries `deadline` (epoch seconds, null without a timeout), `timeout` and
// `on_timeout`. While a panel shows such an entry, a Countdown counts down to the deadline; any
// interaction with the panel (a stroke, a click, a key) POSTs /datasete_gate/touch, at most once a
// second, and the server answers with the new deadline and tells every tab (datasete_gate.deadline).
// The `api` it talks through is handed in (the frontend's public `api` object in a node, the review
// page's own over its websocket), so the panels that hold a countdown load on either page.

import { t } from "./i18n_core.js";
import { postJSON } from "./pause_client.js";

const ROUTE_TOUCH = "/datasete_gate/touch";
const EVENT_DEADLINE = "datasete_gate.deadline";
const TOUCH_EVERY_MS = 1000;
const TICK_MS = 250;

const live = new Set(); // the countdowns that show a pause now
const heard = new WeakSet(); // the api objects whose deadline events are listened to

function listen(api) {
    if (!api || heard.has(api)) return;
    heard.add(api);
    api.addEventListener(EVENT_DEADLINE, ({ detail }) => {
        for (const countdown of live) {
            if (detail && countdown.entry?.token === detail.token) countdown.setDeadline(detail.deadline);
        }
    });
}

/** "0:09", "12:05", "1:02:03": whole seconds left, rounded up. */
export function formatRemaining(seconds) {
    const total = Math.max(0, Math.ceil(seconds));
    const hours = Math.floor(total / 3600);
    const minutes = Math.floor((total % 3600) / 60);
    const pad = (n) => String(n).padStart(2, "0");
    return hours ? `${hours}:${pad(minutes)}:${pad(total % 60)}` : `${minutes}:${pad(total % 60)}`;
}

export class Countdown {
    /** @param {object} api where touches go and deadline events come from; `api.now()`, when it has one,
     * is the server's clock in seconds (the review page corrects a phone's clock with it). */
    constructor(api) {
        this.api = api;
        this.element = document.createElement("span");
        this.element.className = "dsg-countdown";
        // Styled here, so every panel (whatever stylesheet it loads) shows it the same way.
        Object.assign(this.element.style, {
            marginLeft: "6px", flex: "none", padding: "0 6px", borderRadius: "9px", fontSize: "11px",
            lineHeight: "18px", fontVariantNumeric: "tabular-nums", background: "rgba(255, 255, 255, 0.1)",
        });
        this.element.setAttribute("role", "timer");
        this.element.hidden = true;
        this.entry = null;
        this.deadline = null;
        this.timer = null;
        this.lastTouch = 0;
        listen(api);
    }

    #now() {
        return typeof this.api?.now === "function" ? this.api.now() : Date.now() / 1000;
    }

    /** Any pointer or key inside `element` (captured before the panel's own handlers) restarts the countdown. */
    watch(element) {
        for (const type of ["pointerdown", "keydown", "wheel"]) {
            element.addEventListener(type, () => this.touch(), { capture: true, passive: true });
        }
    }

    /** Count down for `entry` (or hide, when it has no deadline). */
    show(entry) {
        this.entry = entry;
        live.add(this);
        this.setDeadline(entry?.deadline ?? null);
    }

    stop() {
        this.entry = null;
        this.deadline = null;
        live.delete(this);
        clearInterval(this.timer);
        this.timer = null;
        this.element.hidden = true;
        delete this.element.dataset.deadline;
    }

    setDeadline(deadline) {
        this.deadline = typeof deadline === "number" ? deadline : null;
        clearInterval(this.timer);
        this.timer = null;
        if (this.deadline === null || !this.entry) {
            this.element.hidden = true;
            delete this.element.dataset.deadline;
            return;
        }
        this.element.hidden = false;
        this.element.dataset.deadline = String(this.deadline);
        this.#tick();
        this.timer = setInterval(() => this.#tick(), TICK_MS);
    }

    /** The person is still at it: restart the countdown here at once, and on the server (throttled). */
    touch() {
        const entry = this.entry;
        if (!entry || this.deadline === null || !entry.timeout) return;
        const now = Date.now();
        if (now - this.lastTouch < TOUCH_EVERY_MS) return;
        this.lastTouch = now;
        this.setDeadline(this.#now() + entry.timeout);
        postJSON(this.api, ROUTE_TOUCH, { token: entry.token }).then(({ ok, data }) => {
            if (ok && this.entry?.token === entry.token) this.setDeadline(data.deadline ?? null);
        }).catch(() => {
            // Gone (answered elsewhere) or unreachable: the resolved event or the next /pending says so.
        });
    }

    #tick() {
        if (this.deadline === null) return;
        const left = this.deadline - this.#now();
        const outcome = this.entry?.on_timeout ?? "cancel";
        this.element.textContent = t("timeout.countdown", "answers itself in {time}: {outcome}",
                                              { time: formatRemaining(left), outcome });
        this.element.title = t("timeout.countdownTitle",
            "With no interaction the gate answers itself with on_timeout = {outcome}; any stroke, click or keystroke here restarts the countdown.",
            { outcome });
        const urgent = left <= 10;
        this.element.dataset.urgent = String(urgent);
        this.element.style.background = urgent ? "rgba(255, 64, 129, 0.85)" : "rgba(255, 255, 255, 0.1)";
        this.element.style.color = urgent ? "#fff" : "";
    }
}
