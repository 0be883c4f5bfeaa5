"""Image Folder Loader and Text Gate in a real ComfyUI: prompts through POST /prompt, the gate's routes,
/history, a restart.

The walk: a 30-image dataset (mixed sizes and formats, CRLF/BOM/unicode captions, one corrupt file)
is walked in next mode, each image reviewed at a Text Gate wired to the loader's caption, image and
path, with a cancelled run, the corrupt file, a ComfyUI restart in the middle, and the end of the folder.
"""

from __future__ import annotations

import time
import uuid
from urllib.parse import quote

import numpy as np
import pytest
from comfy_server import status_messages
from loader_testkit import CORRUPT_INDEX, make_dataset, mtime_settle
from PIL import Image

from gates.constants import (
    LOADER_NODE_ID,
    ROUTE_CANCEL,
    ROUTE_CHOOSE,
    ROUTE_FOLDERS,
    ROUTE_LOADER_RESET,
    ROUTE_LOADER_STATE,
    TEXT_GATE_NODE_ID,
)

pytestmark = pytest.mark.comfy

SETTLE_SECONDS = 60.0
LOADER, GATE, SAVE = "1", "2", "3"


def walk_prompt(folder: str, tag: str, mode: str = "next", index: int = 0) -> dict:
    """Loader -> Text Gate (caption, image, path) -> SaveImage of the gate's image."""
    return {
        LOADER: {"class_type": LOADER_NODE_ID, "inputs": {"folder": folder, "mode": mode, "index": index,
                                                          "include_subfolders": False}},
        GATE: {"class_type": TEXT_GATE_NODE_ID, "inputs": {"text": [LOADER, 2], "image": [LOADER, 0],
                                                           "caption_path": [LOADER, 4], "trigger": ""}},
        SAVE: {"class_type": "SaveImage", "inputs": {"images": [GATE, 1], "filename_prefix": tag}},
    }


def loader_only(folder, tag: str, mode: str = "next", index: int = 0, folder_link=None) -> dict:
    prompt = {LOADER: {"class_type": LOADER_NODE_ID, "inputs": {"folder": folder, "mode": mode, "index": index}},
              SAVE: {"class_type": "SaveImage", "inputs": {"images": [LOADER, 0], "filename_prefix": tag}}}
    if folder_link is not None:
        prompt["9"] = {"class_type": "PrimitiveString", "inputs": {"value": folder_link}}
        prompt[LOADER]["inputs"]["folder"] = ["9", 0]
    return prompt


def state(server, folder: str) -> dict:
    return server.get_json(f"{ROUTE_LOADER_STATE}?folder={quote(folder)}")


def errors_of(history: dict) -> str:
    return " ".join(str(message[1].get("exception_message", "")) for message in history["status"]["messages"]
                    if message[0] == "execution_error")


def new_dataset(server, count=30) -> tuple[str, list]:
    folder = f"datasets/set_{uuid.uuid4().hex[:8]}"
    return folder, make_dataset(server.input_dir / folder, count)


# --- the walk -------------------------------------------------------------------------------------

def test_walk_thirty_images_across_a_cancel_a_corrupt_file_and_a_restart(fresh_comfy):
    server = fresh_comfy.start()
    folder = "datasets/cats"
    pictures = make_dataset(server.input_dir / folder)
    captions_before = {p.name: p for p in (server.input_dir / folder).iterdir()}
    tag = "walk"
    reviewed = []
    run = 0
    expected = 0
    while expected < len(pictures):
        picture = pictures[expected]
        prompt_id = server.queue(walk_prompt(folder, f"{tag}{run}"))
        run += 1
        if picture.corrupt:
            history = server.wait_done(prompt_id, SETTLE_SECONDS)
            assert history["status"]["status_str"] == "error"
            message = errors_of(history)
            assert f"{folder}/{picture.name} cannot be read" in message, message
            assert f"goes on with '{pictures[expected + 1].name}'" in message
            expected += 1
            continue
        [entry] = server.wait_pending(1, SETTLE_SECONDS, prompt_id=prompt_id)
        assert entry["kind"] == "text" and entry["text"] == picture.caption, picture.name
        assert entry["caption_file"] == f"{folder}/{picture.name.rsplit('.', 1)[0]}.txt"
        assert (entry["width"], entry["height"]) == picture.size
        if expected == 4 and run == 5:
            # Cancelled at the gate: this image must come back on the next run.
            assert server.post_json(ROUTE_CANCEL, {"token": entry["token"]})[0] == 200
            history = server.wait_done(prompt_id)
            assert history["status"]["status_str"] == "error"
            assert "execution_interrupted" in status_messages(history)
            assert state(server, folder)["next_index"] == 4
            continue
        # Reject keeps the caption files as they are (an Approve would write a .txt); the run succeeds.
        assert server.post_json(ROUTE_CHOOSE, {"token": entry["token"], "approve": False})[0] == 200
        history = server.wait_done(prompt_id)
        assert history["status"]["status_str"] == "success", status_messages(history)
        # On disk by the time the prompt is in /history.
        assert state(server, folder)["handed_out"] == expected + 1
        loader_ui = history["outputs"][LOADER]["datasete_loader"][0]
        assert loader_ui["text"] == f"{expected + 1} of 30" and loader_ui["path"] == f"{folder}/{picture.name}"
        reviewed.append(picture.name)
        expected += 1
        if expected == 12:
            server.stop()
            server.start()
            assert state(server, folder)["text"] == "next: 13 of 30"

    assert reviewed == [p.name for p in pictures if not p.corrupt]
    # Every image handed out: the loader blocks, the run succeeds, the node says done.
    prompt_id = server.queue(walk_prompt(folder, f"{tag}_done"))
    history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == "success" and server.pending() == []
    assert history["outputs"][LOADER]["datasete_loader"][0]["text"] == "done: 30 of 30"
    assert SAVE not in history["outputs"]
    assert state(server, folder)["text"] == "done: 30 of 30"
    # Reset starts over.
    status, answer = server.post_json(ROUTE_LOADER_RESET, {"folder": folder})
    assert status == 200 and answer["text"] == "next: 1 of 30"
    prompt_id = server.queue(walk_prompt(folder, f"{tag}_again"))
    [entry] = server.wait_pending(1, SETTLE_SECONDS, prompt_id=prompt_id)
    assert entry["text"] == pictures[0].caption
    server.post_json(ROUTE_CANCEL, {"token": entry["token"]})
    server.wait_done(prompt_id)
    assert {p.name: p for p in (server.input_dir / folder).iterdir()}.keys() == captions_before.keys()


# --- the Text Gate writes the caption -------------------------------------------------------------

def test_approve_writes_the_caption_beside_the_image_and_shows_in_history(server):
    folder, pictures = new_dataset(server, count=3)
    picture = pictures[1]  # a caption with a BOM and a \n ending
    prompt_id = server.queue(walk_prompt(folder, "cap", mode="index", index=1))
    [entry] = server.wait_pending(1, SETTLE_SECONDS, prompt_id=prompt_id)
    assert entry["text"] == picture.caption
    edited = picture.caption + " — edited ✍️ שלום"
    assert server.post_json(ROUTE_CHOOSE, {"token": entry["token"], "approve": True, "text": edited})[0] == 200
    history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == "success"
    assert history["outputs"][GATE]["text"] == [edited]
    txt = server.input_dir / folder / "2.txt"
    assert txt.read_bytes() == b"\xef\xbb\xbf" + edited.encode() + b"\n"
    assert history["outputs"][SAVE]["images"], "the image passed through the gate"
    saved = history["outputs"][SAVE]["images"][0]
    with Image.open(server.output_dir / saved["subfolder"] / saved["filename"]) as png:
        assert png.size == picture.size
        assert np.abs(np.asarray(png.convert("RGB"), int) - picture.colour).max() <= 3
    # The next run (index mode is cached only while the folder is unchanged) reads the new caption.
    prompt_id = server.queue(walk_prompt(folder, "cap2", mode="index", index=1))
    [entry] = server.wait_pending(1, SETTLE_SECONDS, prompt_id=prompt_id)
    assert entry["text"] == edited
    server.post_json(ROUTE_CHOOSE, {"token": entry["token"], "approve": False})
    server.wait_done(prompt_id)


# --- index and all --------------------------------------------------------------------------------

def test_all_runs_the_nodes_behind_once_per_image_of_any_size(server):
    folder, pictures = new_dataset(server, count=8)
    tag = f"all_{uuid.uuid4().hex[:6]}"
    prompt_id = server.queue(loader_only(folder, tag, mode="all"))
    history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == "success", status_messages(history)
    saved = history["outputs"][SAVE]["images"]
    assert len(saved) == 8
    sizes = []
    for entry in saved:
        with Image.open(server.output_dir / entry["subfolder"] / entry["filename"]) as png:
            sizes.append(png.size)
    assert sizes == [p.size for p in pictures] and len(set(sizes)) > 1
    assert history["outputs"][LOADER]["datasete_loader"][0]["text"] == "all 8 images"


def test_index_is_served_from_the_cache_until_the_folder_changes_and_next_never(server):
    folder, _pictures = new_dataset(server, count=4)
    mtime_settle(server.input_dir / folder)  # as between two runs a person starts

    def cached(prompt) -> bool:
        history = server.wait_done(server.queue(prompt))
        assert history["status"]["status_str"] == "success", status_messages(history)
        return any(message[0] == "execution_cached" and LOADER in message[1]["nodes"]
                   for message in history["status"]["messages"])

    tag = f"cache_{uuid.uuid4().hex[:6]}"
    assert not cached(loader_only(folder, tag, mode="index", index=2))
    assert cached(loader_only(folder, tag, mode="index", index=2))
    Image.new("RGB", (8, 8)).save(server.input_dir / folder / "0.png")
    mtime_settle(server.input_dir / folder)  # a change is seen however old the mtime it leaves
    assert not cached(loader_only(folder, tag, mode="index", index=2))
    assert not cached(loader_only(folder, tag))
    assert not cached(loader_only(folder, tag))


def test_an_index_out_of_range_fails_naming_the_folder_and_count(server):
    folder, _pictures = new_dataset(server, count=5)
    history = server.wait_done(server.queue(loader_only(folder, "oor", mode="index", index=5)))
    assert history["status"]["status_str"] == "error"
    assert f"index 5 is out of range: folder '{folder}' has 5 images" in errors_of(history)


def test_an_empty_folder_blocks_and_says_no_images(server):
    folder = f"datasets/empty_{uuid.uuid4().hex[:6]}"
    (server.input_dir / folder).mkdir(parents=True)
    history = server.wait_done(server.queue(loader_only(folder, "empty")))
    assert history["status"]["status_str"] == "success" and SAVE not in history["outputs"]
    assert history["outputs"][LOADER]["datasete_loader"][0]["text"] == "no images"


# --- hostile values through every door ------------------------------------------------------------

HOSTILE = ["..", "../", "../output", "a/../../x", "/etc", "/tmp", "C:\\Windows", "\\\\server\\share", "",
           "datasets/../../..", "a\x00b", "no_such_folder"]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_folder_is_refused_at_every_door(server, value):
    # Typed in: /prompt refuses it before anything runs, naming it.
    status, answer = server.post_json("/prompt", {"prompt": loader_only(value, "hostile"), "client_id": "t"})
    assert status == 400, answer
    details = " ".join(error["details"] for error in answer["node_errors"][LOADER]["errors"])
    assert repr(value)[1:-1][:40] in details
    # Linked from another node: the run fails naming it, and nothing is saved.
    history = server.wait_done(server.queue(loader_only(None, "hostile", folder_link=value)))
    assert history["status"]["status_str"] == "error" and SAVE not in history["outputs"]
    assert repr(value)[1:-1][:40] in errors_of(history)
    # The state and reset routes, at /x and /api/x.
    for prefix in ("", "/api"):
        status, answer = server.request("GET", f"{prefix}{ROUTE_LOADER_STATE}?folder={quote(value)}")
        assert status in (400, 404) and "error" in answer
        status, answer = server.post_json(f"{prefix}{ROUTE_LOADER_RESET}", {"folder": value})
        assert status in (400, 404) and "error" in answer


@pytest.mark.parametrize("value", ["../x.png", "/etc/passwd", "a/../../x.png", "C:\\x.png", "nowhere/x.png"])
def test_a_hostile_caption_path_is_refused_typed_or_linked_and_nothing_is_written(server, value):
    prompt = {GATE: {"class_type": TEXT_GATE_NODE_ID, "inputs": {"text": "x", "caption_path": value}},
              "4": {"class_type": "PreviewAny", "inputs": {"source": [GATE, 0]}}}
    status, answer = server.post_json("/prompt", {"prompt": prompt, "client_id": "t"})
    assert status == 400 and GATE in answer["node_errors"]
    prompt["9"] = {"class_type": "PrimitiveString", "inputs": {"value": value}}
    prompt[GATE]["inputs"]["caption_path"] = ["9", 0]
    history = server.wait_done(server.queue(prompt))
    assert history["status"]["status_str"] == "error" and server.pending() == []
    assert "caption_path" in errors_of(history) and repr(value)[1:-1][:30] in errors_of(history)


def test_the_picker_lists_the_dataset_folders(server):
    folder, _ = new_dataset(server, count=1)
    folders = server.get_json(ROUTE_FOLDERS)["folders"]
    assert folder in folders and "datasets" in folders and not any(f.startswith("gate_bus") for f in folders)


def test_the_corrupt_file_of_the_dataset_is_named_in_all_mode(server):
    folder, pictures = new_dataset(server, count=CORRUPT_INDEX + 2)
    history = server.wait_done(server.queue(loader_only(folder, "corrupt", mode="all")))
    assert history["status"]["status_str"] == "error"
    assert f"{folder}/{pictures[CORRUPT_INDEX].name} cannot be read" in errors_of(history)


# --- ComfyUI killed while it saves a caption and a walk position ----------------------------------

KILL_PAD = 1_000_000  # a caption near the 1 MiB limit, so a kill can land inside its write


def caption_state(raw: bytes, original: bytes) -> str:
    """"original", "version N", or "torn" for a caption file's bytes."""
    if raw == original:
        return "original"
    if not raw.endswith(b"\r\n"):  # the file's own line ending is kept on every save
        return "torn"
    text = raw[:-2].decode("utf-8", errors="replace")
    head, _, pad = text.partition(" ")
    if head.startswith("v") and head[1:].isdigit() and pad == "x" * KILL_PAD:
        return f"version {head[1:]}"
    return "torn"


def kill_while_saving(server, kills: int, seed: int = 11) -> None:
    import random

    folder = "datasets/killed"
    path = server.input_dir / folder
    path.mkdir(parents=True)
    originals = {}
    for index in range(kills + 1):
        Image.new("RGB", (8, 8), (index, 0, 0)).save(path / f"{index + 1}.png")
        originals[f"{index + 1}.txt"] = f"original {index + 1}\r\n".encode()
        (path / f"{index + 1}.txt").write_bytes(originals[f"{index + 1}.txt"])
    rng = random.Random(seed)
    outcomes = []
    for round_ in range(kills):
        server.start()
        prompt_id = server.queue(walk_prompt(folder, f"killed{round_}"))
        [entry] = server.wait_pending(1, SETTLE_SECONDS, prompt_id=prompt_id)
        body = {"token": entry["token"], "approve": True, "text": f"v{round_} " + "x" * KILL_PAD}
        assert server.post_json(ROUTE_CHOOSE, body)[0] == 200
        time.sleep(rng.uniform(0.0, 0.03))
        server.stop(kill=True)
        states = {name: caption_state((path / name).read_bytes(), raw) for name, raw in originals.items()}
        assert "torn" not in states.values(), states
        outcomes.append(states)
    # After a restart the walk position is readable (never a half-written file), and the next save
    # removes what the killed writers left beside the captions.
    server.start()
    status, answer = server.request("GET", f"{ROUTE_LOADER_STATE}?folder={quote(folder)}")
    assert status == 200, answer
    prompt_id = server.queue(walk_prompt(folder, "killed_final"))
    [entry] = server.wait_pending(1, SETTLE_SECONDS, prompt_id=prompt_id)
    assert server.post_json(ROUTE_CHOOSE, {"token": entry["token"], "approve": True, "text": "final"})[0] == 200
    assert server.wait_done(prompt_id)["status"]["status_str"] == "success"
    leftovers = sorted(p.name for p in path.iterdir() if p.name.startswith("."))
    written = [name for name in originals if (path / name).read_bytes() == b"final\r\n"]
    assert len(written) == 1
    assert not [name for name in leftovers if name.startswith(f".{written[0]}.")], leftovers


def test_a_caption_and_a_walk_saved_while_comfyui_is_killed_stay_whole(fresh_comfy):
    kill_while_saving(fresh_comfy, kills=3)


@pytest.mark.heavy
def test_a_caption_and_a_walk_saved_while_comfyui_is_killed_stay_whole_heavy(fresh_comfy):
    kill_while_saving(fresh_comfy, kills=20)
