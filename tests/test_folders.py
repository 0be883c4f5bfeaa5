"""gates.folders without ComfyUI: the path rule, natural order, the listing cache, captions, positions,
and the atomic replace with its leftover sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from loader_testkit import mtime_settle
from PIL import Image
from spying import record_calls

from gates import folders
from gates.constants import SCRATCH_SUFFIX
from gates.folders import FolderError, FolderNotFound, Position, PositionError, PositionStore

HOSTILE = [
    "", ".", "./", "..", "../", "../x", "a/../../x", "a/..", "datasets/../../etc", "..\\x", "a\\..\\..\\x",
    "/etc", "/", "//server/share", "\\\\server\\share", "\\x", "C:\\x", "C:x", "c:/x", "a\x00b", "a\nb", "\x7f",
    "x" * 5000,
]


# --- the path rule --------------------------------------------------------------------------------

@pytest.mark.parametrize("value", HOSTILE)
def test_a_folder_that_could_leave_the_input_folder_or_names_nothing_is_refused_by_name(tmp_path, value):
    with pytest.raises(FolderError) as caught:
        folders.resolve_folder(tmp_path, value)
    assert repr(value[:60]) in str(caught.value) or repr(value[:60])[:-1] in str(caught.value)


@pytest.mark.parametrize("value", [None, 5, b"datasets", ["datasets"]])
def test_a_folder_that_is_not_a_string_is_refused(tmp_path, value):
    with pytest.raises(FolderError, match="must be a string"):
        folders.resolve_folder(tmp_path, value)


@pytest.mark.parametrize("value", ["datasets/cats", "datasets\\cats", "datasets/cats/", "./datasets//cats",
                                   "datasets/./cats"])
def test_spellings_of_one_folder_resolve_to_one_key(tmp_path, value):
    (tmp_path / "datasets" / "cats").mkdir(parents=True)
    key, path = folders.resolve_folder(tmp_path, value)
    assert key == "datasets/cats" and path == tmp_path / "datasets" / "cats"


def test_a_missing_folder_or_a_file_is_not_found_and_named(tmp_path):
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(FolderNotFound, match="'nope' does not exist"):
        folders.resolve_folder(tmp_path, "nope")
    with pytest.raises(FolderNotFound, match="'file.png' is not a folder"):
        folders.resolve_folder(tmp_path, "file.png")


def test_a_link_inside_the_input_folder_is_followed_wherever_it_points(tmp_path):
    elsewhere = tmp_path / "other_disk" / "cats"
    elsewhere.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(elsewhere / "1.png")
    inputs = tmp_path / "input"
    inputs.mkdir()
    (inputs / "cats").symlink_to(elsewhere, target_is_directory=True)
    key, path = folders.resolve_folder(inputs, "cats")
    assert key == "cats" and folders.list_images(path).paths == ("1.png",)


# --- natural order --------------------------------------------------------------------------------

def test_natural_order_puts_numbers_in_number_order_and_ignores_case():
    names = ["10.png", "2.png", "1.png", "a10.png", "a2.png", "B1.png", "b.png", "007.png", "7.png", "A2.png",
             "img 3.jpg", "img 20.jpg", "ü.png", "u.png", "img.png", "img1.png", "2.jpg"]
    assert folders.natural_sorted(names) == [
        "1.png", "2.jpg", "2.png", "007.png", "7.png", "10.png", "A2.png", "a2.png", "a10.png", "b.png", "B1.png",
        "img.png", "img1.png", "img 3.jpg", "img 20.jpg", "u.png", "ü.png"]


def test_natural_order_of_paths_keeps_each_folder_together():
    paths = ["b/1.png", "a/10.png", "a.png", "a/2.png", "2/x.png", "10/x.png"]
    assert folders.natural_sorted(paths) == ["2/x.png", "10/x.png", "a/2.png", "a/10.png", "a.png", "b/1.png"]


# --- listing --------------------------------------------------------------------------------------

def populate(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")


def test_only_pictures_are_listed_hidden_files_and_other_files_are_not(tmp_path):
    populate(tmp_path, ["b.PNG", "a.jpeg", "c.webp", "d.JPG", "e.gif", ".hidden.png", "f.txt", "g.caption",
                        "h.psd", "i.eps", "j.pdf", "k"])
    (tmp_path / "sub.png").mkdir()  # a folder named like a picture is not one
    assert folders.list_images(tmp_path).paths == ("a.jpeg", "b.PNG", "c.webp", "d.JPG", "e.gif", "h.psd")


def test_subfolders_are_walked_only_when_asked_and_hidden_ones_never(tmp_path):
    populate(tmp_path, ["1.png", "sub/2.png", "sub/deeper/3.png", ".git/4.png", "sub/.cache/5.png"])
    assert folders.list_images(tmp_path).paths == ("1.png",)
    assert folders.list_images(tmp_path, recursive=True).paths == ("1.png", "sub/2.png", "sub/deeper/3.png")


def test_a_link_loop_is_walked_once(tmp_path):
    populate(tmp_path, ["a/1.png"])
    (tmp_path / "a" / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert folders.list_images(tmp_path, recursive=True).paths == ("a/1.png",)


def test_a_listing_is_reused_while_the_folder_is_unchanged_and_redone_when_it_changes(tmp_path):
    populate(tmp_path, ["1.png", "2.png"])
    mtime_settle(tmp_path)
    first = folders.list_images(tmp_path)
    assert folders.list_images(tmp_path) is first
    (tmp_path / "3.png").write_bytes(b"")
    assert folders.list_images(tmp_path).paths == ("1.png", "2.png", "3.png")
    (tmp_path / "1.png").unlink()
    assert folders.list_images(tmp_path).paths == ("2.png", "3.png")


def counting_scans(monkeypatch) -> list:
    """The folders folders.list_images scans on disk (a cached listing scans none)."""
    return record_calls(monkeypatch, folders, "_scan", lambda folder, recursive: folder)


def test_a_listing_made_in_the_same_tick_as_a_change_is_not_trusted(tmp_path, monkeypatch):
    scans = counting_scans(monkeypatch)
    populate(tmp_path, ["1.png"])
    folders.list_images(tmp_path)  # the folder was just written: its mtime is too fresh to trust
    folders.list_images(tmp_path)
    assert len(scans) == 2
    # A file added with the folder's mtime put back (as within one timestamp tick) is still seen.
    st = os.stat(tmp_path)
    (tmp_path / "2.png").write_bytes(b"")
    os.utime(tmp_path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert folders.list_images(tmp_path).paths == ("1.png", "2.png")


def test_a_change_in_a_subfolder_is_seen_by_a_recursive_listing(tmp_path):
    populate(tmp_path, ["a/1.png"])
    mtime_settle(tmp_path)
    mtime_settle(tmp_path / "a")
    first = folders.list_images(tmp_path, recursive=True)
    assert folders.list_images(tmp_path, recursive=True) is first
    (tmp_path / "a" / "2.png").write_bytes(b"")
    assert folders.list_images(tmp_path, recursive=True).paths == ("a/1.png", "a/2.png")


def test_index_after_finds_the_next_picture_even_when_the_last_one_is_gone(tmp_path):
    populate(tmp_path, ["1.png", "2.png", "5.png", "10.png"])
    listing = folders.list_images(tmp_path)
    assert listing.index_after(None) == 0
    assert listing.index_after("2.png") == 2
    assert listing.index_after("3.png") == 2  # removed meanwhile: the next one that sorts after it
    assert listing.index_after("10.png") == 4


def test_list_subfolders_follows_depth_limit_and_skips(tmp_path):
    for name in ["datasets/cats/kept", "datasets/dogs", "gate_bus/slot1", ".hidden/x", "a/b/c/d/e"]:
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "file.png").write_bytes(b"")
    (tmp_path / "datasets" / "loop").symlink_to(tmp_path, target_is_directory=True)
    found, truncated = folders.list_subfolders(tmp_path, 3, 100, ("gate_bus",))
    assert found == ["a", "a/b", "a/b/c", "datasets", "datasets/cats", "datasets/cats/kept", "datasets/dogs"]
    assert not truncated
    found, truncated = folders.list_subfolders(tmp_path, 4, 3, ("gate_bus",))
    assert len(found) == 3 and truncated


# --- captions -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "text"), [
    (b"a cat", "a cat"),
    (b"a cat\n", "a cat"),
    (b"a cat\r\n", "a cat"),
    (b"a cat\n\n", "a cat\n"),
    (b"a cat\r\n\r\n", "a cat\r\n"),
    (b"line\r\ntwo\r\n", "line\r\ntwo"),
    (b"a cat\r", "a cat\r"),
    (b"\xef\xbb\xbfa cat\n", "a cat"),
    (b"\xef\xbb\xbf\xef\xbb\xbfa", "\ufeffa"),
    (b"  spaced  \n", "  spaced  "),
    ("猫 — مرحبا 🐈‍⬛\n".encode(), "猫 — مرحبا 🐈‍⬛"),
    (b"", ""),
    (b"\n", ""),
])
def test_a_caption_loses_one_bom_and_one_trailing_line_ending_and_nothing_else(raw, text):
    assert folders.decode_caption(raw) == text


def test_a_caption_that_is_not_utf8_is_an_error_naming_the_file():
    with pytest.raises(folders.CaptionReadError, match=r"datasets/cats/3\.txt is not UTF-8"):
        folders.decode_caption(b"caf\xe9", "datasets/cats/3.txt")


def test_the_txt_wins_over_the_caption_file_and_no_file_is_an_empty_caption(tmp_path):
    image = tmp_path / "cat.1.png"
    image.write_bytes(b"")
    assert folders.read_caption(image) == ("", None)
    (tmp_path / "cat.1.caption").write_text("from caption")
    assert folders.read_caption(image) == ("from caption", tmp_path / "cat.1.caption")
    (tmp_path / "cat.1.txt").write_text("from txt\n")
    assert folders.read_caption(image) == ("from txt", tmp_path / "cat.1.txt")
    (tmp_path / "cat.txt").write_text("not this one")  # the stem is "cat.1"
    assert folders.read_caption(image)[0] == "from txt"


# --- positions ------------------------------------------------------------------------------------

def test_a_position_survives_a_new_store_and_a_reset_wins_over_a_late_commit(tmp_path):
    store = PositionStore(tmp_path / "state")
    key = folders.position_key("datasets/cats", False)
    assert store.read(key) == Position()
    store.write(key, Position("3.png"), folder="datasets/cats", recursive=False, count=10)
    assert PositionStore(tmp_path / "state").read(key) == Position("3.png", 0)
    reset = store.reset(key, folder="datasets/cats", recursive=False)
    assert reset == Position(None, 1)
    # A prompt that started before the reset commits against what it saw: refused.
    assert not store.compare_and_write(key, Position("3.png", 0), Position("4.png", 0), folder="datasets/cats",
                                       recursive=False)
    assert store.read(key) == Position(None, 1)
    assert store.compare_and_write(key, Position(None, 1), Position("1.png", 1), folder="datasets/cats",
                                   recursive=False)
    data = json.loads(store.path_for(key).read_text())
    assert data["folder"] == "datasets/cats" and data["last"] == "1.png" and data["generation"] == 1


def test_the_folder_and_its_subfolders_walk_apart(tmp_path):
    store = PositionStore(tmp_path)
    store.write(folders.position_key("a", False), Position("1.png"), folder="a", recursive=False)
    assert store.read(folders.position_key("a", True)) == Position()


@pytest.mark.parametrize("content", [b"{", b"[]", b'{"format": "other"}', b"\xff\xfe",
                                     b'{"format": "datasete-loader-position", "last": 5}'])
def test_a_damaged_position_file_is_an_error_naming_it_and_reset_repairs_it(tmp_path, content):
    store = PositionStore(tmp_path)
    key = folders.position_key("a", False)
    store.path_for(key).write_bytes(content)
    with pytest.raises(PositionError, match="damaged.*Reset") as caught:
        store.read(key)
    assert str(store.path_for(key)) in str(caught.value)
    assert store.reset(key, folder="a", recursive=False) == Position(None, 1)
    assert store.read(key) == Position(None, 1)


# --- atomic replace and leftovers -----------------------------------------------------------------

def test_write_atomic_replaces_the_file_keeps_a_given_mode_and_leaves_no_scratch(tmp_path):
    target = tmp_path / "cap.txt"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    folders.write_atomic(target, b"new", os.stat(target).st_mode)
    assert target.read_bytes() == b"new"
    assert os.stat(target).st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cap.txt"]


def test_write_atomic_replaces_a_link_instead_of_writing_through_it(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"keep me")
    folder = tmp_path / "input"
    folder.mkdir()
    (folder / "cap.txt").symlink_to(outside)
    folders.write_atomic(folder / "cap.txt", b"caption")
    assert outside.read_bytes() == b"keep me"
    assert not (folder / "cap.txt").is_symlink() and (folder / "cap.txt").read_bytes() == b"caption"


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_sweep_removes_the_scratch_of_a_dead_writer_only(tmp_path):
    target = tmp_path / "cap.txt"
    dead = tmp_path / f".cap.txt.{dead_pid()}-deadbeef-000000000000{SCRATCH_SUFFIX}"
    live = tmp_path / f".cap.txt.{os.getppid()}-cafecafe-000000000000{SCRATCH_SUFFIX}"
    ours = tmp_path / folders.scratch_name(target)
    other_file = tmp_path / f".other.txt.{dead_pid()}-deadbeef-000000000000{SCRATCH_SUFFIX}"
    foreign = tmp_path / f".cap.txt.not-ours{SCRATCH_SUFFIX}"
    for path in (dead, live, ours, other_file, foreign):
        path.write_bytes(b"half")
    assert folders.sweep_scratch(target) == 1
    assert not dead.exists() and live.exists() and ours.exists() and other_file.exists() and foreign.exists()
    old = time.time() - folders.STALE_SCRATCH_SECONDS - 10
    os.utime(live, (old, old))
    assert folders.sweep_scratch(target) == 1 and not live.exists()


def test_a_changed_folder_with_the_same_images_keeps_its_listing_and_few_changes_are_merged(tmp_path, monkeypatch):
    names = [f"{i}.png" for i in range(1, 400)]
    populate(tmp_path, names)
    mtime_settle(tmp_path)
    first = folders.list_images(tmp_path)
    # A caption saved beside the images changes the folder, not its images: the same listing comes back.
    (tmp_path / "7.txt").write_text("a caption")
    mtime_settle(tmp_path)
    assert folders.list_images(tmp_path) is first
    # A few images added and removed are merged in order, as a full sort would put them.
    for name in ("0.png", "150b.png", "1000.png", "img.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "3.png").unlink()
    mtime_settle(tmp_path)
    merged = folders.list_images(tmp_path)
    expected = folders.natural_sorted([n for n in names if n != "3.png"] + ["0.png", "150b.png", "1000.png", "img.png"])
    assert list(merged.paths) == expected
    assert list(merged.keys) == [folders.path_key(p) for p in expected]
