// Glue every node kind of the pack needs the same way: its stylesheets, which class a node is, a panel
// as a DOM widget, and hooks that run after a callback the frontend (or another extension) set.
// Only the frontend's public node and widget API is used.

/** Add the stylesheets (paths relative to this folder) once per page. */
export function loadStylesheets(...files) {
    for (const file of files) {
        const href = new URL(file, import.meta.url).href;
        if ([...document.querySelectorAll("link[rel=stylesheet]")].some((link) => link.href === href)) continue;
        const link = document.createElement("link");
        link.rel = "stylesheet";
        link.href = href;
        document.head.append(link);
    }
}

/** The node is of the python class `nodeClass` (comfyClass on a live node, type on a restored one). */
export function isNodeOf(node, nodeClass) {
    return !!node && (node.comfyClass === nodeClass || node.type === nodeClass);
}

/** Run `after(result, ...args)` after whatever `object[name]` did, keeping its `this` and result. */
export function chainCallback(object, name, after) {
    if (!object) return;
    const before = object[name];
    object[name] = function (...args) {
        const result = before?.apply(this, args);
        after.call(this, ...args);
        return result;
    };
}

/** A panel as a DOM widget that nothing of goes into the saved workflow. */
export function addPanelWidget(node, name, type, element, { minHeight, maxHeight, hideOnZoom = false }) {
    const options = {
        serialize: false,
        hideOnZoom,
        margin: 6,
        getMinHeight: minHeight,
        getValue: () => "",
        setValue: () => {},
    };
    if (maxHeight) options.getMaxHeight = maxHeight;
    const widget = node.addDOMWidget(name, type, element, options);
    widget.serialize = false; // nothing of the panel belongs in the saved workflow
    return widget;
}

/** The one selected node that `test` accepts, or null (none, or more than one). */
export function soleSelected(canvas, test) {
    const selected = Object.values(canvas?.selected_nodes ?? {}).filter(test);
    return selected.length === 1 ? selected[0] : null;
}
