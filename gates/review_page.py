"""The review page: a standalone HTML page (no ComfyUI canvas) that lists and answers every waiting gate.

The page itself is a small shell; everything it shows is built by the pack's web/review.js from the
same panel modules the nodes use, loaded from where ComfyUI serves the pack's web folder:
/extensions/<name>/, where <name> is the folder ComfyUI loaded the pack from (a user may have
cloned it under any name), so the name is looked up at request time, never assumed.
"""

from __future__ import annotations

import json
import os
import urllib.parse

from .constants import ROUTE_REVIEW

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEB_DIR = os.path.join(PACK_DIR, "web")


def extension_name(web_dir: str = WEB_DIR, served: dict | None = None) -> str:
    """The name under which ComfyUI serves `web_dir` (its EXTENSION_WEB_DIRS key).

    `served` is that mapping; by default ComfyUI's own, read now because ComfyUI fills it only after
    the pack's __init__ has run. Outside ComfyUI (or if the folder is not listed) the pack's folder
    name, which is what ComfyUI uses for a WEB_DIRECTORY.
    """
    folder = os.path.basename(os.path.dirname(os.path.abspath(web_dir)))
    if served is None:
        try:
            import nodes  # ComfyUI's

            served = dict(getattr(nodes, "EXTENSION_WEB_DIRS", {}) or {})
        except Exception:  # noqa: BLE001 - outside ComfyUI, or a ComfyUI without the mapping
            served = {}
    wanted = os.path.realpath(web_dir)
    names = [name for name, path in served.items() if isinstance(path, str) and os.path.realpath(path) == wanted]
    if folder in names or not names:
        return folder
    return names[0]


def extension_path(name: str) -> str:
    """The URL path of a pack's web folder, quoted as ComfyUI's frontend quotes it."""
    return "/extensions/" + urllib.parse.quote(name)


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1, viewport-fit=cover">
<meta name="color-scheme" content="dark">
<meta name="referrer" content="no-referrer">
<title>Waiting gates · Datasete Gates</title>
<link rel="icon" href="data:,">
</head>
<body class="dsr-page">
<noscript>The review page needs JavaScript.</noscript>
<script id="dsr-config" type="application/json">__CONFIG__</script>
<script type="module">
// The pack's scripts are served beside ComfyUI's own pages: find the server's root from this page's
// path (it may sit behind a reverse proxy's prefix, and is also served under /api/).
const config = JSON.parse(document.getElementById("dsr-config").textContent);
const path = location.pathname;
let prefix = path.slice(0, Math.max(0, path.lastIndexOf(config.route)));
if (prefix.endsWith("/api")) prefix = prefix.slice(0, -4);
const base = prefix + config.extensions;
import(base + "/review.js")
    .then((module) => module.start({ ...config, prefix, base }))
    .catch((error) => {
        const message = document.createElement("p");
        message.className = "dsr-fatal";
        message.textContent = "The review page could not load its scripts from " + base + "/: " + error;
        document.body.append(message);
    });
</script>
</body>
</html>
"""


def render(name: str) -> str:
    """The page, pointed at the pack's web folder served as /extensions/<name>/."""
    config = {"route": ROUTE_REVIEW, "extensions": extension_path(name)}
    # JSON inside <script>: "<" is escaped so no value can close the element.
    text = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return PAGE.replace("__CONFIG__", text)

