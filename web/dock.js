// The "Waiting gates" panel, and docks for node panels the node view cannot show.
//
// Nothing may wait invisibly. A waiting gate whose node is not on screen (it sits in another workflow
// tab, in a subgraph that is not open, is scrolled away or collapsed, or this tab did not queue it)
// appears in the "Waiting gates" panel by itself: its workflow and node name, its preview and full
// controls, and a jump to the node. A choice made anywhere clears it everywhere (the resolved event).
// The panel floats at the top right, can be hidden until the next gate waits, and is reopened (with
// every waiting gate) from the frontend's sidebar. Subgraph nodes that hold a waiting gate are marked.
//
// Some frontends render nodes without DOM widgets (the first releases of Nodes 2.0 skip every widget
// type they do not know): a node panel the frontend never mounted goes to a dock itself, and if the
// frontend later mounts it in the node, the dock gives it back. A dock with `always` set shows its
// panels whether they wait or not (the folder loader's picker and Reset), but only panels the frontend
// never mounted: a node the frontend culled while it is off screen keeps its panel.

import { app } from "../../scripts/app.js";
import { el } from "./gate_panel.js";
import { entryWorkflowName, jumpTo, locate, onOpenGraph } from "./graph_locate.js";
import { t } from "./i18n.js";
import { chainCallback, loadStylesheets } from "./node_glue.js";
import { onAnyChange } from "./pause_client.js";

const CHECK_MS = 400;
const SIDEBAR_TAB = "datasete-waiting-gates";
// The marker on a subgraph node that holds a waiting gate (classic nodes: drawn on the canvas).
const MARKER_FILL = "#f5a623";
const MARKER_TEXT = "#1d1d1d";

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

    dock() {
        if (!this.element) {
            loadStylesheets("./dock.css");
            this.element = document.createElement("aside");
            this.element.className = this.options.className;
            this.element.setAttribute("aria-label", this.options.label());
            this.element.append(this.header());
            document.body.append(this.element);
            // Frontend 1.27's Nodes 2.0 hides every element with a data-node-id (our panels have one, for
            // scripts and tests) whose node is out of view, by an inline display: none. In a dock that
            // would hide the very gates that are out of view: undo it there.
            new MutationObserver((records) => {
                for (const { target } of records) {
                    if (target.dataset?.nodeId !== undefined && target.style.display === "none") {
                        target.style.removeProperty("display");
                    }
                }
            }).observe(this.element, { subtree: true, attributes: true, attributeFilter: ["style"] });
        }
        return this.element;
    }

    header() {
        return Object.assign(document.createElement("header"), { textContent: this.options.title() });
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

    /** Whether the dock keeps checking (on a timer) while nothing else tells it of changes. */
    busy(pairs) {
        return !this.options.always && pairs.some(({ panel }) => panel.waiting);
    }

    /** The dock shows something: hide it when not. */
    showing() {
        return !!this.element?.querySelector(".dsg-dock-item:not([hidden])");
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
                section.className = "dsg-dock-item dsg-dock-node";
                // Not data-node-id: frontend 1.27's Nodes 2.0 hides every element with that attribute whose
                // node is out of view, which in the dock would hide a waiting gate.
                section.dataset.dsgNodeId = String(node.id);
                section.append(Object.assign(document.createElement("h3"), { textContent: `${node.title} (#${node.id})` }),
                    panel.element);
                this.dock().append(section);
                panel.dockSection = section;
            }
            // Once docked, a panel stays in its section (hidden while not wanted) unless the node mounts it.
            if (panel.dockSection && panel.element.parentElement === panel.dockSection) {
                live.add(panel.dockSection);
                panel.dockSection.hidden = !this.#wanted(panel);
                // While it waits it is that gate's item in the panel, like the panels the dock makes itself.
                const token = panel.waiting ? panel.entry?.token : undefined;
                panel.dockSection.classList.toggle("dsg-waiting-item", !!token);
                if (token) panel.dockSection.dataset.token = token;
                else delete panel.dockSection.dataset.token;
            } else {
                panel.dockSection = null;
            }
        }
        // Sections of nodes that left the graph (another workflow opened), or whose node took its panel back.
        for (const section of this.element?.querySelectorAll(".dsg-dock-node") ?? []) {
            if (!live.has(section)) section.remove();
        }
        this.reconcileMore();
        if (this.element) this.element.hidden = !this.showing();
        const busy = this.busy(pairs);
        if (busy && this.timer === null) this.timer = setInterval(() => this.reconcile(), CHECK_MS);
        if (!busy && this.timer !== null) {
            clearInterval(this.timer);
            this.timer = null;
        }
    }

    /** What a subclass adds to each reconcile. */
    reconcileMore() {}
}

/**
 * The one "Waiting gates" panel for every gate kind. Besides node panels the node view cannot show, it
 * holds a panel of its own for each waiting gate whose node is not on screen, answered through the
 * kind's tracker. Each kind registers {tracker, panelOf(node), createPanel(entry)}.
 */
class WaitingGates extends Dock {
    constructor(options) {
        super(options);
        this.kinds = new Map(); // kind -> {tracker, panelOf, createPanel}
        this.items = new Map(); // token -> {entry, section, panel, heading}
        this.dismissed = new Set(); // tokens the person hid the floating panel over
        this.inSidebar = false;
        this.hosts = new Map(); // subgraph node -> how many gates wait inside it (at any depth)
        onAnyChange(() => {
            this.reconcile();
            app.canvas?.setDirty?.(true, true);
        });
    }

    addKind(kind, registration) {
        this.kinds.set(kind, registration);
    }

    header() {
        const title = el("span", { class: "dsg-dock-title", text: this.options.title() });
        this.hideButton = el("button", {
            class: "dsg-dock-hide", type: "button", text: "×",
            title: t("waiting.hideTitle", "Hide until another gate waits (the sidebar's Waiting gates tab shows them all)"),
            "aria-label": t("waiting.hide", "hide the waiting gates"),
            onclick: () => {
                for (const { entry } of this.#entries()) this.dismissed.add(entry.token);
                this.reconcile();
            },
        });
        return el("header", {}, [title, this.hideButton]);
    }

    busy(pairs) {
        return super.busy(pairs) || this.#entries().length > 0;
    }

    showing() {
        return this.inSidebar || super.showing();
    }

    #entries() {
        const entries = [];
        for (const [kind, registration] of this.kinds) {
            for (const entry of registration.tracker.entries()) entries.push({ kind, registration, entry });
        }
        return entries;
    }

    /** The node's own panel shows the pause on screen, where the person can see and answer it. */
    #onScreen(node, panel) {
        if (!panel || !onOpenGraph(app, node) || node.flags?.collapsed) return false;
        const element = panel.element;
        if (!element.isConnected || element.closest(".dsg-dock") || element.dataset.token === undefined) return false;
        const box = element.getBoundingClientRect();
        if (box.width < 8 || box.height < 8) return false;
        const visible = box.right > 0 && box.bottom > 0 && box.left < window.innerWidth && box.top < window.innerHeight;
        return visible && getComputedStyle(element).visibility !== "hidden";
    }

    reconcileMore() {
        const live = new Set();
        const hosts = new Map();
        for (const { registration, entry } of this.#entries()) {
            const found = locate(app, entry);
            const nodePanel = found ? registration.panelOf(found.node) : null;
            for (const host of found?.hosts ?? []) hosts.set(host, (hosts.get(host) ?? 0) + 1);
            // A node panel this dock holds already (a node view without DOM widgets) is the gate's place here.
            if (nodePanel?.dockSection && nodePanel.element.parentElement === nodePanel.dockSection) continue;
            const offScreen = !this.#onScreen(found?.node, nodePanel);
            const wanted = this.inSidebar || (offScreen && !this.dismissed.has(entry.token));
            let item = this.items.get(entry.token);
            if (!item && !wanted) continue;
            if (!item) item = this.#newItem(registration, entry);
            else if (item.entry !== entry) {
                item.entry = entry;
                item.panel.showPause(entry);
            }
            live.add(entry.token);
            item.section.hidden = !wanted;
            item.heading.textContent = this.#heading(entry, found);
            item.jump.hidden = !found && !entry.workflow_id;
        }
        for (const [token, item] of this.items) {
            if (live.has(token)) continue;
            item.section.remove();
            this.items.delete(token);
        }
        // Node panels the dock holds hide with the rest until another gate waits.
        for (const section of this.element?.querySelectorAll(".dsg-dock-node.dsg-waiting-item") ?? []) {
            if (this.dismissed.has(section.dataset.token) && !this.inSidebar) section.hidden = true;
            live.add(section.dataset.token);
        }
        for (const token of this.dismissed) if (!live.has(token)) this.dismissed.delete(token);
        if (this.hideButton) this.hideButton.hidden = this.inSidebar;
        this.#markHosts(hosts);
    }

    #heading(entry, found) {
        const title = found?.node?.title || entry.node_title || t("waiting.node", "node {id}", { id: entry.node_id });
        const workflow = entryWorkflowName(app, entry)
            || (entry.workflow_id ? t("waiting.otherWorkflow", "a workflow not open here") : "");
        return workflow ? `${title} (#${entry.node_id}) · ${workflow}` : `${title} (#${entry.node_id})`;
    }

    #newItem(registration, entry) {
        const panel = registration.createPanel(entry);
        panel.element.dataset.entryToken = entry.token;
        const heading = el("h3", {});
        const jump = el("button", {
            class: "dsg-jump", type: "button", text: t("waiting.jump", "Jump to node"),
            title: t("waiting.jumpTitle", "Open the workflow and subgraph of this gate and centre its node"),
            onclick: async () => {
                const item = this.items.get(entry.token);
                const shown = await jumpTo(app, item?.entry ?? entry);
                if (!shown) {
                    app.extensionManager?.toast?.add?.({
                        severity: "warn", life: 5000, summary: t("gate.dockTitle", "Waiting gates"),
                        detail: t("waiting.notHere", "This gate's workflow is not open in this tab: answer it here."),
                    });
                }
                this.reconcile();
            },
        });
        const section = el("section", {
            class: "dsg-dock-item dsg-waiting-item",
            dataset: { token: entry.token, executionId: String(entry.node_id), kind: entry.kind ?? "image" },
        }, [el("div", { class: "dsg-waiting-head" }, [heading, jump]), panel.element]);
        this.dock().append(section);
        const item = { entry, section, panel, heading, jump };
        this.items.set(entry.token, item);
        return item;
    }

    // --- subgraph nodes that hold a waiting gate ------------------------------------------------

    #markHosts(hosts) {
        this.hosts = hosts;
        // Vue-rendered nodes (Nodes 2.0) are DOM: a badge element on the node.
        const wanted = new Map();
        for (const [host, count] of hosts) if (onOpenGraph(app, host)) wanted.set(String(host.id), count);
        for (const badge of document.querySelectorAll(".lg-node > .dsg-sub-waiting")) {
            const id = badge.parentElement.dataset.nodeId;
            if (!wanted.has(id)) badge.remove();
        }
        for (const [id, count] of wanted) {
            const nodeElement = document.querySelector(`.lg-node[data-node-id="${CSS.escape(id)}"]`);
            if (!nodeElement) continue;
            let badge = nodeElement.querySelector(":scope > .dsg-sub-waiting");
            if (!badge) {
                badge = el("div", { class: "dsg-sub-waiting", role: "status" });
                nodeElement.append(badge);
            }
            const text = markerText(count);
            if (badge.textContent !== text) badge.textContent = text;
            badge.dataset.count = String(count);
        }
    }

    /** Classic nodes: the same marker drawn above each such subgraph node on the canvas. */
    drawMarkers(ctx) {
        for (const [host, count] of this.hosts) {
            if (!onOpenGraph(app, host)) continue;
            const text = markerText(count);
            ctx.save();
            ctx.font = "bold 13px system-ui, sans-serif";
            const width = ctx.measureText(text).width + 16;
            const height = 22;
            const titleHeight = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
            const x = host.pos[0];
            const y = host.pos[1] - titleHeight - height - 4;
            ctx.fillStyle = MARKER_FILL;
            ctx.beginPath();
            if (ctx.roundRect) ctx.roundRect(x, y, width, height, 6);
            else ctx.rect(x, y, width, height);
            ctx.fill();
            ctx.fillStyle = MARKER_TEXT;
            ctx.textBaseline = "middle";
            ctx.fillText(text, x + 8, y + height / 2 + 1);
            ctx.restore();
        }
    }

    // --- the sidebar tab ---------------------------------------------------------------------------

    install() {
        const canvas = app.canvas;
        if (canvas) {
            chainCallback(canvas, "onDrawForeground", (ctx) => this.drawMarkers(ctx));
        }
        // The open graph changed (a subgraph opened or closed, another workflow loaded): what is on screen too.
        canvas?.canvas?.addEventListener?.("litegraph:set-graph", () => this.reconcileSoon());
        const manager = app.extensionManager;
        // Both frontends have the sidebar tab store; the older spelling on the manager itself is deprecated.
        const tabs = manager?.sidebarTab?.registerSidebarTab ? manager.sidebarTab : manager;
        if (typeof tabs?.registerSidebarTab === "function") {
            tabs.registerSidebarTab({
                id: SIDEBAR_TAB,
                icon: "pi pi-hourglass",
                title: t("gate.dockTitle", "Waiting gates"),
                tooltip: t("waiting.sidebarTooltip", "Every waiting gate of every workflow, answerable here"),
                type: "custom",
                render: (container) => this.#moveInto(container),
                destroy: () => this.#moveInto(null),
            });
        } else {
            // No sidebar to reopen it from: a button on the page does it.
            const button = el("button", {
                class: "dsg-waiting-reopen", type: "button", text: t("gate.dockTitle", "Waiting gates"),
                onclick: () => this.#moveInto(this.inSidebar ? null : document.body),
            });
            document.body.append(button);
        }
    }

    #moveInto(container) {
        const dock = this.dock();
        this.inSidebar = !!container;
        dock.classList.toggle("dsg-dock-in-sidebar", this.inSidebar);
        (container ?? document.body).append(dock);
        if (this.inSidebar) this.dismissed.clear();
        this.reconcile();
    }
}

function markerText(count) {
    return count === 1 ? t("waiting.inside", "a gate waits inside")
        : t("waiting.insideMany", "{count} gates wait inside", { count });
}

/** The one dock for waiting gates of every kind. */
export const waitingGates = new WaitingGates({
    className: "dsg-dock",
    title: () => t("gate.dockTitle", "Waiting gates"),
    label: () => t("gate.dockLabel", "waiting gates"),
});

app.registerExtension({
    name: "datasete.gates.WaitingGates",
    setup() {
        waitingGates.install();
    },
});
