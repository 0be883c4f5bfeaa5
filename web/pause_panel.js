// What every gate panel (image, grid, text) does alike as a pause comes and goes, written once: the
// state and token on its element (the CSS shows the idle or the waiting part by data-state; the dock and
// the tests find a panel by its token), the countdown, the busy buttons, the error line. A kind's panel
// extends PausePanel and fills in startPause(entry), for a new pause, and endPause(note), back to idle.
// No frontend import, so the review page (a page without ComfyUI's frontend) uses the panels too.

import { Countdown } from "./countdown.js";

export class PausePanel {
    /**
     * @param {object} hooks the kind's callbacks; every kind has
     * @param {object} hooks.api where the countdown's touches go (the frontend's api, or the review page's)
     */
    constructor(hooks) {
        this.hooks = hooks;
        this.entry = null;
        this.busy = false;
        this.countdown = new Countdown(hooks.api);
    }

    get waiting() {
        return this.entry !== null;
    }

    /**
     * Show a waiting gate. The same pause shown again (a fresh /pending, another tab's touch) only
     * updates its countdown: what the person has done to it (a mask, a selection, an edit) stays.
     */
    showPause(entry) {
        const same = this.entry !== null && this.entry.token === entry.token;
        this.entry = entry;
        this.element.dataset.state = "waiting";
        this.element.dataset.token = entry.token;
        this.countdown.show(entry); // a fresh /pending may carry a moved deadline for the same pause
        if (same) return;
        this.setBusy(false); // the buttons of the last pause were disabled while its answer was sent
        this.startPause(entry);
    }

    /** Back to idle; `note` says why, when there is something to say ("timed out after 60 s: block"). */
    showIdle(note = "") {
        this.entry = null;
        this.countdown.stop();
        this.setBusy(false);
        this.element.dataset.state = "idle";
        delete this.element.dataset.token;
        this.endPause(note);
    }

    /** A new pause: fill the panel with it. */
    startPause(_entry) {}

    /** The pause ended: clear what it showed. */
    endPause(_note) {}

    /** While an answer is on its way, the kind's buttons are disabled (subclasses disable them). */
    setBusy(busy) {
        this.busy = busy;
    }

    /** Why the server refused an answer, or an answer could not be sent; the gate keeps waiting. */
    setError(message) {
        this.status.textContent = message;
    }
}
