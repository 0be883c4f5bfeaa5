// Image Folder Loader: the browser side. Below the node's widgets, a picker of the input folder's
// subfolders (the folder widget stays free text), a Reset button that starts the `next` walk over,
// and a status line: "next: 38 of 120", "37 of 120" while a run loads, "done: 120 of 120", "no images".
// Only the frontend's public extension API is used.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { el } from "./gate_panel.js";
import { Dock } from "./dock.js";
import { t } from "./i18n.js";
import { addPanelWidget, chainCallback, isNodeOf, loadStylesheets } from "./node_glue.js";
import { postJSON } from "./pause_client.js";

const NODE_CLASS = "DataseteImageFolderLoader";
const EVENT_LOADER = "datasete_gate.loader";
const ROUTE_FOLDERS = "/datasete_gate/folders";
const ROUTE_STATE = "/datasete_gate/loader/state";
const ROUTE_RESET = "/datasete_gate/loader/reset";
const PANEL_WIDGET = "loader_panel";
const PANEL_HEIGHT = 64;
const MIN_WIDTH = 320;

const panels = new WeakMap(); // node -> LoaderPanel

// Where the node view shows no DOM widgets (frontend 1.27's Nodes 2.0), the panels stand in a dock of
// their own at the bottom right, so the picker, Reset and where the walk is stay at hand.
const loaderDock = new Dock({
    className: "dsg-loader-dock", always: true,
    title: () => t("loader.dockTitle", "Folder loaders"),
    label: () => t("loader.dockLabel", "folder loaders"),
});
let folderList = [];
let folderRequest = null;

class LoaderPanel {
    constructor(hooks) {
        this.hooks = hooks;
        this.folderKey = null; // the server's canonical name of the folder the status is about
        this.element = el("div", { class: "dsg-gate dsg-loader" });
        this.picker = el("select", {
            class: "dsg-folder-pick", "aria-label": t("loader.pickerLabel", "pick a folder of the input folder"),
            title: t("loader.pickerTitle", "Pick a folder inside ComfyUI's input folder (refreshed each time it is opened). The folder widget above stays free text."),
            onchange: () => {
                if (this.picker.value) this.hooks.onPick(this.picker.value);
            },
        });
        for (const type of ["pointerdown", "focus"]) this.picker.addEventListener(type, () => this.hooks.onOpenPicker());
        this.resetButton = el("button", {
            class: "dsg-loader-reset", type: "button", text: t("loader.reset", "Reset"),
            title: t("loader.resetTitle", "Start this folder's next walk over from its first image"),
            onclick: () => this.hooks.onReset(),
        });
        this.status = el("div", { class: "dsg-loader-status", role: "status", dataset: { state: "unknown" } });
        this.element.append(el("div", { class: "dsg-loader-bar" }, [this.picker, this.resetButton]), this.status);
        this.setFolders([], "");
        this.show("unknown", t("loader.pickAFolder", "pick a folder"));
    }

    setFolders(list, current) {
        const options = [el("option", { value: "", text: list.length ? t("loader.pickFolder", "pick a folder…")
            : t("loader.noFolders", "no folders in input/") })];
        for (const name of list) options.push(el("option", { value: name, text: name }));
        this.picker.replaceChildren(...options);
        this.picker.value = list.includes(current) ? current : "";
    }

    /** Show a walk state from the server ({state, index or next_index, count}) in the frontend's language. */
    showState(data) {
        this.show(data.state === "item" || data.state === "all" ? "loaded" : data.state, statusText(data));
    }

    show(state, text) {
        this.status.dataset.state = state;
        this.status.textContent = text;
        this.status.title = text;
    }
}

// --- the graph -----------------------------------------------------------------------------------

/** "37 of 120", "next: 38 of 120", "done: 120 of 120", "no images", "all 120 images". */
function statusText(data) {
    const count = data.count ?? 0;
    if (data.state === "empty" || count === 0) return t("loader.empty", "no images");
    if (data.state === "done") return t("loader.done", "done: {count} of {count}", { count });
    if (data.state === "next") return t("loader.next", "next: {n} of {count}", { n: (data.next_index ?? 0) + 1, count });
    if (data.state === "all") return t("loader.all", "all {count} images", { count });
    return t("loader.item", "{n} of {count}", { n: (data.index ?? 0) + 1, count });
}

function isLoader(node) {
    return isNodeOf(node, NODE_CLASS);
}

function loaderNodes() {
    return (app.graph?.nodes ?? []).filter((node) => isLoader(node) && panels.has(node));
}

loaderDock.addSource(() => loaderNodes().map((node) => ({ node, panel: panels.get(node) })));

function widget(node, name) {
    return node.widgets?.find((w) => w.name === name);
}

function settings(node) {
    return {
        folder: String(widget(node, "folder")?.value ?? ""),
        include_subfolders: !!widget(node, "include_subfolders")?.value,
    };
}

/** Whether the folder input is wired to another node (then its value is only known at run time). */
function folderLinked(node) {
    const input = node.inputs?.find((slot) => slot.name === "folder");
    return input?.link !== null && input?.link !== undefined;
}

// --- the server ----------------------------------------------------------------------------------

async function refreshFolders() {
    if (folderRequest) return folderRequest;
    folderRequest = (async () => {
        try {
            const response = await api.fetchApi(ROUTE_FOLDERS, { cache: "no-store" });
            if (response.ok) folderList = (await response.json()).folders ?? [];
        } catch (error) {
            console.warn("Image Folder Loader: could not list the input folders", error);
        } finally {
            folderRequest = null;
        }
        for (const node of loaderNodes()) panels.get(node).setFolders(folderList, settings(node).folder);
    })();
    return folderRequest;
}

const stateTimers = new WeakMap();

/** Ask where the node's folder walk stands (debounced: typing a folder name asks once). */
function refreshState(node, delay = 250) {
    clearTimeout(stateTimers.get(node));
    stateTimers.set(node, setTimeout(() => fetchState(node), delay));
}

async function fetchState(node) {
    const panel = panels.get(node);
    if (!panel) return;
    panel.element.dataset.nodeId = String(node.id);
    loaderDock.reconcileSoon();
    const { folder, include_subfolders } = settings(node);
    panel.setFolders(folderList, folder);
    if (folderLinked(node)) {
        panel.folderKey = null;
        panel.show("unknown", t("loader.linked", "folder comes from a link"));
        return;
    }
    if (!folder.trim()) {
        panel.folderKey = null;
        panel.show("unknown", t("loader.pickAFolder", "pick a folder"));
        return;
    }
    const query = new URLSearchParams({ folder, include_subfolders: String(include_subfolders) });
    try {
        const response = await api.fetchApi(`${ROUTE_STATE}?${query}`, { cache: "no-store" });
        const data = await response.json();
        if (settings(node).folder !== folder) return; // typed on meanwhile: a newer request follows
        if (!response.ok) {
            panel.folderKey = null;
            panel.show("error", data.error ?? t("gate.serverAnswered", "the server answered {status}",
                { status: response.status }));
            return;
        }
        panel.folderKey = stateKey(data.folder, data.include_subfolders);
        panel.showState(data);
    } catch (error) {
        panel.show("error", t("gate.unreachable", "could not reach the server: {error}", { error: error.message ?? error }));
    }
}

function stateKey(folder, recursive) {
    return `${folder}\n${recursive ? 1 : 0}`;
}

async function reset(node) {
    const panel = panels.get(node);
    const body = settings(node);
    panel.resetButton.disabled = true;
    try {
        const { ok, status, data } = await postJSON(api, ROUTE_RESET, body);
        if (ok) {
            panel.folderKey = stateKey(data.folder, data.include_subfolders);
            panel.showState(data);
        } else {
            panel.show("error", data.error ?? t("gate.serverAnswered", "the server answered {status}", { status }));
        }
    } catch (error) {
        panel.show("error", t("gate.unreachable", "could not reach the server: {error}", { error: error.message ?? error }));
    } finally {
        panel.resetButton.disabled = false;
    }
}

/** A loader ran (its own status), or a walk was reset or moved on (every node on that folder). */
function onLoaderEvent(detail) {
    if (!detail) return;
    const key = stateKey(detail.folder, detail.include_subfolders);
    for (const node of loaderNodes()) {
        const panel = panels.get(node);
        const mine = detail.node_id !== null && detail.node_id !== undefined && String(detail.node_id) === String(node.id);
        if (mine || ((detail.reset || detail.committed) && panel.folderKey === key)) {
            if (mine) panel.folderKey = key;
            panel.showState(detail);
        }
    }
}

function pickFolder(node, name) {
    const folder = widget(node, "folder");
    if (!folder) return;
    folder.value = name;
    folder.callback?.(name, app.canvas, node);
    node.setDirtyCanvas?.(true, true);
    app.graph?.change?.();
    refreshState(node, 0);
}

// --- the extension -------------------------------------------------------------------------------

function attachPanel(node) {
    const panel = new LoaderPanel({
        onPick: (name) => pickFolder(node, name),
        onOpenPicker: () => refreshFolders(),
        onReset: () => reset(node),
    });
    addPanelWidget(node, PANEL_WIDGET, "datasete_loader_panel", panel.element,
                   { minHeight: () => PANEL_HEIGHT, maxHeight: () => PANEL_HEIGHT });
    panels.set(node, panel);
    panel.element.dataset.nodeId = String(node.id);

    for (const name of ["folder", "include_subfolders"]) {
        chainCallback(widget(node, name), "callback", (value) => {
            refreshState(node);
            if (name === "folder") panel.setFolders(folderList, String(value ?? ""));
        });
    }
    chainCallback(node, "onConnectionsChange", () => refreshState(node));
    panel.setFolders(folderList, settings(node).folder);
    node.setSize([Math.max(node.size[0], MIN_WIDTH), node.computeSize()[1]]);
    refreshState(node);
}

app.registerExtension({
    name: "datasete.gates.ImageFolderLoader",

    async setup() {
        loadStylesheets("./image_gate.css", "./folder_loader.css");
        api.addEventListener(EVENT_LOADER, ({ detail }) => onLoaderEvent(detail));
        // A run that failed or was cancelled did not move the walk: show where it stands now. (A run
        // that succeeded moved it: the server says so with a `committed` loader event.)
        for (const type of ["reconnected", "execution_error", "execution_interrupted"]) {
            api.addEventListener(type, () => {
                for (const node of loaderNodes()) refreshState(node, 0);
            });
        }
        await refreshFolders();
    },

    nodeCreated(node) {
        if (isLoader(node)) attachPanel(node);
    },

    afterConfigureGraph() {
        for (const node of loaderNodes()) {
            panels.get(node).element.dataset.nodeId = String(node.id);
            panels.get(node).setFolders(folderList, settings(node).folder);
            refreshState(node, 0);
        }
    },
});
