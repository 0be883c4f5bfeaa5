// Docks on the page for node panels the node view cannot show.
//
// Some frontends render nodes without DOM widgets (the first releases of Nodes 2.0 skip every widget
// type they do not know). A waiting gate must never be invisible, so when its panel is not on the page
// shortly after the pause starts, it is shown in the "Waiting gates" dock instead; if the frontend
// later mounts it in the node, the dock gives it back. Every gate kind registers its nodes here, so
// there is one dock for all of them. A dock with `always` set shows its panels whether they wait or
// not (the folder loader's picker and Reset), but only panels the frontend never mounted: a node the
// frontend culled while it is off screen keeps its panel.

import { t } from "./i18n.js";
import { loadStylesheets } from "./node_glue.js";

const CHECK_MS = 400;

export class Dock {
    /**
     * @param {object} options
     * @param {string} options.className classes of the dock element
     * @param {() => string} options.title its heading
     * @param {() => string} options.label its accessible name
     * @param {boolean} [options.always] dock panels whether they wait or not (never-mounted ones only)
     */
    constructor({ className, title, label, always = false }) {
        this.options = { className, title, label, always };
        this.sources = new Set();
        this.element = null;
        this.timer = null;
    }

    /** `source()` lists the {node, panel} pairs of one node kind; a panel has .element and .waiting. */
    addSource(source) {
        this.sources.add(source);
    }

    #dock() {
        if (!this.element) {
            loadStylesheets("./dock.css");
            this.element = document.createElement("aside");
            this.element.className = this.options.className;
            this.element.setAttribute("aria-label", this.options.label());
            this.element.append(Object.assign(document.createElement("header"), { textContent: this.options.title() }));
            document.body.append(this.element);
        }
        return this.element;
    }

    #pairs() {
        const pairs = [];
        for (const source of this.sources) pairs.push(...source());
        return pairs;
    }

    #wanted(panel) {
        if (!this.options.always) return panel.waiting;
        return panel.element.dataset.dsgMounted !== "true";
    }

    reconcileSoon() {
        setTimeout(() => this.reconcile(), CHECK_MS);
    }

    reconcile() {
        const live = new Set();
        const pairs = this.#pairs();
        for (const { node, panel } of pairs) {
            if (panel.element.isConnected && panel.element.parentElement !== panel.dockSection) {
                panel.element.dataset.dsgMounted = "true"; // this node view shows DOM widgets
            }
            if (this.#wanted(panel) && !panel.element.isConnected) {
                const section = document.createElement("section");
                section.className = "dsg-dock-item";
                section.dataset.nodeId = String(node.id);
                section.append(Object.assign(document.createElement("h3"), { textContent: `${node.title} (#${node.id})` }),
                    panel.element);
                this.#dock().append(section);
                panel.dockSection = section;
            }
            // Once docked, a panel stays in its section (hidden while not wanted) unless the node mounts it.
            if (panel.dockSection && panel.element.parentElement === panel.dockSection) {
                live.add(panel.dockSection);
                panel.dockSection.hidden = !this.#wanted(panel);
            } else {
                panel.dockSection = null;
            }
        }
        // Sections of nodes that left the graph (another workflow opened), or whose node took its panel back.
        for (const section of this.element?.querySelectorAll(".dsg-dock-item") ?? []) {
            if (!live.has(section)) section.remove();
        }
        if (this.element) this.element.hidden = !this.element.querySelector(".dsg-dock-item:not([hidden])");
        const anyWaiting = !this.options.always && pairs.some(({ panel }) => panel.waiting);
        if (anyWaiting && this.timer === null) this.timer = setInterval(() => this.reconcile(), CHECK_MS);
        if (!anyWaiting && this.timer !== null) {
            clearInterval(this.timer);
            this.timer = null;
        }
    }
}

/** The one dock for waiting gates of every kind. */
export const waitingGates = new Dock({
    className: "dsg-dock",
    title: () => t("gate.dockTitle", "Waiting gates"),
    label: () => t("gate.dockLabel", "waiting gates"),
});
