// A dock on the page for panels the frontend does not show in their node.
//
// Nodes 2.0 (Vue-rendered nodes, the setting Comfy.VueNodes.Enabled) in ComfyUI frontend 1.27 draws
// only the widget types it knows and skips every other widget, so the element of an extension's
// addDOMWidget is never mounted and a waiting gate would be invisible. Newer frontends (1.58 here)
// mount it inside the Vue node. So: while Nodes 2.0 is on, a panel that is still not in the page
// 1.5 s after it was made is shown in this dock instead, unless this frontend has already been seen
// mounting one of our panels with Nodes 2.0 on. When the frontend takes a panel over (it appends the
// element into its node, which moves it out of the dock), the dock lets go of it.
// Only public things are used: the app's graph and settings, and document.body.

import { app } from "../../scripts/app.js";
import { el } from "./gate_panel.js";

const GRACE_MS = 1500;
const CHECK_MS = 500;

const tracked = new Map(); // element -> { node, title, height, since, slot }
let frontendMounts = false;
let dock = null;
let timer = null;

function vueNodes() {
    try {
        return !!app.extensionManager?.setting?.get?.("Comfy.VueNodes.Enabled");
    } catch {
        return false;
    }
}

function ensureDock() {
    if (dock) return dock;
    dock = el("div", { class: "dsg-dock", role: "complementary", "aria-label": "gates shown outside their nodes" });
    dock.hidden = true;
    document.body.append(dock);
    return dock;
}

/**
 * Watch `element` (a DOM widget of `node`) and show it in the dock while the frontend does not.
 * @param {object} node @param {HTMLElement} element @param {() => string} title @param {number} height px
 */
export function dockWhenUnmounted(node, element, title, height) {
    tracked.set(element, { node, title, height, since: performance.now(), slot: null, seen: false });
    timer ??= setInterval(check, CHECK_MS);
}

function put(entry, element) {
    const body = el("div", { class: "dsg-dock-body" });
    body.style.height = `${entry.height}px`;
    const slot = el("section", { class: "dsg-dock-slot", dataset: { nodeId: String(entry.node.id) } }, [
        el("header", { class: "dsg-dock-head", title: "This frontend's Nodes 2.0 does not show extension widgets "
            + "inside nodes, so this node's panel is shown here. Turn Nodes 2.0 off to see it in the node." }, [
            el("span", { class: "dsg-dock-title", text: entry.title() }),
            el("span", { class: "dsg-dock-why", text: "shown here: Nodes 2.0 does not show it in the node" }),
        ]),
        body,
    ]);
    body.append(element);
    ensureDock().append(slot);
    entry.slot = slot;
    entry.body = body;
}

function release(entry) {
    entry.slot?.remove();
    entry.slot = null;
    entry.body = null;
}

function check() {
    const now = performance.now();
    const vue = vueNodes();
    for (const [element, entry] of tracked) {
        if (app.graph?.getNodeById?.(entry.node.id) !== entry.node) {
            // Not in the graph on screen: not added yet (just made), gone, or of another workflow.
            if (entry.seen || now - entry.since > 10 * GRACE_MS) {
                release(entry);
                tracked.delete(element);
            }
            continue;
        }
        entry.seen = true;
        if (entry.slot) {
            if (element.parentElement !== entry.body) {
                if (vue && element.isConnected) frontendMounts = true; // the frontend took it over
                release(entry);
                entry.since = now;
            } else {
                entry.slot.querySelector(".dsg-dock-title").textContent = entry.title();
            }
            continue;
        }
        if (element.isConnected) {
            if (vue) frontendMounts = true;
            entry.since = now;
        } else if (vue && !frontendMounts && now - entry.since > GRACE_MS) {
            put(entry, element);
        }
    }
    if (dock) dock.hidden = !dock.children.length;
    if (!tracked.size && timer) {
        clearInterval(timer);
        timer = null;
    }
}
