"""GET /datasete_gate/review: the standalone page for a phone or a second screen.

The page must load the pack's scripts from the folder ComfyUI actually serves them from
(/extensions/<the folder the pack was installed as>/), and no request to it may answer 500.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from comfy_server import PACK_FOLDER_NAME

from gates import review_page, server
from gates.constants import ROUTE_REVIEW
from gates.pause import GateBus


def fetch(path: str, name: str = "my pack", method: str = "GET") -> tuple[int, str, dict]:
    async def main():
        app = web.Application()
        handlers = server.make_handlers(bus=GateBus(), extension_name=lambda: name)
        for (verb, route), handler in handlers.items():
            app.router.add_route(verb, route, handler)
        async with TestClient(TestServer(app)) as client:
            response = await client.request(method, path)
            return response.status, await response.text(), dict(response.headers)

    return asyncio.run(main())


def page_config(text: str) -> dict:
    found = re.search(r'<script id="dsr-config" type="application/json">(.*?)</script>', text, re.S)
    assert found, "the page carries no config"
    return json.loads(found.group(1))


def test_the_page_is_served_and_points_at_the_packs_scripts():
    status, text, headers = fetch(ROUTE_REVIEW, name="datasete_gates")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Cache-Control"] == "no-store"
    assert page_config(text) == {"route": ROUTE_REVIEW, "extensions": "/extensions/datasete_gates"}
    assert '+ "/review.js"' in text
    assert 'name="viewport" content="width=device-width' in text


def test_a_folder_name_that_needs_quoting_is_quoted_as_the_frontend_does():
    status, text, _ = fetch(ROUTE_REVIEW, name="Datasete Gates</script>&co")
    assert status == 200
    assert page_config(text)["extensions"] == "/extensions/Datasete%20Gates%3C/script%3E%26co"
    assert "</script>&co" not in text


@pytest.mark.parametrize("query", ["?lang=zz", "?lang=%ff%fe", "?lang=<script>alert(1)</script>", "?a=1&a=2&&=",
                                   "?" + "x" * 5000, "?%"])
def test_any_query_still_serves_the_page(query):
    status, text, _ = fetch(ROUTE_REVIEW + query)
    assert status == 200
    assert "<script>alert" not in text
    assert page_config(text)["extensions"] == "/extensions/my%20pack"


def test_a_post_is_refused_not_a_500():
    status, _, _ = fetch(ROUTE_REVIEW, method="POST")
    assert status == 405


def test_the_name_is_the_key_comfyui_serves_this_web_folder_under(tmp_path):
    pack = tmp_path / "real-checkout"
    (pack / "web").mkdir(parents=True)
    installed = tmp_path / "custom_nodes" / "Datasete-Gates"
    installed.parent.mkdir()
    installed.symlink_to(pack, target_is_directory=True)
    web_dir = str(installed / "web")
    # ComfyUI keys a WEB_DIRECTORY by the folder it loaded the pack from (the symlink's name).
    assert review_page.extension_name(web_dir, {"other": str(tmp_path), "Datasete-Gates": web_dir}) == "Datasete-Gates"
    # Registered under another name only (pyproject's project name): that name.
    assert review_page.extension_name(web_dir, {"datasete-gates": str(pack / "web")}) == "datasete-gates"
    # Not registered (outside ComfyUI): the folder's name.
    assert review_page.extension_name(web_dir, {}) == "Datasete-Gates"


def test_outside_comfyui_the_name_is_the_packs_folder():
    assert review_page.extension_name() == review_page.os.path.basename(review_page.PACK_DIR)


@pytest.mark.comfy
@pytest.mark.parametrize("prefix", ["", "/api"])
def test_a_real_comfyui_serves_the_page_and_the_scripts_it_names(comfy, prefix):
    with urllib.request.urlopen(comfy.url + prefix + ROUTE_REVIEW + "?lang=%ff", timeout=30) as response:
        assert response.status == 200
        text = response.read().decode()
    extensions = page_config(text)["extensions"]
    assert extensions == f"/extensions/{PACK_FOLDER_NAME}"
    for script in ("review.js", "gate_panel.js", "grid_panel.js", "text_panel.js", "i18n_core.js", "review.css"):
        with urllib.request.urlopen(f"{comfy.url}{extensions}/{script}", timeout=30) as response:
            assert response.status == 200
