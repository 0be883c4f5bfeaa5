"""Add to Image Pool and the Grid Pool Gate without ComfyUI: run() with ComfyUI's modules faked per test.

Only ComfyUI's own modules are faked (folder_paths, server, comfy.model_management, comfy_execution);
torch, numpy, the pool on disk and the pack are real.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from comfy_fakes import FakeComfy, RunningNode, wait_for_pause
from PIL import Image

from gates import pools
from gates.constants import (
    CATEGORY,
    EVENT_POOL_STATUS,
    EVENT_PREVIEW,
    EVENT_RESOLVED,
    GRID_NODE_DISPLAY_NAME,
    GRID_NODE_ID,
    GRID_PAGE_SIZE_MAX,
    POOL_NODE_DISPLAY_NAME,
    POOL_NODE_ID,
    PREVIEW_PREFIX,
)
from gates.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from gates.nodes.grid_pool_gate import GridPoolGate
from gates.nodes.pool_add import AddToImagePool
from gates.pause import GateBus


@pytest.fixture
def fake(tmp_path):
    fake = FakeComfy(tmp_path)
    with fake.installed():
        yield fake


@pytest.fixture
def gate():
    node = GridPoolGate()
    node.bus = GateBus()
    return node


def pool_base(fake) -> str:
    return os.path.join(fake.input, "gate_pool")


def coloured(*colours, height=4, width=6, channels=3) -> torch.Tensor:
    batch = torch.zeros((len(colours), height, width, channels), dtype=torch.float32)
    for index, colour in enumerate(colours):
        batch[index, ..., :3] = torch.tensor(colour[:3], dtype=torch.float32) / 255.0
        if channels == 4:
            batch[index, ..., 3] = (colour[3] if len(colour) > 3 else 255) / 255.0
    return batch


def rgb_of(tensor) -> tuple:
    return tuple(int(round(float(v) * 255)) for v in tensor[0, 0, 0, :3])


def statuses(fake) -> list[dict]:
    return [data for event, data in fake.events if event == EVENT_POOL_STATUS]


def temp_files(fake) -> list[str]:
    return sorted(n for n in os.listdir(fake.temp) if n.startswith(PREVIEW_PREFIX)) if os.path.isdir(fake.temp) else []


# --- Add to Image Pool ------------------------------------------------------------------------------

def test_add_writes_the_batch_passes_it_through_and_reports_the_counts(fake):
    images = coloured((255, 0, 0), (0, 255, 0), (0, 0, 255))
    out = AddToImagePool().run(images, "night", captions="red\ngreen\nblue", unique_id="7")
    assert out["result"][0] is images
    assert out["result"][1:] == (3, 3)
    [status] = out["ui"]["datasete_pool"]
    assert status["text"] == "added 3 · pending 3 · kept 0 · rejected 0"
    assert statuses(fake) == [status] and status["node_id"] == "7" and status["pool"] == "night"
    pending = os.path.join(pool_base(fake), "night", "pending")
    assert sorted(os.listdir(pending)) == [f"00000{n}.{e}" for n in (1, 2, 3) for e in ("png", "txt")]
    assert open(os.path.join(pending, "000002.txt"), "rb").read() == b"green"
    with Image.open(os.path.join(pending, "000003.png")) as png:
        assert png.mode == "RGB" and png.getpixel((0, 0)) == (0, 0, 255)

    again = AddToImagePool().run(images, "night", unique_id="7")
    assert again["result"][1:] == (0, 3)
    assert again["ui"]["datasete_pool"][0]["text"] == "added 0 · pending 3 · kept 0 · rejected 0 · 3 duplicates skipped"
    assert AddToImagePool().run(images, "night", skip_duplicates=False)["result"][1:] == (3, 6)


def test_add_keeps_alpha(fake):
    AddToImagePool().run(coloured((10, 20, 30, 40), channels=4), "alpha")
    with Image.open(os.path.join(pool_base(fake), "alpha", "pending", "000001.png")) as png:
        assert png.mode == "RGBA" and png.getpixel((1, 1)) == (10, 20, 30, 40)


def test_bad_input_is_refused_by_name_and_writes_nothing(fake):
    with pytest.raises(pools.CaptionError, match="2 lines for 3 frames"):
        AddToImagePool().run(coloured((1, 1, 1), (2, 2, 2), (3, 3, 3)), "p", captions="a\nb")
    with pytest.raises(pools.PoolIdError, match=r"'\.\./escape'"):
        AddToImagePool().run(coloured((1, 1, 1)), "../escape")
    assert not os.path.exists(pool_base(fake)) or os.listdir(pool_base(fake)) == []
    assert AddToImagePool.VALIDATE_INPUTS(pool="../escape").startswith("invalid pool id '../escape'")
    assert AddToImagePool.VALIDATE_INPUTS(pool="fine") is True
    assert AddToImagePool.VALIDATE_INPUTS(pool=None) is True  # linked: checked when it runs


# --- Grid Pool Gate: pool mode ------------------------------------------------------------------------

def fill(fake, pool: str, count: int, captions: bool = True) -> list[tuple]:
    colours = [(10 * n % 256, 20 + n, 200 - n) for n in range(count)]
    AddToImagePool().run(coloured(*colours), pool,
                         captions="\n".join(f"item {n}" for n in range(count)) if captions else "")
    return colours


def test_a_page_of_the_oldest_pending_items_pauses_and_send_moves_and_outputs_them(fake, gate):
    colours = fill(fake, "p", 20)
    running = RunningNode(gate, pool="p", page_size=8, unique_id="12")
    entry = wait_for_pause(gate.bus, running)
    assert entry["kind"] == "grid" and entry["node_id"] == "12" and entry["pool"] == "p"
    assert (entry["pending"], entry["remaining"], entry["page_size"]) == (20, 12, 8)
    items = entry["items"]
    assert [item["name"] for item in items] == [f"{n:06d}" for n in range(1, 9)]
    assert [item["index"] for item in items] == list(range(8))
    assert items[3]["caption"] == "item 3" and (items[3]["width"], items[3]["height"]) == (6, 4)
    assert items[0]["full"] == {"filename": "000001.png", "subfolder": "gate_pool/p/pending", "type": "input"}
    for item in items:  # thumbnails in temp, small
        assert item["image"]["type"] == "temp" and item["image"]["filename"] in temp_files(fake)
    assert fake.events[-1] == (EVENT_PREVIEW, entry)

    gate.bus.answer(entry["token"], {"keep": [5, 1, 2]})
    running.join()
    assert running.error is None, running.error
    kept, captions, rejected, names = running.result["result"]
    assert names == ["000002", "000003", "000006"]
    assert captions == ["item 1", "item 2", "item 5"]
    assert [rgb_of(image) for image in kept] == [colours[1], colours[2], colours[5]]
    assert all(image.shape == (1, 4, 6, 3) for image in kept + rejected)
    assert [rgb_of(image) for image in rejected] == [colours[n] for n in (0, 3, 4, 6, 7)]
    folder = os.path.join(pool_base(fake), "p")
    assert sorted(os.listdir(os.path.join(folder, "kept"))) == [
        f"{n:06d}.{e}" for n in (2, 3, 6) for e in ("png", "txt")]
    assert len(os.listdir(os.path.join(folder, "rejected"))) == 10
    assert temp_files(fake) == [], "thumbnails are removed when the pause ends"
    resolved = [data for event, data in fake.events if event == EVENT_RESOLVED][-1]
    assert resolved["token"] == entry["token"] and resolved["keep"] == [1, 2, 5] and resolved["kind"] == "grid"
    assert running.result["ui"]["datasete_pool"][0]["text"].startswith("kept 3 of 8 · pool: pending 12")

    # The next run shows the next page.
    running = RunningNode(gate, pool="p", page_size=8, unique_id="12")
    entry = wait_for_pause(gate.bus, running)
    assert [item["name"] for item in entry["items"]] == [f"{n:06d}" for n in range(9, 17)]
    assert entry["remaining"] == 4
    gate.bus.answer(entry["token"], {"keep": []})
    running.join()
    kept, captions, rejected, names = running.result["result"]
    for blocked in (kept, captions, names):
        assert isinstance(blocked, fake.ExecutionBlocker) and blocked.message is None
    assert len(rejected) == 8


def test_all_kept_blocks_rejected(fake, gate):
    fill(fake, "p", 2, captions=False)
    running = RunningNode(gate, pool="p", page_size=16, unique_id="1")
    entry = wait_for_pause(gate.bus, running)
    assert [item["caption"] for item in entry["items"]] == [None, None]
    gate.bus.answer(entry["token"], {"keep": [0, 1]})
    running.join()
    kept, captions, rejected, names = running.result["result"]
    assert len(kept) == 2 and captions == ["", ""] and names == ["000001", "000002"]
    assert isinstance(rejected, fake.ExecutionBlocker)


def test_mixed_sizes_and_alpha_come_out_each_at_its_own_size(fake, gate):
    AddToImagePool().run(coloured((1, 2, 3), height=5, width=7), "m")
    AddToImagePool().run(coloured((4, 5, 6, 128), height=9, width=3, channels=4), "m")
    running = RunningNode(gate, pool="m", page_size=16, unique_id="1")
    entry = wait_for_pause(gate.bus, running)
    gate.bus.answer(entry["token"], {"keep": [0, 1]})
    running.join()
    kept = running.result["result"][0]
    assert [tuple(image.shape) for image in kept] == [(1, 5, 7, 3), (1, 9, 3, 4)]
    assert round(float(kept[1][0, 0, 0, 3]) * 255) == 128


@pytest.mark.parametrize(("pool", "why"), [("missing", "pool 'missing' does not exist"),
                                           ("empty", "pool 'empty' has nothing pending (kept 1, rejected 0)"),
                                           ("", "no pool given and no images wired")])
def test_no_pause_for_an_unknown_or_empty_pool_every_output_blocked_and_the_node_says_why(fake, gate, pool, why):
    AddToImagePool().run(coloured((1, 1, 1)), "empty")
    pools.move(pool_base(fake), "empty", {"000001": "kept"})
    fake.events.clear()
    result = gate.run(pool=pool, page_size=16, unique_id="3")
    assert all(isinstance(out, fake.ExecutionBlocker) for out in result["result"])
    [status] = statuses(fake)
    assert status["text"].startswith(why) and status["node_id"] == "3" and status["paused"] is False
    assert result["ui"]["datasete_pool"] == [status]
    assert gate.bus.pending() == [] and not os.path.exists(os.path.join(pool_base(fake), "missing"))


def test_cancel_and_interrupt_end_the_run_as_interrupted_and_move_nothing(fake, gate):
    fill(fake, "p", 3)
    running = RunningNode(gate, pool="p", page_size=16, unique_id="1")
    entry = wait_for_pause(gate.bus, running)
    gate.bus.cancel(entry["token"])
    running.join()
    assert isinstance(running.error, fake.InterruptProcessingException)
    running = RunningNode(gate, pool="p", page_size=16, unique_id="1")
    wait_for_pause(gate.bus, running)
    fake.interrupt_flag.set()
    running.join()
    assert isinstance(running.error, fake.InterruptProcessingException)
    assert pools.scan(pool_base(fake), "p").counts() == {"pending": 3, "kept": 0, "rejected": 0}
    assert temp_files(fake) == [] and gate.bus.pending() == []
    assert fake.events[-1][0] == EVENT_RESOLVED and fake.events[-1][1]["keep"] is None


def test_a_corrupt_item_fails_the_run_naming_pool_and_file_before_pausing(fake, gate):
    fill(fake, "p", 2)
    path = os.path.join(pool_base(fake), "p", "pending", "000002.png")
    with open(path, "r+b") as handle:
        handle.truncate(30)
    with pytest.raises(pools.PoolError, match=r"pool 'p': pending/000002\.png is not a readable image"):
        gate.run(pool="p", page_size=16, unique_id="1")
    assert gate.bus.pending() == [] and temp_files(fake) == []


def test_an_item_deleted_by_hand_during_the_pause_is_left_out(fake, gate):
    fill(fake, "p", 3)
    running = RunningNode(gate, pool="p", page_size=16, unique_id="1")
    entry = wait_for_pause(gate.bus, running)
    os.remove(os.path.join(pool_base(fake), "p", "pending", "000002.png"))
    gate.bus.answer(entry["token"], {"keep": [0, 1]})
    running.join()
    kept, _captions, rejected, names = running.result["result"]
    assert names == ["000001"] and len(rejected) == 1


# --- Grid Pool Gate: a wired batch ---------------------------------------------------------------------

def test_a_wired_batch_is_gated_page_by_page_and_nothing_is_written_to_the_pool(fake, gate):
    images = coloured(*[(n, 2 * n, 3 * n) for n in range(5)])
    running = RunningNode(gate, pool="", page_size=3, images=images, unique_id="4")
    first = wait_for_pause(gate.bus, running)
    assert first["source"] == "input" and first["pool"] is None
    assert [item["name"] for item in first["items"]] == ["frame_0000", "frame_0001", "frame_0002"]
    assert (first["pending"], first["remaining"]) == (5, 2)
    assert first["items"][0]["full"]["type"] == "temp"
    gate.bus.answer(first["token"], {"keep": [2]})
    deadline_entry = None
    for _ in range(400):
        pending = gate.bus.pending()
        if pending and pending[0]["token"] != first["token"]:
            deadline_entry = pending[0]
            break
        running.thread.join(0.01)
    assert deadline_entry is not None, "the second page did not pause"
    assert [item["name"] for item in deadline_entry["items"]] == ["frame_0003", "frame_0004"]
    gate.bus.answer(deadline_entry["token"], {"keep": [0]})
    running.join()
    kept, captions, rejected, names = running.result["result"]
    assert names == ["frame_0002", "frame_0003"] and captions == ["", ""]
    assert torch.equal(kept[0], images[2:3]) and torch.equal(kept[1], images[3:4])
    assert len(rejected) == 3
    assert not os.path.exists(pool_base(fake)) and temp_files(fake) == []


# --- what ComfyUI shows of the nodes -------------------------------------------------------------------

def test_the_nodes_describe_themselves():
    assert NODE_CLASS_MAPPINGS[POOL_NODE_ID] is AddToImagePool and NODE_CLASS_MAPPINGS[GRID_NODE_ID] is GridPoolGate
    assert NODE_DISPLAY_NAME_MAPPINGS[POOL_NODE_ID] == POOL_NODE_DISPLAY_NAME == "Add to Image Pool"
    assert NODE_DISPLAY_NAME_MAPPINGS[GRID_NODE_ID] == GRID_NODE_DISPLAY_NAME == "Grid Pool Gate"
    for node_class in (AddToImagePool, GridPoolGate):
        assert node_class.CATEGORY == CATEGORY == "Datasete/gates"
        assert node_class.DESCRIPTION
        assert len(node_class.OUTPUT_TOOLTIPS) == len(node_class.RETURN_TYPES) and all(node_class.OUTPUT_TOOLTIPS)
        inputs = node_class.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, (_kind, options) in inputs[section].items():
                assert options.get("tooltip"), f"{node_class.__name__}.{name} has no tooltip"
        assert math.isnan(node_class.IS_CHANGED())
        # ComfyUI compares IS_CHANGED values inside tuples, which check identity first: two calls must give
        # two NaN objects, or the second run is served from the cache.
        assert (node_class.IS_CHANGED(),) != (node_class.IS_CHANGED(),)
    assert AddToImagePool.OUTPUT_NODE is True
    assert AddToImagePool.RETURN_NAMES == ("images", "added", "pending")
    assert AddToImagePool.RETURN_TYPES == ("IMAGE", "INT", "INT")
    add_inputs = AddToImagePool.INPUT_TYPES()
    assert add_inputs["optional"]["captions"][1]["multiline"] is True
    assert add_inputs["optional"]["skip_duplicates"][1]["default"] is True
    assert GridPoolGate.RETURN_NAMES == ("kept", "captions", "rejected", "names")
    assert GridPoolGate.RETURN_TYPES == ("IMAGE", "STRING", "IMAGE", "STRING")
    assert GridPoolGate.OUTPUT_IS_LIST == (True, True, True, True)
    page = GridPoolGate.INPUT_TYPES()["required"]["page_size"][1]
    assert (page["default"], page["min"], page["max"]) == (16, 1, GRID_PAGE_SIZE_MAX) and GRID_PAGE_SIZE_MAX == 64
    assert GridPoolGate.VALIDATE_INPUTS(pool="a/b").startswith("invalid pool id")
    assert GridPoolGate.VALIDATE_INPUTS(pool="") is True


def test_page_size_is_clamped(fake, gate):
    fill(fake, "p", 3)
    running = RunningNode(gate, pool="p", page_size=0, unique_id="1")
    entry = wait_for_pause(gate.bus, running)
    assert len(entry["items"]) == 1
    gate.bus.cancel(entry["token"])
    running.join()
