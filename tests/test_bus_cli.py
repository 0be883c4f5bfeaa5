"""python -m gates.bus, run as a person would: a subprocess from the repository root."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from bus_testkit import distinct_frames, snapshot, solid_frames, solid_mask
from cli_testkit import run_in_process, run_module
from PIL import Image

from gates import bus, imaging, slots


def cli(*args, input_dir: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_module("gates.bus", *args, input_dir=input_dir, env=env)


def cli_here(*args, input_dir: Path | None = None) -> subprocess.CompletedProcess:
    """The same command run in this process (bus.main), for the many variants; much faster than a subprocess."""
    return run_in_process(bus.main, *args, input_dir=input_dir)


@pytest.fixture
def inputs(tmp_path):
    """An input folder, and image files of several kinds to put."""
    folder = tmp_path / "input"
    folder.mkdir()
    files = tmp_path / "files"
    files.mkdir()
    frames = imaging.image_to_uint8(distinct_frames(3, height=6, width=5))
    for index in range(3):
        Image.fromarray(frames[index]).save(files / f"f{index}.png")
    Image.fromarray(frames[0]).save(files / "f0.bmp")
    Image.new("RGBA", (5, 6), (10, 20, 30, 40)).save(files / "alpha.png")
    Image.new("L", (5, 6), 200).save(files / "mask.png")
    Image.new("L", (4, 4), 200).save(files / "small_mask.png")
    Image.new("RGB", (7, 7)).save(files / "big.png")
    (files / "junk.png").write_bytes(b"not an image")
    return {"input": folder, "files": files, "frames": frames, "bus": folder / "gate_bus"}


def test_help_explains_slots_and_exit_codes():
    done = cli("--help")
    assert done.returncode == 0
    for text in ("gate_bus/<ID>/", "send_id", "get_id", "slot.json", "exit codes", "--input-dir",
                 "7  export would overwrite"):
        assert text in done.stdout
    for command in ("list", "show", "put", "export", "rm"):
        assert command in done.stdout


def test_without_comfyui_and_without_input_dir_it_asks_for_input_dir():
    done = cli("list")
    assert done.returncode == bus.EXIT_USAGE
    assert "--input-dir" in done.stderr and done.stdout == ""


def test_inside_comfyui_the_input_dir_defaults_to_comfyuis(tmp_path):
    """"Inside ComfyUI" means folder_paths is importable; a stand-in module says where its input folder is."""
    fake = tmp_path / "fake_comfy"
    fake.mkdir()
    (tmp_path / "comfy_input").mkdir()
    (fake / "folder_paths.py").write_text(
        f"def get_input_directory():\n    return {str(tmp_path / 'comfy_input')!r}\n")
    env = {"PYTHONPATH": str(fake)}
    assert cli("put", "cp1", tmp_path / "nothing.png", env=env).returncode == bus.EXIT_BAD_INPUT
    image = tmp_path / "one.png"
    Image.new("RGB", (3, 2), (1, 2, 3)).save(image)
    assert cli("put", "cp1", image, env=env).returncode == 0
    assert (tmp_path / "comfy_input" / "gate_bus" / "cp1" / "image.png").is_file()
    assert cli("list", env=env).stdout.split() == ["cp1"]


def test_a_missing_input_dir_is_a_usage_error(tmp_path):
    done = cli("list", input_dir=tmp_path / "nope")
    assert done.returncode == bus.EXIT_USAGE and "does not exist" in done.stderr


def test_put_list_show_export_rm(inputs, tmp_path):
    files = inputs["files"]
    done = cli("put", "restart_point", files / "f0.png", files / "f1.png", files / "f2.png",
               "--mask", files / "mask.png", input_dir=inputs["input"])
    assert done.returncode == 0, done.stderr
    assert "published restart_point: 3 frame(s) 5x6" in done.stdout

    image, mask = slots.bus_load(inputs["bus"], "restart_point")
    assert np.array_equal(imaging.image_to_uint8(image), inputs["frames"])
    assert torch.all(mask == 200 / 255)

    assert cli("list", input_dir=inputs["input"]).stdout.split() == ["restart_point"]
    assert json.loads(cli("list", "--json", input_dir=inputs["input"]).stdout) == {"ids": ["restart_point"]}

    shown = cli("show", "restart_point", input_dir=inputs["input"])
    assert shown.returncode == 0
    for text in ("frames    3", "size      5x6", "channels  3 (RGB)", "mask      yes, one for every frame",
                 "image.png", "frame_0002.png", "mask.png", "modified"):
        assert text in shown.stdout
    details = json.loads(cli("show", "restart_point", "--json", input_dir=inputs["input"]).stdout)
    assert details["frames"] == 3 and details["width"] == 5 and details["height"] == 6
    assert details["channels"] == 3 and details["mask"] is True
    assert set(details["files"]) == {"image.png", "frame_0001.png", "frame_0002.png", "mask.png", "slot.json"}
    assert all(size > 0 for size in details["files"].values())

    out = tmp_path / "out"
    done = cli("export", "restart_point", out, input_dir=inputs["input"])
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["frame_0000.png", "frame_0001.png", "frame_0002.png",
                                                     "mask.png"]
    for index in range(3):
        assert np.array_equal(imaging.read_image_pixels(out / f"frame_{index:04d}.png"), inputs["frames"][index])
    assert np.all(imaging.read_mask_pixels(out / "mask.png") == 200)

    done = cli("rm", "restart_point", input_dir=inputs["input"])
    assert done.returncode == 0 and "removed restart_point" in done.stdout
    assert os.listdir(inputs["bus"]) == []
    assert cli("list", input_dir=inputs["input"]).stdout == ""


def test_put_keeps_alpha_and_gives_it_to_every_frame(inputs):
    files = inputs["files"]
    done = cli_here("put", "a", files / "alpha.png", files / "f1.png", input_dir=inputs["input"])
    assert done.returncode == 0, done.stderr
    image, mask = slots.bus_load(inputs["bus"], "a")
    assert image.shape == (2, 6, 5, 4)
    assert round(float(image[0, 0, 0, 3]) * 255) == 40 and torch.all(image[1, ..., 3] == 1.0)
    assert torch.all(mask == 0)
    assert "channels  4 (RGBA)" in cli_here("show", "a", input_dir=inputs["input"]).stdout


def test_put_reads_any_format_pillow_reads(inputs):
    assert cli_here("put", "bmp", inputs["files"] / "f0.bmp", input_dir=inputs["input"]).returncode == 0
    image, _ = slots.bus_load(inputs["bus"], "bmp")
    assert np.array_equal(imaging.image_to_uint8(image)[0], inputs["frames"][0])


def test_put_replaces_a_slot_whole(inputs):
    files = inputs["files"]
    cli_here("put", "cp1", files / "f0.png", files / "f1.png", files / "f2.png", "--mask", files / "mask.png",
        input_dir=inputs["input"])
    assert cli_here("put", "cp1", files / "f2.png", input_dir=inputs["input"]).returncode == 0
    image, mask = slots.bus_load(inputs["bus"], "cp1")
    assert image.shape[0] == 1 and torch.all(mask == 0)
    assert sorted(p.name for p in (inputs["bus"] / "cp1").iterdir()) == ["image.png", "slot.json"]


@pytest.mark.parametrize("args, message", [
    (["{f}/junk.png"], "cannot read image"),
    (["{f}/missing.png"], "cannot read image"),
    (["{f}/f0.png", "{f}/big.png"], "a batch needs one size"),
    (["{f}/f0.png", "--mask", "{f}/small_mask.png"], "mask"),
    (["{f}/f0.png", "--mask", "{f}/junk.png"], "cannot read mask"),
])
def test_put_refuses_unusable_files_with_exit_6_and_writes_nothing(inputs, tmp_path, args, message):
    cli_here("put", "cp1", inputs["files"] / "f1.png", input_dir=inputs["input"])
    before = snapshot(tmp_path)
    done = cli_here("put", "cp1", *[a.replace("{f}", str(inputs["files"])) for a in args], input_dir=inputs["input"])
    assert done.returncode == bus.EXIT_BAD_INPUT
    assert message in done.stderr and done.stderr.startswith("python -m gates.bus: error:")
    assert snapshot(tmp_path) == before


def test_a_mask_of_the_wrong_size_names_both_sizes(inputs):
    done = cli_here("put", "cp1", inputs["files"] / "f0.png", "--mask", inputs["files"] / "small_mask.png",
               input_dir=inputs["input"])
    assert "4x4" in done.stderr and "5x6" in done.stderr


def test_export_refuses_to_overwrite_without_force(inputs, tmp_path):
    files = inputs["files"]
    cli("put", "cp1", files / "f0.png", files / "f1.png", input_dir=inputs["input"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "frame_0001.png").write_bytes(b"mine")
    (out / "other.txt").write_text("keep")
    done = cli("export", "cp1", out, input_dir=inputs["input"])
    assert done.returncode == bus.EXIT_WOULD_OVERWRITE
    assert "frame_0001.png" in done.stderr and "--force" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["frame_0001.png", "other.txt"]  # nothing written at all
    assert (out / "frame_0001.png").read_bytes() == b"mine"

    done = cli("export", "cp1", out, "--force", input_dir=inputs["input"])
    assert done.returncode == 0
    assert np.array_equal(imaging.read_image_pixels(out / "frame_0001.png"), inputs["frames"][1])
    assert (out / "other.txt").read_text() == "keep"
    assert not any(p.name.endswith(".part") for p in out.iterdir())


def test_export_into_a_file_is_refused(inputs, tmp_path):
    cli_here("put", "cp1", inputs["files"] / "f0.png", input_dir=inputs["input"])
    target = tmp_path / "a_file"
    target.write_text("x")
    done = cli_here("export", "cp1", target, input_dir=inputs["input"])
    assert done.returncode == bus.EXIT_WOULD_OVERWRITE and "not a folder" in done.stderr


def test_export_of_per_frame_masks_names_them_by_frame(inputs, tmp_path):
    slots.bus_save(inputs["bus"], "pm", distinct_frames(2), torch.stack([torch.zeros(6, 5), torch.ones(6, 5)]))
    out = tmp_path / "out"
    assert cli_here("export", "pm", out, input_dir=inputs["input"]).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["frame_0000.png", "frame_0001.png", "mask_0000.png",
                                                     "mask_0001.png"]
    assert np.all(imaging.read_mask_pixels(out / "mask_0001.png") == 255)


@pytest.mark.parametrize("command", [["show", "ghost"], ["export", "ghost", "{out}"], ["rm", "ghost"]])
def test_a_missing_slot_is_exit_4(inputs, tmp_path, command):
    done = cli_here(*[c.replace("{out}", str(tmp_path / "out")) for c in command], input_dir=inputs["input"])
    assert done.returncode == bus.EXIT_NO_SLOT and "'ghost'" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_corrupt_slot_is_exit_5_naming_it(inputs, tmp_path):
    slots.bus_save(inputs["bus"], "bad", solid_frames([1, 2]), solid_mask(3))
    (inputs["bus"] / "bad" / "frame_0001.png").unlink()
    for command in (["show", "bad"], ["export", "bad", tmp_path / "out"]):
        done = cli(*command, input_dir=inputs["input"])
        assert done.returncode == bus.EXIT_BAD_SLOT
        assert "slot 'bad'" in done.stderr and "frame_0001.png is missing" in done.stderr
    assert not (tmp_path / "out").exists()
    assert cli("rm", "bad", input_dir=inputs["input"]).returncode == 0  # a broken slot can still be removed


@pytest.mark.parametrize("bad_id", ["..", "../x", "a/b", "x" * 65, "café", "CON", "cp1.", ".hidden"])
def test_a_bad_id_is_exit_3_naming_it(inputs, tmp_path, bad_id):
    before = snapshot(tmp_path)
    done = cli_here("put", "--", bad_id, inputs["files"] / "f0.png", input_dir=inputs["input"])
    assert done.returncode == bus.EXIT_BAD_ID and repr(bad_id) in done.stderr
    assert snapshot(tmp_path) == before


def test_an_id_that_looks_like_an_option_is_a_usage_error(inputs):
    done = cli("rm", "-x", input_dir=inputs["input"])
    assert done.returncode == bus.EXIT_USAGE


def test_a_read_only_bus_folder_is_exit_1(inputs):
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    inputs["bus"].mkdir()
    inputs["bus"].chmod(0o500)
    try:
        done = cli("put", "cp1", inputs["files"] / "f0.png", input_dir=inputs["input"])
    finally:
        inputs["bus"].chmod(0o700)
    assert done.returncode == bus.EXIT_OS_ERROR and "Permission denied" in done.stderr


def test_a_disk_error_while_publishing_is_exit_1(inputs, monkeypatch, capsys):
    def disk_full(path, pixels, *args):
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(imaging, "write_png", disk_full)
    code = bus.main(["--input-dir", str(inputs["input"]), "put", "cp1", str(inputs["files"] / "f0.png")])
    assert code == bus.EXIT_OS_ERROR and "No space left on device" in capsys.readouterr().err
    assert [p.name for p in inputs["bus"].iterdir()] == []


def test_exit_codes_and_messages_from_the_shell(inputs, tmp_path):
    """One of each refusal through a real `python -m gates.bus` process (the variants above run in-process)."""
    before = snapshot(tmp_path)
    bad_id = cli("put", "--", "../escape", inputs["files"] / "f0.png", input_dir=inputs["input"])
    assert bad_id.returncode == bus.EXIT_BAD_ID and "'../escape'" in bad_id.stderr
    missing = cli("show", "ghost", input_dir=inputs["input"])
    assert missing.returncode == bus.EXIT_NO_SLOT and "'ghost'" in missing.stderr
    unusable = cli("put", "cp1", inputs["files"] / "junk.png", input_dir=inputs["input"])
    assert unusable.returncode == bus.EXIT_BAD_INPUT and "junk.png" in unusable.stderr
    assert snapshot(tmp_path) == before
    for done in (bad_id, missing, unusable):
        assert done.stdout == "" and done.stderr.startswith("python -m gates.bus: error:")


def test_a_bus_folder_that_is_a_file_is_exit_1(inputs):
    """Works as root too (unlike a permission test): the disk refuses to make slots inside a file."""
    inputs["bus"].write_bytes(b"not a folder")
    done = cli_here("put", "cp1", inputs["files"] / "f0.png", input_dir=inputs["input"])
    assert done.returncode == bus.EXIT_OS_ERROR and "'cp1'" in done.stderr
    assert inputs["bus"].read_bytes() == b"not a folder"
