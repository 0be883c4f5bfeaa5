"""python -m gates.pool, run as a person would (a subprocess from the repository root), and in-process
for the many variants."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_testkit import run_in_process, run_module
from PIL import Image

from gates import pools
from gates.cli import pool as pool_cli


def cli(*args, input_dir: Path | None = None) -> subprocess.CompletedProcess:
    return run_module("gates.pool", *args, input_dir=input_dir)


def here(*args, input_dir: Path | None = None) -> subprocess.CompletedProcess:
    return run_in_process(pool_cli.main, *args, input_dir=input_dir)


@pytest.fixture
def setup(tmp_path):
    """(input folder, folder of image files: a0..a3.png, a1.txt beside a1.png, an RGBA one, junk)."""
    inputs = tmp_path / "input"
    inputs.mkdir()
    files = tmp_path / "files"
    files.mkdir()
    for index in range(4):
        Image.new("RGB", (8 + index, 6), (40 * index, 100, 200 - index)).save(files / f"a{index}.png")
    (files / "a1.txt").write_text("a caption from the dataset\n", encoding="utf-8")
    Image.new("RGBA", (5, 5), (1, 2, 3, 4)).save(files / "alpha.png")
    (files / "junk.png").write_bytes(b"not an image")
    return inputs, files


def pool_files(inputs: Path, pool: str, state: str) -> list[str]:
    folder = inputs / "gate_pool" / pool / state
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_add_list_show_move_export_rm_through_a_real_process(setup, tmp_path):
    inputs, files = setup
    done = cli("add", "cats", *(files / f"a{i}.png" for i in range(4)), files / "alpha.png", input_dir=inputs)
    assert done.returncode == 0, done.stderr
    assert "added 5 · pending 5 · kept 0 · rejected 0" in done.stdout
    assert pool_files(inputs, "cats", "pending") == sorted(
        [f"00000{n}.png" for n in range(1, 6)] + ["000002.txt"])
    assert (inputs / "gate_pool/cats/pending/000002.txt").read_bytes() == b"a caption from the dataset"
    with Image.open(inputs / "gate_pool/cats/pending/000005.png") as png:
        assert png.mode == "RGBA" and png.getpixel((0, 0)) == (1, 2, 3, 4)

    again = cli("add", "cats", files / "a0.png", input_dir=inputs)
    assert again.returncode == 0 and "1 duplicate skipped" in again.stdout and "a0.png" in again.stdout

    listed = cli("list", "--json", input_dir=inputs)
    assert json.loads(listed.stdout) == {"pools": [{"id": "cats", "pending": 5, "kept": 0, "rejected": 0}]}

    assert cli("move", "cats", "000001", "000002", "--to", "kept", input_dir=inputs).returncode == 0
    assert cli("move", "cats", "000003", "--to", "rejected", input_dir=inputs).returncode == 0
    shown = json.loads(cli("show", "cats", "--json", input_dir=inputs).stdout)
    assert (shown["pending"], shown["kept"], shown["rejected"]) == (2, 2, 1)
    assert [(i["name"], i["state"], i["caption"]) for i in shown["items"]] == [
        ("000004", "pending", None), ("000005", "pending", None), ("000001", "kept", None),
        ("000002", "kept", "a caption from the dataset"), ("000003", "rejected", None)]

    out = tmp_path / "train"
    done = cli("export", "cats", out, "--repeats", 10, "--concept", "ohwx cat", input_dir=inputs)
    assert done.returncode == 0, done.stderr
    concept = out / "10_ohwx cat"
    assert sorted(os.listdir(concept)) == ["000001.png", "000002.png", "000002.txt"]
    assert (concept / "000002.png").read_bytes() == (inputs / "gate_pool/cats/kept/000002.png").read_bytes()
    assert (concept / "000002.txt").read_bytes() == b"a caption from the dataset"
    refused = cli("export", "cats", out, "--repeats", 10, "--concept", "ohwx cat", input_dir=inputs)
    assert refused.returncode == pool_cli.EXIT_WOULD_OVERWRITE and "--force" in refused.stderr
    assert cli("export", "cats", out, "--repeats", 10, "--concept", "ohwx cat", "--force",
               input_dir=inputs).returncode == 0

    assert cli("rm", "cats", "000004", input_dir=inputs).returncode == 0
    assert pool_files(inputs, "cats", "pending") == ["000005.png"]
    refused = cli("rm", "cats", input_dir=inputs)
    assert refused.returncode == pool_cli.EXIT_WOULD_OVERWRITE and "2 kept" in refused.stderr
    assert cli("rm", "cats", "--force", input_dir=inputs).returncode == 0
    assert os.listdir(inputs / "gate_pool") == []


@pytest.mark.parametrize(("args", "code", "message"), [
    (["show", "../x"], pool_cli.EXIT_BAD_ID, "invalid pool id '../x'"),
    (["add", "a/b", "x.png"], pool_cli.EXIT_BAD_ID, "invalid pool id 'a/b'"),
    (["show", "CON"], pool_cli.EXIT_BAD_ID, "reserved device name"),
    (["rm", "p", "../../etc"], pool_cli.EXIT_BAD_ID, "invalid item name"),
    (["show", "nope"], pool_cli.EXIT_NO_POOL, "pool 'nope' does not exist"),
    (["export", "nope", "out", "--concept", "c"], pool_cli.EXIT_NO_POOL, "does not exist"),
    (["move", "p", "000009", "--to", "kept"], pool_cli.EXIT_NO_POOL, "has no item 000009"),
    (["add", "p", "{files}/junk.png"], pool_cli.EXIT_BAD_INPUT, "junk.png"),
    (["add", "p", "{files}/missing.png"], pool_cli.EXIT_BAD_INPUT, "missing.png"),
    (["export", "p", "out", "--concept", "a/b"], pool_cli.EXIT_USAGE, "invalid concept"),
    (["export", "p", "out", "--concept", ".."], pool_cli.EXIT_USAGE, "invalid concept"),
    (["export", "p", "out", "--concept", "c", "--repeats", "0"], pool_cli.EXIT_USAGE, "--repeats"),
])
def test_refusals_name_the_bad_value_and_exit_with_its_code(setup, tmp_path, args, code, message):
    inputs, files = setup
    pools.add_frames(str(inputs / "gate_pool"), "p", [np.zeros((2, 2, 3), np.uint8)])
    args = [str(a).replace("{files}", str(files)) for a in args]
    args = [str(tmp_path / a) if a == "out" else a for a in args]
    done = here(*args, input_dir=inputs)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert message in done.stderr and done.stderr.startswith("python -m gates.pool: error:")


def test_a_corrupt_kept_item_stops_an_export_naming_it_and_nothing_is_written(setup, tmp_path):
    inputs, _files = setup
    base = str(inputs / "gate_pool")
    pools.add_frames(base, "p", [np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)])
    pools.move(base, "p", {"000001": "kept", "000002": "kept"})
    (inputs / "gate_pool/p/kept/000002.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    done = here("export", "p", tmp_path / "out", "--concept", "c", input_dir=inputs)
    assert done.returncode == pool_cli.EXIT_BAD_POOL and "kept/000002.png" in done.stderr
    assert not (tmp_path / "out").exists()


def test_without_an_input_folder_it_says_to_pass_one(tmp_path):
    done = here("list")
    assert done.returncode == pool_cli.EXIT_USAGE and "--input-dir" in done.stderr
    done = here("list", input_dir=tmp_path / "absent")
    assert done.returncode == pool_cli.EXIT_USAGE and "does not exist" in done.stderr


def test_help_lists_every_command():
    done = cli("--help")
    assert done.returncode == 0
    for command in ("list", "show", "add", "move", "export", "rm"):
        assert command in done.stdout
