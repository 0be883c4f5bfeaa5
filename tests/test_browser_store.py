"""The Grid Pool Gate on a pool that lives on an object store, in the real frontend in Debian chromium.

The pool is filled on the store (moto's S3 server on 127.0.0.1) by this process, as another server
would; a ComfyUI started with DATASETE_GATES_STORE pointing at it shows a page: the thumbnails load,
a double click shows the full-size item (served from a temp copy, since ComfyUI's /view serves only
local folders) with its caption, and the person's choice moves the items on the store.
"""

from __future__ import annotations

import numpy as np
import pytest
from browser_helpers import open_comfy, prepare_frontend
from comfy_server import ComfyServer
from test_browser_grid import GRID, load, panel, pressed, queue_grid, review_workflow, tile

from gates import pools
from gates.constants import POOL_DIR_NAME, PREVIEW_PREFIX
from gates.storage import STORE_ENV, parse_store

pytestmark = pytest.mark.browser

SIZE = (64, 48)  # width, height


@pytest.fixture(scope="module")
def store_servers(moto_server):
    """One ComfyUI per frontend release, each started on one bucket; stopped at the end of the module."""
    bucket = moto_server.make_bucket()
    env = {**moto_server.env(), STORE_ENV: f"s3://{bucket}/browser"}
    servers: dict[str, ComfyServer] = {}
    yield env, servers
    for server in servers.values():
        server.cleanup()


@pytest.fixture
def store_server(frontend, store_servers, monkeypatch):
    import frontends

    env, servers = store_servers
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the server inherits it; this process fills the pool with it
    if frontend.release not in servers:
        root = None
        if frontend.release != frontends.PINNED:
            root, why = frontends.newest_root()
            if root is None:
                if frontends.strict():
                    pytest.fail(why)
                pytest.skip(why)
        servers[frontend.release] = ComfyServer(front_end_root=root).start()
    server = servers[frontend.release]
    prepare_frontend(server, vue_nodes=frontend.vue_nodes)
    yield server, parse_store(env[STORE_ENV]).child(POOL_DIR_NAME)
    server.settle(60.0)


def item(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)


def test_a_page_of_a_pool_on_the_store_is_reviewed_in_the_browser(store_server, context, page_errors, frontend):
    server, base = store_server
    pool = f"store_{frontend.id.replace('-', '_')}"
    pools.add_frames(base, pool, [item(k) for k in range(6)], [f"item {k} ✓" for k in range(6)])

    page = open_comfy(context, server, page_errors)
    load(page, review_workflow(pool, 6))
    entry = queue_grid(page, server)  # waits until every thumbnail has loaded
    assert [i["name"] for i in entry["items"]] == [f"{n:06d}" for n in range(1, 7)]
    assert panel(page).locator(".dsg-grid-tile").count() == 6

    tile(page, 3).dblclick()
    viewer = page.locator(".dsg-grid-viewer")
    viewer.wait_for(state="visible")
    page.wait_for_function("() => { const i = document.querySelector('.dsg-grid-viewer img.dsg-grid-full');"
                           " return i && i.complete && i.naturalWidth > 0; }")
    full = viewer.locator("img.dsg-grid-full")
    assert tuple(full.evaluate("img => [img.naturalWidth, img.naturalHeight]")) == SIZE
    assert "type=temp" in full.get_attribute("src")
    assert viewer.locator(".dsg-grid-viewer-caption").inner_text() == "item 3 ✓"
    page.keyboard.press("Escape")
    viewer.wait_for(state="detached")

    for index in (0, 3):
        tile(page, index).click()
    assert pressed(page) == [0, 3]
    panel(page).locator("button.dsg-grid-send").click()
    history = server.wait_done(entry["prompt_id"])
    assert history["status"]["status_str"] == "success"
    names = [f"{n:06d}" for n in range(1, 7)]
    states = {it.name: it.state for it, _pixels, _caption in pools.read_items(base, pool, names)}
    assert states == {"000001": "kept", "000002": "rejected", "000003": "rejected", "000004": "kept",
                      "000005": "rejected", "000006": "rejected"}
    assert pools.pending_page(base, pool, 10).items == []
    # The temp copies shown at full size are gone once the grid has been answered.
    assert not [p for p in server.temp_dir.glob(f"{PREVIEW_PREFIX}*")]
    assert not (server.input_dir / POOL_DIR_NAME / pool).exists()
    page.wait_for_selector(f".dsg-grid[data-node-id='{GRID}'][data-state='idle']", state="attached")
