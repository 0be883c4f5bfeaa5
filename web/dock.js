// A dock at the corner of the page for node panels the node view cannot show.
//
// Some node renderers draw no DOM widgets at all: frontend 1.27's experimental Nodes 2.0 draws only
// the widget types of its own registry, so a panel added with addDOMWidget is never put in the page.
// A waiting Text Gate would then be invisible and its run stuck until someone cancels the queue. A
// panel the frontend has not mounted a short while after it should be visible is shown here instead,
// titled with its node; a renderer that mounts it later simply moves it into the node (a DOM element
// has one parent), and the emptied dock entry goes away.

const DELAY_MS = 400;
let dock = null;

function loadStyles() {
    const href = new URL("./dock.css", import.meta.url).href;
    if ([...document.querySelectorAll("link[rel=stylesheet]")].some((link) => link.href === href)) return;
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = href;
    document.head.append(link);
}

function tidy() {
    for (const item of [...(dock?.children ?? [])]) {
        if (!item.querySelector(".dsg-gate")) item.remove(); // its panel was mounted into its node meanwhile
    }
    if (dock && !dock.children.length) dock.remove();
}

/**
 * Show `element` in the dock if it should be visible (`wanted`) and the frontend has never put it in
 * the page; take it out when it is no longer wanted. `title` names the node; `size` is [width, height|null].
 */
export function keepVisible(element, { wanted, title, size }) {
    const docked = !!dock?.contains(element);
    if (element.isConnected && !docked) element.dataset.dsgMounted = "true"; // the node view shows DOM widgets
    if (wanted && !element.isConnected && element.dataset.dsgMounted !== "true") {
        loadStyles();
        dock ??= Object.assign(document.createElement("div"), { className: "dsg-dock" });
        dock.setAttribute("role", "region");
        dock.setAttribute("aria-label", "node panels this node view cannot show");
        if (!dock.isConnected) document.body.append(dock);
        const item = Object.assign(document.createElement("div"), { className: "dsg-dock-item" });
        const heading = Object.assign(document.createElement("div"), { className: "dsg-dock-title" });
        heading.textContent = `${title} (shown here: this node view cannot show it)`;
        item.style.width = `${size[0]}px`;
        if (size[1]) item.style.height = `${size[1]}px`;
        item.append(heading, element);
        dock.append(item);
    } else if (docked && (!wanted || element.dataset.dsgMounted === "true")) {
        element.closest(".dsg-dock-item")?.remove();
    } else if (docked) {
        element.closest(".dsg-dock-item").querySelector(".dsg-dock-title").textContent =
            `${title} (shown here: this node view cannot show it)`;
    }
    tidy();
}

/** keepVisible once the frontend has had time to mount the panel. */
export function keepVisibleSoon(element, options) {
    setTimeout(() => keepVisible(element, typeof options === "function" ? options() : options), DELAY_MS);
}

/** Take a panel out of the dock for good (its node was removed). */
export function undock(element) {
    if (dock?.contains(element)) element.closest(".dsg-dock-item")?.remove();
    tidy();
}
