"""The Text Gate without ComfyUI: where and how a caption is written, the answer's rules, and run() with
ComfyUI's modules faked (comfy_fakes.FakeComfy), waiting on its own thread as in the prompt worker."""

from __future__ import annotations

import math
import os
import stat

import pytest
import torch
from comfy_fakes import FakeComfy, RunningNode, wait_for_pause

from gates import captions, folders
from gates.constants import (
    CATEGORY,
    EVENT_PREVIEW,
    EVENT_RESOLVED,
    KIND_TEXT,
    MAX_TEXT_BYTES,
    PREVIEW_PREFIX,
    SCRATCH_SUFFIX,
    TEXT_GATE_DISPLAY_NAME,
    TEXT_GATE_NODE_ID,
)
from gates.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from gates.nodes.text_gate import TextGate
from gates.pause import BadAnswer, GateBus

UNICODE = "猫が座っている — مرحبا بالعالم 🐈‍⬛ e\u0301 ok\r\n  two  "
HOSTILE_PATHS = ["..", "../x.png", "a/../../x.png", "/etc/passwd", "C:\\x.png", "\\\\server\\x.png", "a\x00.png",
                 "x" * 5000, "datasets/../../../etc/x.png"]


# --- where a caption goes ---------------------------------------------------------------------------

@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "input" / "datasets" / "cats"
    folder.mkdir(parents=True)
    return tmp_path / "input"


@pytest.mark.parametrize(("value", "expected"), [
    ("datasets/cats/1.png", "datasets/cats/1.txt"),
    ("datasets\\cats\\1.png", "datasets/cats/1.txt"),
    ("datasets/cats/1.TXT", "datasets/cats/1.TXT"),
    ("datasets/cats/a.b.jpg", "datasets/cats/a.b.txt"),
    ("datasets/cats/1.caption", "datasets/cats/1.txt"),
    ("datasets/cats/noext", "datasets/cats/noext.txt"),
])
def test_the_caption_is_the_same_stem_txt_beside_the_image(inputs, value, expected):
    shown, target = captions.caption_target(inputs, value)
    assert shown == expected and target == inputs.joinpath(*expected.split("/"))


@pytest.mark.parametrize("value", HOSTILE_PATHS)
def test_a_caption_path_outside_the_input_folder_is_refused_by_name(inputs, value):
    with pytest.raises(captions.CaptionPathError) as caught:
        captions.caption_target(inputs, value)
    assert repr(value[:60])[:-1] in str(caught.value)


def test_a_caption_path_whose_folder_is_missing_or_whose_txt_is_a_folder_is_refused(inputs):
    with pytest.raises(captions.CaptionPathError, match="its folder does not exist.*nothing was written"):
        captions.caption_target(inputs, "datasets/dogs/1.png")
    (inputs / "datasets" / "cats" / "2.txt").mkdir()
    with pytest.raises(captions.CaptionPathError, match="is not a file"):
        captions.caption_target(inputs, "datasets/cats/2.png")


def test_a_link_inside_the_input_folder_is_followed_for_captions_too(inputs, tmp_path):
    elsewhere = tmp_path / "other_disk"
    elsewhere.mkdir()
    (inputs / "linked").symlink_to(elsewhere, target_is_directory=True)
    shown, target = captions.caption_target(inputs, "linked/1.png")
    captions.write_caption(target, "followed")
    assert (elsewhere / "1.txt").read_bytes() == b"followed"


# --- how it is written ------------------------------------------------------------------------------

@pytest.mark.parametrize(("existing", "text", "written"), [
    (None, "a cat", b"a cat"),
    (None, UNICODE, UNICODE.encode()),
    (None, "ends with a newline\n", b"ends with a newline\n\n"),
    (None, "ends with crlf\r\n", b"ends with crlf\r\n\r\n"),
    (b"old\n", "new", b"new\n"),
    (b"old\r\n", "new", b"new\r\n"),
    (b"\xef\xbb\xbfold", "new", b"\xef\xbb\xbfnew"),
    (b"\xef\xbb\xbfold\r\n", "new", b"\xef\xbb\xbfnew\r\n"),
    (b"old", "", b""),
])
def test_a_written_caption_keeps_the_files_conventions(existing, text, written):
    assert captions.caption_bytes(text, existing) == written


@pytest.mark.parametrize("existing", [None, b"x", b"x\n", b"x\r\n", b"\xef\xbb\xbfx\n", b"\xef\xbb\xbfx"])
@pytest.mark.parametrize("text", ["", "a", "a\n", "a\r\n", "\n", "a\n\n", UNICODE, "\ufeffbom in the text", "a\r"])
def test_the_loader_reads_back_exactly_the_text_written(existing, text):
    assert folders.decode_caption(captions.caption_bytes(text, existing)) == text


@pytest.mark.parametrize("raw", [b"a cat", b"a cat\n", b"a cat\r\n", b"\xef\xbb\xbfa cat\r\n", b"l1\r\nl2\r\n",
                                 "猫\n".encode()])
def test_approving_an_unchanged_caption_rewrites_the_same_bytes(raw):
    assert captions.caption_bytes(folders.decode_caption(raw), raw) == raw


def test_write_caption_keeps_the_mode_and_sweeps_a_dead_writers_scratch(inputs):
    target = inputs / "datasets" / "cats" / "1.txt"
    target.write_bytes(b"old\n")
    os.chmod(target, 0o600)
    leftover = target.with_name(f".1.txt.999999999-deadbeef-000000000000{SCRATCH_SUFFIX}")
    leftover.write_bytes(b"half a capt")
    assert captions.write_caption(target, "new") == b"new\n"
    assert target.read_bytes() == b"new\n" and stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["1.txt"]


# --- the answer -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "message"), [
    ({}, "approve"),
    ({"text": "x"}, "approve"),
    ({"approve": "true", "text": "x"}, "true or false"),
    ({"approve": 1, "text": "x"}, "true or false"),
    ({"approve": None, "text": "x"}, "true or false"),
    ({"approve": True}, "must be a string"),
    ({"approve": True, "text": None}, "must be a string"),
    ({"approve": True, "text": 5}, "must be a string"),
    ({"approve": True, "text": ["x"]}, "must be a string"),
    ({"approve": False, "text": 5}, "must be a string"),
    ({"approve": True, "text": "x" * (MAX_TEXT_BYTES + 1)}, "over"),
    ({"approve": True, "text": "猫" * (MAX_TEXT_BYTES // 3 + 1)}, "bytes of UTF-8"),
    ({"approve": True, "text": "lone \ud800 surrogate"}, "lone surrogate"),
])
def test_a_bad_answer_is_refused(body, message):
    with pytest.raises(BadAnswer, match=message):
        captions.parse_text_answer(None, body)


def test_good_answers():
    assert captions.parse_text_answer(None, {"approve": True, "text": UNICODE}) == {"approve": True, "text": UNICODE}
    assert captions.parse_text_answer(None, {"approve": True, "text": "x" * MAX_TEXT_BYTES})["text"]
    assert captions.parse_text_answer(None, {"approve": False}) == {"approve": False, "text": None}
    assert captions.parse_text_answer(None, {"approve": False, "text": ""}) == {"approve": False, "text": ""}


@pytest.mark.parametrize(("text", "trigger", "present"), [
    ("ohwx man, smiling", "ohwx", True),
    ("OHWX man", "ohwx", True),
    ("ohwxman", "ohwx", False),
    ("a man", "ohwx", False),
    ("photo of ohwx man.", "ohwx man", True),
    ("anything", "", None),
    ("anything", "   ", None),
    ("c++ code", "c++", True),
])
def test_the_trigger_is_a_whole_word_in_any_case(text, trigger, present):
    assert captions.has_trigger(text, trigger) is present


# --- the node ---------------------------------------------------------------------------------------

@pytest.fixture
def fake(tmp_path):
    fake = FakeComfy(tmp_path)
    (fake.input / "datasets" / "cats").mkdir(parents=True)
    with fake.installed():
        yield fake


@pytest.fixture
def bus():
    return GateBus()


@pytest.fixture
def node(bus):
    gate = TextGate()
    gate.bus = bus
    return gate


def test_the_node_is_registered_with_its_names_and_tooltips():
    assert NODE_CLASS_MAPPINGS[TEXT_GATE_NODE_ID] is TextGate
    assert NODE_DISPLAY_NAME_MAPPINGS[TEXT_GATE_NODE_ID] == TEXT_GATE_DISPLAY_NAME == "Text Gate"
    assert TextGate.CATEGORY == CATEGORY and TextGate.DESCRIPTION
    assert TextGate.RETURN_NAMES == ("text", "image") and len(TextGate.OUTPUT_TOOLTIPS) == 2
    inputs = TextGate.INPUT_TYPES()
    assert inputs["required"]["text"][1]["multiline"] is True
    for section in ("required", "optional"):
        for name, (_type, options) in inputs[section].items():
            assert options.get("tooltip"), f"{name} has no tooltip"
    assert math.isnan(TextGate.IS_CHANGED(text="x"))


def test_approve_passes_the_edited_text_exactly_and_writes_the_caption(fake, bus, node):
    caption = fake.input / "datasets" / "cats" / "7.txt"
    caption.write_bytes(b"\xef\xbb\xbfold caption\r\n")
    image = torch.rand(2, 5, 7, 3)
    running = RunningNode(node, text="old caption", unique_id="9", image=image, caption_path="datasets/cats/7.png",
                      trigger="cat")
    entry = wait_for_pause(bus, running)
    assert entry["kind"] == KIND_TEXT and entry["text"] == "old caption" and entry["node_id"] == "9"
    assert entry["caption_file"] == "datasets/cats/7.txt" and entry["trigger"] == "cat"
    assert entry["trigger_present"] is False
    assert entry["width"] == 7 and entry["height"] == 5 and entry["frames"] == 2 and len(entry["images"]) == 2
    assert all((fake.temp / image_entry["filename"]).exists() for image_entry in entry["images"])
    assert fake.events_of(EVENT_PREVIEW)[-1]["token"] == entry["token"]
    bus.answer(entry["token"], {"approve": True, "text": UNICODE})
    running.join()
    assert running.error is None
    assert running.result["result"][0] == UNICODE and running.result["result"][1] is image
    assert running.result["ui"] == {"text": [UNICODE], "approved": [True], "caption_file": ["datasets/cats/7.txt"]}
    assert caption.read_bytes() == b"\xef\xbb\xbf" + UNICODE.encode() + b"\r\n"
    assert not list(fake.temp.glob(f"{PREVIEW_PREFIX}*")), "the previews are removed"
    resolved = fake.events_of(EVENT_RESOLVED)[-1]
    assert resolved["approved"] is True and resolved["written"] == "datasets/cats/7.txt"


def test_reject_blocks_every_output_and_writes_nothing(fake, bus, node):
    running = RunningNode(node, text="keep", caption_path="datasets/cats/1.png", image=torch.rand(1, 4, 4, 3))
    entry = wait_for_pause(bus, running)
    bus.answer(entry["token"], {"approve": False, "text": "edited but rejected"})
    running.join()
    assert running.error is None
    assert all(isinstance(out, fake.ExecutionBlocker) for out in running.result["result"])
    assert running.result["ui"] == {"approved": [False]}
    assert not (fake.input / "datasets" / "cats" / "1.txt").exists()


def test_cancel_and_interrupt_end_the_run_as_interrupted_and_write_nothing(fake, bus, node):
    running = RunningNode(node, text="x", caption_path="datasets/cats/1.png")
    entry = wait_for_pause(bus, running)
    bus.cancel(entry["token"])
    running.join()
    assert isinstance(running.error, fake.InterruptProcessingException)
    running = RunningNode(node, text="x", caption_path="datasets/cats/1.png")
    wait_for_pause(bus, running)
    fake.interrupt_flag.set()
    running.join()
    assert isinstance(running.error, fake.InterruptProcessingException)
    assert bus.pending() == [] and not (fake.input / "datasets" / "cats" / "1.txt").exists()


def test_without_an_image_or_caption_path_it_passes_the_text_only(fake, bus, node):
    running = RunningNode(node, text="plain")
    entry = wait_for_pause(bus, running)
    assert entry["images"] == [] and entry["caption_file"] is None and entry["trigger_present"] is None
    bus.answer(entry["token"], {"approve": True, "text": "plain, edited"})
    running.join()
    text, image = running.result["result"]
    assert text == "plain, edited" and isinstance(image, fake.ExecutionBlocker)
    assert sorted(p.name for p in (fake.input / "datasets" / "cats").iterdir()) == []


@pytest.mark.parametrize("value", HOSTILE_PATHS + ["datasets/dogs/1.png"])
def test_a_bad_caption_path_fails_before_pausing_and_writes_nothing(fake, bus, node, value):
    before = sorted(fake.root.rglob("*"))
    with pytest.raises(captions.CaptionPathError) as caught:
        node.run(text="x", caption_path=value)
    assert repr(value[:60])[:-1] in str(caught.value)
    assert bus.pending() == [] and fake.events_of(EVENT_PREVIEW) == []
    assert sorted(fake.root.rglob("*")) == before


@pytest.mark.parametrize("value", HOSTILE_PATHS)
def test_validate_inputs_refuses_a_bad_typed_caption_path(fake, value):
    answer = TextGate.VALIDATE_INPUTS(value)
    assert answer is not True and repr(value[:60])[:-1] in answer


def test_validate_inputs_lets_an_empty_linked_or_good_caption_path_through(fake):
    assert TextGate.VALIDATE_INPUTS("") is True
    assert TextGate.VALIDATE_INPUTS(None) is True
    assert TextGate.VALIDATE_INPUTS("datasets/cats/1.png") is True


def test_a_caption_that_cannot_be_written_pauses_again_with_the_edit_and_the_reason(fake, bus, node):
    folder = fake.input / "datasets" / "cats"
    running = RunningNode(node, text="before", caption_path="datasets/cats/1.png")
    first = wait_for_pause(bus, running)
    os.chmod(folder, 0o500)  # the disk refuses (root ignores modes: then make the .txt a folder instead)
    if os.access(folder, os.W_OK):
        os.chmod(folder, 0o700)
        (folder / "1.txt").mkdir()
    try:
        bus.answer(first["token"], {"approve": True, "text": "my careful edit"})
        second = wait_for_pause(bus, running, after=first["token"])
        assert second["text"] == "my careful edit" and "could not write datasets/cats/1.txt" in second["error"]
    finally:
        os.chmod(folder, 0o700)
        if (folder / "1.txt").is_dir():
            (folder / "1.txt").rmdir()
    bus.answer(second["token"], {"approve": True, "text": "my careful edit"})
    running.join()
    assert running.error is None and running.result["result"][0] == "my careful edit"
    assert (folder / "1.txt").read_bytes() == b"my careful edit"
    assert [p.name for p in folder.iterdir()] == ["1.txt"]


def test_the_pending_entry_names_the_workflow_and_the_node_that_queued_it(fake, bus, node):
    workflow_id = "5f0c2d3e-1a2b-4c3d-9e8f-0a1b2c3d4e5f"
    running = RunningNode(node, text="a cat", unique_id="12:5", prompt={"12:5": {"_meta": {"title": "Caption check"}}},
                          extra_pnginfo={"workflow": {"id": workflow_id, "nodes": []}})
    entry = wait_for_pause(bus, running)
    assert entry["node_id"] == "12:5" and entry["workflow_id"] == workflow_id
    assert entry["node_title"] == "Caption check"
    bus.cancel(entry["token"])
    running.join()
