"""The Image Folder Loader without ComfyUI: run() with ComfyUI's modules faked (comfy_fakes.FakeComfy).

A 30-image dataset (mixed sizes and formats, CRLF/BOM/unicode captions, one corrupt file) is walked in
next mode; prompts finish through a fake of ComfyUI's PromptQueue.task_done, the seam the real tier
tests against a real ComfyUI.
"""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
from comfy_fakes import FakeComfy
from loader_testkit import CORRUPT_INDEX, make_dataset, mtime_settle, pixels
from PIL import Image

from gates import folders, loader
from gates.constants import CATEGORY, EVENT_LOADER, LOADER_DISPLAY_NAME, LOADER_NODE_ID
from gates.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from gates.nodes.folder_loader import ImageFolderLoader

FOLDER = "datasets/cats"


@pytest.fixture
def fake(tmp_path, monkeypatch):
    fake = FakeComfy(tmp_path)
    monkeypatch.setattr(loader, "WALKS", loader.Walks())
    with fake.installed():
        yield fake


@pytest.fixture
def dataset(fake):
    pictures = make_dataset(fake.input / "datasets" / "cats")
    mtime_settle(fake.input / "datasets" / "cats")
    return pictures


@pytest.fixture
def node():
    return ImageFolderLoader()


def run_next(fake, node, prompt_id, success=True, **inputs):
    return fake.run_prompt(lambda: node.run(FOLDER, "next", 0, **inputs), prompt_id, success)


def blocked(fake, result) -> bool:
    return all(isinstance(out, fake.ExecutionBlocker) for out in result["result"])


def assert_is(picture, result, index, count=30):
    image, mask, caption, name, path, at, remaining = (values[0] for values in result["result"])
    assert image.shape == (1, picture.size[1], picture.size[0], 3) and image.dtype == torch.float32
    got = pixels(image)
    if picture.name.endswith(".gif"):
        assert (got[6:, 6:] == picture.colour).all()
        assert float(mask[0, 0, 0]) == 1.0 and float(mask[0, -1, -1]) == 0.0  # the transparent corner
    else:
        tolerance = 3 if picture.name.endswith(".jpg") else 0
        assert np.abs(got.astype(int) - picture.colour).max() <= tolerance, picture.name
    assert mask.shape == (1, picture.size[1], picture.size[0])
    if picture.alpha is not None:
        assert torch.allclose(mask, torch.full_like(mask, 1 - picture.alpha / 255))
    elif not picture.name.endswith(".gif"):
        assert not mask.any()
    assert caption == picture.caption
    assert name == picture.name.rsplit(".", 1)[0] and path == f"{FOLDER}/{picture.name}"
    assert at == index and remaining == count - index - 1


# --- the node as ComfyUI sees it ------------------------------------------------------------------

def test_the_node_is_registered_with_its_names_tooltips_and_list_outputs():
    assert NODE_CLASS_MAPPINGS[LOADER_NODE_ID] is ImageFolderLoader
    assert NODE_DISPLAY_NAME_MAPPINGS[LOADER_NODE_ID] == LOADER_DISPLAY_NAME == "Image Folder Loader"
    assert ImageFolderLoader.CATEGORY == CATEGORY == "Datasete/gates"
    assert ImageFolderLoader.RETURN_NAMES == ("image", "mask", "caption", "name", "path", "index", "remaining")
    assert ImageFolderLoader.RETURN_TYPES == ("IMAGE", "MASK", "STRING", "STRING", "STRING", "INT", "INT")
    assert ImageFolderLoader.OUTPUT_IS_LIST == (True,) * 7
    assert len(ImageFolderLoader.OUTPUT_TOOLTIPS) == 7 and ImageFolderLoader.DESCRIPTION
    inputs = ImageFolderLoader.INPUT_TYPES()
    assert inputs["required"]["mode"][0] == ["next", "index", "all"]
    for section in ("required", "optional"):
        for name, (_type, options) in inputs[section].items():
            assert options.get("tooltip"), f"{name} has no tooltip"


# --- next -----------------------------------------------------------------------------------------

def test_next_walks_every_image_in_natural_order_then_blocks_and_says_done(fake, dataset, node):
    seen = []
    for run in range(len(dataset)):
        picture = dataset[run]
        if picture.corrupt:
            with pytest.raises(loader.LoaderError) as caught:
                run_next(fake, node, f"p{run}")
            assert f"{FOLDER}/{picture.name}" in str(caught.value) and "cannot be read" in str(caught.value)
            assert f"next run goes on with '{dataset[run + 1].name}'" in str(caught.value)
            continue
        result = run_next(fake, node, f"p{run}")
        assert_is(picture, result, run)
        seen.append(picture.name)
        *_, status, committed = fake.events_of(EVENT_LOADER)
        assert status["text"] == f"{run + 1} of 30" and status["state"] == "item" and status["node_id"] is None
        # Then the prompt succeeded and the new place was announced to open pages.
        assert committed["committed"] is True and committed["folder"] == FOLDER
        assert committed["text"] == (f"next: {run + 2} of 30" if run < 29 else "done: 30 of 30")
        assert result["ui"]["datasete_loader"][0]["text"] == f"{run + 1} of 30"
    assert seen[:3] == ["1.png", "2.jpg", "3.webp"] and "10.webp" in seen and len(seen) == 29
    for _ in range(2):
        result = run_next(fake, node, f"done{_}")
        assert blocked(fake, result)
        assert fake.events_of(EVENT_LOADER)[-1]["text"] == "done: 30 of 30"


def test_a_failed_or_cancelled_run_does_not_move_the_walk(fake, dataset, node):
    assert run_next(fake, node, "a")["result"][3] == ["1"]
    assert run_next(fake, node, "b", success=False)["result"][3] == ["2"]  # cancelled at a later gate
    assert run_next(fake, node, "c", success=False)["result"][3] == ["2"]
    assert run_next(fake, node, "d")["result"][3] == ["2"]
    assert run_next(fake, node, "e")["result"][3] == ["3"]


def test_the_position_is_on_disk_before_the_prompt_reaches_history(fake, dataset, node):
    store = loader.position_store(fake.user)
    key = folders.position_key(FOLDER, False)
    seen_at_history = []
    original = type(fake.queue).task_done

    def task_done(queue, item_id, history_result, status):
        seen_at_history.append(store.read(key).last)
        return original(queue, item_id, history_result, status)

    fake.queue.task_done = types.MethodType(task_done, fake.queue)
    run_next(fake, node, "first")
    assert seen_at_history == ["1.png"]
    assert store.read(key).last == "1.png"


def test_the_walk_survives_a_restart(fake, dataset, node, monkeypatch):
    for run in range(3):
        run_next(fake, node, f"before{run}")
    # A new process: nothing in memory, a new queue, the same user folder.
    monkeypatch.setattr(loader, "WALKS", loader.Walks())
    restarted = FakeComfy(fake.root)
    folders._listing_cache.clear()
    with restarted.installed():
        result = restarted.run_prompt(lambda: ImageFolderLoader().run(FOLDER, "next", 0), "after")
    assert result["result"][3] == ["4"]


def test_a_reset_starts_over_and_wins_over_a_prompt_still_running(fake, dataset, node):
    run_next(fake, node, "a")
    run_next(fake, node, "b")

    def reset_meanwhile():
        result = node.run(FOLDER, "next", 0)
        loader.reset_walk(fake.input, fake.user, FOLDER, False)
        return result

    assert fake.run_prompt(reset_meanwhile, "c")["result"][3] == ["3"]
    assert run_next(fake, node, "d")["result"][3] == ["1"], "the reset must win over the running prompt's commit"
    state = loader.loader_state(fake.input, fake.user, FOLDER, False)
    assert state["text"] == "next: 2 of 30" and state["remaining"] == 29


def test_two_loaders_of_one_prompt_on_one_folder_get_consecutive_images(fake, dataset, node):
    def both():
        return node.run(FOLDER, "next", 0), ImageFolderLoader().run(FOLDER, "next", 0)

    first, second = fake.run_prompt(both, "a")
    assert first["result"][3] == ["1"] and second["result"][3] == ["2"]
    assert run_next(fake, node, "b")["result"][3] == ["3"]


def test_without_the_completion_hook_the_walk_moves_at_once(fake, dataset, node):
    fake.modules["server"].PromptServer.instance.prompt_queue = None
    assert node.run(FOLDER, "next", 0)["result"][3] == ["1"]
    assert node.run(FOLDER, "next", 0)["result"][3] == ["2"]


def test_an_unreadable_last_image_fails_and_then_the_walk_is_done(fake, node):
    folder = fake.input / "datasets" / "cats"
    folder.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(folder / "1.png")
    (folder / "2.png").write_bytes(Image.new("RGB", (64, 64)).tobytes()[:100])
    run_next(fake, node, "a")
    with pytest.raises(loader.LoaderError, match="it was the last image"):
        run_next(fake, node, "b")
    assert blocked(fake, run_next(fake, node, "c"))


def test_a_caption_that_is_not_utf8_fails_naming_the_caption_file(fake, node):
    folder = fake.input / "datasets" / "cats"
    folder.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(folder / "1.png")
    (folder / "1.txt").write_bytes(b"caf\xe9")
    with pytest.raises(loader.LoaderError, match=r"datasets/cats/1\.txt is not UTF-8"):
        run_next(fake, node, "a")


def test_a_truncated_picture_is_an_error_not_a_grey_image(fake, node):
    folder = fake.input / "datasets" / "cats"
    folder.mkdir(parents=True)
    Image.new("RGB", (64, 64), (200, 10, 10)).save(folder / "1.jpg", quality=95)
    data = (folder / "1.jpg").read_bytes()
    (folder / "1.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(loader.LoaderError, match=r"datasets/cats/1\.jpg cannot be read"):
        run_next(fake, node, "a")


def test_an_empty_folder_blocks_and_says_no_images_in_every_mode(fake, node):
    (fake.input / "empty").mkdir()
    for mode in ("next", "index", "all"):
        result = node.run("empty", mode, 3)
        assert blocked(fake, result)
        assert fake.events_of(EVENT_LOADER)[-1]["text"] == "no images"


def test_subfolders_walk_apart_from_the_folder(fake, node):
    folder = fake.input / "set"
    (folder / "b").mkdir(parents=True)
    for name in ("1.png", "b/2.png", "b/10.png"):
        Image.new("RGB", (4, 4)).save(folder / name)
    names = [fake.run_prompt(lambda: node.run("set", "next", 0, include_subfolders=True), f"r{i}")["result"][4][0]
             for i in range(3)]
    assert names == ["set/1.png", "set/b/2.png", "set/b/10.png"]
    assert fake.run_prompt(lambda: node.run("set", "next", 0), "flat")["result"][4] == ["set/1.png"]


# --- index and all --------------------------------------------------------------------------------

def test_index_loads_exactly_that_image_and_does_not_move_the_walk(fake, dataset, node):
    result = node.run(FOLDER, "index", 9)
    assert_is(dataset[9], result, 9)
    assert run_next(fake, node, "a")["result"][3] == ["1"]


@pytest.mark.parametrize("index", [30, 31, 10**6])
def test_an_index_out_of_range_names_the_folder_and_the_count(fake, dataset, node, index):
    with pytest.raises(loader.LoaderError, match=rf"index {index} is out of range: folder '{FOLDER}' has 30 images"):
        node.run(FOLDER, "index", index)


def test_all_gives_every_image_as_a_list_of_different_sizes(fake, node):
    folder = fake.input / "datasets" / "cats"
    pictures = [p for p in make_dataset(folder) if not p.corrupt]
    (folder / f"{CORRUPT_INDEX + 1}.png").unlink()
    result = node.run(FOLDER, "all", 0)
    images, masks, captions, names, paths, indexes, remaining = result["result"]
    assert len(images) == 29 and names == [p.name.rsplit(".", 1)[0] for p in pictures]
    assert {tuple(image.shape) for image in images} == {(1, p.size[1], p.size[0], 3) for p in pictures}
    assert captions == [p.caption for p in pictures]
    assert indexes == list(range(29)) and remaining == list(range(28, -1, -1))
    assert fake.events_of(EVENT_LOADER)[-1]["text"] == "all 29 images"


def test_all_with_an_unreadable_file_fails_naming_it(fake, dataset, node):
    with pytest.raises(loader.LoaderError, match=rf"{FOLDER}/{dataset[CORRUPT_INDEX].name} cannot be read"):
        node.run(FOLDER, "all", 0)


# --- validation and caching -----------------------------------------------------------------------

@pytest.mark.parametrize("value", ["..", "../input", "/etc", "a/../../x", "C:\\Windows", "", "nope", "a\x00"])
def test_validate_inputs_refuses_a_bad_typed_folder_naming_it(fake, value):
    answer = ImageFolderLoader.VALIDATE_INPUTS(value)
    assert answer is not True and repr(value) in answer


def test_validate_inputs_lets_a_good_or_linked_folder_through(fake, dataset):
    assert ImageFolderLoader.VALIDATE_INPUTS(FOLDER) is True
    assert ImageFolderLoader.VALIDATE_INPUTS(None) is True


@pytest.mark.parametrize("value", ["..", "/etc", "a/../../x", "nope"])
def test_run_refuses_a_bad_linked_folder_naming_it(fake, node, value):
    with pytest.raises(folders.FolderError) as caught:
        node.run(value, "next", 0)
    assert repr(value) in str(caught.value)


def test_next_is_never_cached_index_and_all_are_until_the_folder_changes(fake, dataset):
    assert math.isnan(ImageFolderLoader.IS_CHANGED(FOLDER, "next", 0))
    assert math.isnan(ImageFolderLoader.IS_CHANGED(None, "index", 0))
    assert math.isnan(ImageFolderLoader.IS_CHANGED("..", "index", 0))
    for mode in ("index", "all"):
        first = ImageFolderLoader.IS_CHANGED(FOLDER, mode, 3)
        assert first == ImageFolderLoader.IS_CHANGED(FOLDER, mode, 3)
    index_3 = ImageFolderLoader.IS_CHANGED(FOLDER, "index", 3)
    everything = ImageFolderLoader.IS_CHANGED(FOLDER, "all", 0)
    folder = fake.input / "datasets" / "cats"
    (folder / dataset[3].name.replace(".png", ".txt")).write_text("a new caption")
    assert ImageFolderLoader.IS_CHANGED(FOLDER, "index", 3) != index_3
    assert ImageFolderLoader.IS_CHANGED(FOLDER, "all", 0) != everything
    mtime_settle(folder)
    index_4 = ImageFolderLoader.IS_CHANGED(FOLDER, "index", 4)
    assert ImageFolderLoader.IS_CHANGED(FOLDER, "index", 4) == index_4
    Image.new("RGB", (4, 4)).save(folder / "0.png")  # every index moves up by one
    assert ImageFolderLoader.IS_CHANGED(FOLDER, "index", 4) != index_4
