"""The pool format on disk (gates.pools) without ComfyUI: names, captions, duplicates, states, repairs.

Everything is checked on the files themselves, as a person with a file manager would see them.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from PIL import Image

from gates import imaging, pools
from gates.constants import POOL_COUNTER_FILE, POOL_INDEX_FILE, POOL_STAGING_PREFIX


def frame(seed: int, height: int = 6, width: int = 8, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def files(base, pool: str = "p") -> dict[str, list[str]]:
    """state -> sorted visible file names; "." -> the pool folder's own entries."""
    folder = os.path.join(base, pool)
    out = {".": sorted(os.listdir(folder))}
    for state in ("pending", "kept", "rejected"):
        path = os.path.join(folder, state)
        out[state] = sorted(os.listdir(path)) if os.path.isdir(path) else []
    return out


def read_png(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


@pytest.fixture
def base(tmp_path):
    return str(tmp_path / "gate_pool")


# --- names and the counter ------------------------------------------------------------------------

def test_items_are_numbered_pngs_with_their_captions_beside_them(base):
    result = pools.add_frames(base, "p", [frame(1), frame(2), frame(3)], ["a cat", None, "ünïcödé ✓"])
    assert result.added == ["000001", "000002", "000003"]
    assert result.counts == {"pending": 3, "kept": 0, "rejected": 0}
    assert files(base)["pending"] == ["000001.png", "000001.txt", "000002.png", "000003.png", "000003.txt"]
    folder = os.path.join(base, "p", "pending")
    for name, seed in (("000001", 1), ("000002", 2), ("000003", 3)):
        np.testing.assert_array_equal(read_png(os.path.join(folder, f"{name}.png")), frame(seed))
    # Exactly the caption: UTF-8, no BOM, no newline added.
    assert open(os.path.join(folder, "000001.txt"), "rb").read() == b"a cat"
    assert open(os.path.join(folder, "000003.txt"), "rb").read() == "ünïcödé ✓".encode()
    assert not any(name.startswith(POOL_STAGING_PREFIX) for state in files(base).values() for name in state)


def test_alpha_is_kept_and_a_gray_frame_is_stored_as_rgb(base):
    rgba = frame(5, channels=4)
    gray = frame(6, channels=1)
    pools.add_frames(base, "p", [rgba, gray])
    folder = os.path.join(base, "p", "pending")
    with Image.open(os.path.join(folder, "000001.png")) as image:
        assert image.mode == "RGBA"
        np.testing.assert_array_equal(np.array(image), rgba)
    with Image.open(os.path.join(folder, "000002.png")) as image:
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.array(image), np.repeat(gray, 3, axis=2))


def test_the_counter_never_reuses_a_number_after_files_are_deleted_or_moved_away(base):
    pools.add_frames(base, "p", [frame(1), frame(2), frame(3)])
    folder = os.path.join(base, "p", "pending")
    for name in ("000002.png", "000003.png"):
        os.remove(os.path.join(folder, name))
    assert pools.add_frames(base, "p", [frame(4)]).added == ["000004"]
    # Without the counter file, the highest name on disk is the floor.
    os.remove(os.path.join(base, "p", POOL_COUNTER_FILE))
    assert pools.add_frames(base, "p", [frame(5)]).added == ["000005"]
    # A counter file that went backwards (restored from a backup) is overruled by the files.
    with open(os.path.join(base, "p", POOL_COUNTER_FILE), "w") as handle:
        handle.write("2\n")
    assert pools.add_frames(base, "p", [frame(6)]).added == ["000006"]
    # A name made by hand far ahead moves the floor too.
    Image.fromarray(frame(7)).save(os.path.join(base, "p", "kept", "000100.png"))
    assert pools.add_frames(base, "p", [frame(8)]).added == ["000101"]


def test_the_counter_is_on_disk_before_the_files_it_names_appear(base, monkeypatch):
    """So a number seen on disk is never handed out again, even if its files are deleted afterwards."""
    pools.add_frames(base, "p", [frame(1)])
    counter = os.path.join(base, "p", POOL_COUNTER_FILE)
    seen = []
    real_rename = os.rename

    def rename(src, dst, *args, **kwargs):
        if str(dst).endswith(".png") and not os.path.basename(str(dst)).startswith("."):
            seen.append((os.path.basename(str(dst)), open(counter).read().strip()))
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(pools.os, "rename", rename)
    pools.add_frames(base, "p", [frame(2), frame(3)])
    assert seen == [("000002.png", "4"), ("000003.png", "4")]


def test_a_failed_add_leaves_nothing_and_takes_no_number(base, monkeypatch):
    pools.add_frames(base, "p", [frame(1)])

    def fail(path, pixels, *args):
        raise OSError(28, "No space left on device")

    real_write = imaging.write_png
    monkeypatch.setattr(imaging, "write_png", fail)
    with pytest.raises(OSError, match="No space left"):
        pools.add_frames(base, "p", [frame(2), frame(3)], ["two", "three"])
    monkeypatch.setattr(imaging, "write_png", real_write)
    assert files(base)["pending"] == ["000001.png"], "a failed add leaves nothing behind"
    assert not any(n.startswith(".staging") for state in files(base).values() for n in state)
    assert pools.add_frames(base, "p", [frame(2)]).added == ["000002"]


def test_concurrent_adders_in_one_process_get_distinct_names(base):
    results, errors = [], []

    def add(seed):
        try:
            results.append(pools.add_frames(base, "p", [frame(seed), frame(seed + 1000)]).added)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(seed,)) for seed in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    names = [name for added in results for name in added]
    assert len(names) == 24 and len(set(names)) == 24
    assert sorted(names) == [pools.item_name(n) for n in range(1, 25)]


def test_hand_made_names_are_items_too_and_sort_after_the_counter(base):
    pools.add_frames(base, "p", [frame(1)])
    pending = os.path.join(base, "p", "pending")
    Image.fromarray(frame(2)).save(os.path.join(pending, "cat.png"))
    Image.fromarray(frame(3)).save(os.path.join(pending, "0000010.png"))
    with open(os.path.join(pending, "cat.txt"), "w", encoding="utf-8") as handle:
        handle.write("a cat from the camera\n")  # an editor's final newline is not part of the caption
    Image.fromarray(frame(4)).save(os.path.join(pending, "notes.jpg"))  # not a PNG: not an item
    page = pools.pending_page(base, "p", 10)
    assert [item.name for item in page.items] == ["000001", "0000010", "cat"]
    assert page.items[2].caption == "a cat from the camera"


# --- captions --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "frames", "expected"), [
    ("", 3, [None, None, None]),
    (None, 2, [None, None]),
    ("one for all", 3, ["one for all"] * 3),
    ("one for all\n", 3, ["one for all"] * 3),
    ("a\nb\nc", 3, ["a", "b", "c"]),
    ("a\r\nb\r\nc\r\n", 3, ["a", "b", "c"]),
    ("a\n\nc", 3, ["a", None, "c"]),
    ("first line\nsecond line", 1, ["first line\nsecond line"]),
    ("  spaced  ", 2, ["  spaced  ", "  spaced  "]),
])
def test_captions_are_one_line_per_frame_or_one_for_all(text, frames, expected):
    assert pools.split_captions(text, frames) == expected


def test_captions_that_do_not_fit_the_frames_are_refused_with_both_counts(base):
    with pytest.raises(pools.CaptionError, match="2 lines for 3 frames"):
        pools.split_captions("a\nb", 3)
    assert not os.path.exists(base), "nothing is written for bad input"


# --- duplicates ------------------------------------------------------------------------------------

def test_a_frame_already_in_the_pool_in_any_state_is_not_added_again(base):
    pools.add_frames(base, "p", [frame(1), frame(2), frame(3)])
    pools.move(base, "p", {"000001": "kept", "000002": "rejected"})
    result = pools.add_frames(base, "p", [frame(1), frame(2), frame(3), frame(4), frame(4)])
    assert result.added == ["000004"]
    assert result.duplicates == [0, 1, 2, 4], "the second copy of frame 4 in one batch is a duplicate too"
    assert "4 duplicates skipped" in result.summary()
    # With skip_duplicates off, everything goes in.
    assert pools.add_frames(base, "p", [frame(1)], skip_duplicates=False).added == ["000005"]


def test_duplicates_are_found_by_pixels_not_by_file_bytes(base):
    pools.add_frames(base, "p", [frame(1)])
    # The same pixels written by Pillow at another level (other bytes) and with a different name.
    Image.fromarray(frame(9)).save(os.path.join(base, "p", "kept", "hand.png"), compress_level=9)
    assert pools.add_frames(base, "p", [frame(9)]).duplicates == [0]
    # An RGBA frame with opaque alpha is another picture than the RGB one (different channels).
    opaque = np.dstack([frame(1), np.full((6, 8), 255, np.uint8)])
    assert pools.add_frames(base, "p", [opaque]).added


def test_the_pixel_index_is_a_cache_rebuilt_when_it_disagrees_with_the_files(base):
    pools.add_frames(base, "p", [frame(1), frame(2)])
    index = os.path.join(base, "p", POOL_INDEX_FILE)
    assert os.path.getsize(index) > 0
    # Lost, or garbled: duplicates are still found (from the files).
    os.remove(index)
    assert pools.add_frames(base, "p", [frame(1)]).duplicates == [0]
    with open(index, "wb") as handle:
        handle.write(b"\x00garbage\n000001\t1\t2\t3\t" + b"0" * 64 + b"\n")
    assert pools.add_frames(base, "p", [frame(2)]).duplicates == [0]
    # A file replaced by hand with other pixels is hashed again, so its old pixels are no longer "in".
    Image.fromarray(frame(7)).save(os.path.join(base, "p", "pending", "000001.png"))
    assert pools.add_frames(base, "p", [frame(1)]).added == ["000003"]
    assert pools.add_frames(base, "p", [frame(7)]).duplicates == [0]


def test_a_corrupt_file_does_not_stop_an_add_and_is_reported(base):
    pools.add_frames(base, "p", [frame(1)])
    with open(os.path.join(base, "p", "kept", "000050.png"), "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\nnot really")
    result = pools.add_frames(base, "p", [frame(2)])
    assert result.added == ["000051"]
    assert result.unreadable and "kept/000050.png" in result.unreadable[0] and "'p'" in result.unreadable[0]


# --- a page, and decisions -------------------------------------------------------------------------

def test_a_page_is_the_oldest_pending_items_with_pixels_and_captions(base):
    frames = [frame(seed, 4 + seed, 5 + seed) for seed in range(7)]  # every frame its own size
    pools.add_frames(base, "p", frames, [f"caption {n}" for n in range(7)])
    page = pools.pending_page(base, "p", 3)
    assert [item.name for item in page.items] == ["000001", "000002", "000003"]
    assert page.pending == 7
    for item, expected in zip(page.items, frames, strict=False):
        np.testing.assert_array_equal(item.pixels, expected)
    assert [item.caption for item in page.items] == ["caption 0", "caption 1", "caption 2"]
    decision = pools.decide(base, "p", keep=["000002"], reject=["000001", "000003"])
    assert decision.counts == {"pending": 4, "kept": 1, "rejected": 2}
    assert files(base)["kept"] == ["000002.png", "000002.txt"]
    assert files(base)["rejected"] == ["000001.png", "000001.txt", "000003.png", "000003.txt"]
    assert [item.name for item in pools.pending_page(base, "p", 3).items] == ["000004", "000005", "000006"]


def test_files_moved_by_hand_are_respected(base):
    pools.add_frames(base, "p", [frame(1), frame(2)], ["one", "two"])
    folder = os.path.join(base, "p")
    for ext in ("png", "txt"):
        os.rename(os.path.join(folder, "pending", f"000001.{ext}"), os.path.join(folder, "kept", f"000001.{ext}"))
    assert pools.scan(base, "p").counts() == {"pending": 1, "kept": 1, "rejected": 0}
    assert [item.name for item in pools.pending_page(base, "p", 16).items] == ["000002"]
    assert pools.list_pools(base) == [{"id": "p", "pending": 1, "kept": 1, "rejected": 0}]


def test_a_decision_on_an_item_deleted_meanwhile_names_it_missing(base):
    pools.add_frames(base, "p", [frame(1), frame(2)])
    os.remove(os.path.join(base, "p", "pending", "000001.png"))
    decision = pools.decide(base, "p", keep=["000001", "000002"], reject=[])
    assert decision.missing == ["000001"] and decision.moved == {"000002": "kept"}


def test_a_corrupt_item_fails_the_page_naming_the_pool_and_the_file(base):
    pools.add_frames(base, "p", [frame(1), frame(2)])
    path = os.path.join(base, "p", "pending", "000002.png")
    data = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
    with pytest.raises(pools.PoolError, match=r"pool 'p': pending/000002\.png is not a readable image"):
        pools.pending_page(base, "p", 16)


def test_a_caption_that_is_not_utf8_fails_naming_the_file(base):
    pools.add_frames(base, "p", [frame(1)], ["fine"])
    with open(os.path.join(base, "p", "pending", "000001.txt"), "wb") as handle:
        handle.write(b"caf\xe9")
    with pytest.raises(pools.PoolError, match=r"pending/000001\.txt is not UTF-8"):
        pools.pending_page(base, "p", 16)


def test_a_missing_pool_is_not_found_and_nothing_is_made(base):
    with pytest.raises(pools.PoolNotFound, match="'nope' does not exist"):
        pools.pending_page(base, "nope", 16)
    assert not os.path.exists(os.path.join(base, "nope"))
    assert pools.list_pools(base) == []


def test_list_pools_is_sorted_and_counts_each_state(base):
    pools.add_frames(base, "zeta", [frame(1)])
    pools.add_frames(base, "alpha", [frame(1), frame(2), frame(3)])
    pools.move(base, "alpha", {"000001": "kept", "000002": "rejected"})
    os.makedirs(os.path.join(base, ".hidden"))
    os.makedirs(os.path.join(base, "bad id!"))
    assert pools.list_pools(base) == [{"id": "alpha", "pending": 1, "kept": 1, "rejected": 1},
                                      {"id": "zeta", "pending": 1, "kept": 0, "rejected": 0}]


def test_remove_items_and_remove_pool(base):
    pools.add_frames(base, "p", [frame(1), frame(2)], ["one", "two"])
    result = pools.remove_items(base, "p", ["000001", "000009"])
    assert result.moved == {"000001": "pending"} and result.missing == ["000009"]
    assert files(base)["pending"] == ["000002.png", "000002.txt"]
    assert pools.remove_pool(base, "p") is True
    assert pools.remove_pool(base, "p") is False
    assert os.listdir(base) == []


# --- repairs after a kill --------------------------------------------------------------------------

DEAD_PID = 2 ** 22 + 12345  # above pid_max on a default Linux: no such process


def stage(base, state: str, kind: str, target: str, data: bytes, pid: int = DEAD_PID) -> str:
    name = f"{POOL_STAGING_PREFIX}{kind}-{pid}-deadbeef-0123456789ab-{target}"
    path = os.path.join(base, "p", state, name)
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def png_bytes(pixels) -> bytes:
    return imaging.encode_png(pixels)


def test_an_add_killed_before_any_rename_is_rolled_back(base):
    pools.add_frames(base, "p", [frame(1)])
    stage(base, "pending", "add", "000002.txt", b"lost caption")
    stage(base, "pending", "add", "000002.png", png_bytes(frame(2))[:10])  # half written
    assert pools.pending_page(base, "p", 16).pending == 1
    assert files(base)["pending"] == ["000001.png"]


def test_an_add_killed_between_caption_and_png_is_finished(base):
    pools.add_frames(base, "p", [frame(1)])
    with open(os.path.join(base, "p", "pending", "000002.txt"), "wb") as handle:
        handle.write(b"the caption")
    stage(base, "pending", "add", "000002.png", png_bytes(frame(2)))
    page = pools.pending_page(base, "p", 16)
    assert [item.name for item in page.items] == ["000001", "000002"]
    assert page.items[1].caption == "the caption"
    np.testing.assert_array_equal(page.items[1].pixels, frame(2))
    assert files(base)["pending"] == ["000001.png", "000002.png", "000002.txt"]


def test_a_caption_without_any_png_made_by_hand_is_left_alone(base):
    pools.add_frames(base, "p", [frame(1)])
    with open(os.path.join(base, "p", "pending", "notes.txt"), "w") as handle:
        handle.write("my notes")
    pools.pending_page(base, "p", 16)
    assert "notes.txt" in files(base)["pending"]


def test_a_half_moved_item_goes_back_together_in_the_pngs_folder(base):
    pools.add_frames(base, "p", [frame(1), frame(2)], ["one", "two"])
    folder = os.path.join(base, "p")
    # A decision killed after moving the caption, before the PNG.
    os.rename(os.path.join(folder, "pending", "000001.txt"), os.path.join(folder, "kept", "000001.txt"))
    # A person who moved only the image.
    os.rename(os.path.join(folder, "pending", "000002.png"), os.path.join(folder, "rejected", "000002.png"))
    page = pools.pending_page(base, "p", 16)
    assert [(item.name, item.caption) for item in page.items] == [("000001", "one")]
    assert files(base)["pending"] == ["000001.png", "000001.txt"]
    assert files(base)["rejected"] == ["000002.png", "000002.txt"]
    assert files(base)["kept"] == []


@pytest.mark.parametrize("copied", [False, True], ids=["hard link", "copy"])
def test_a_move_killed_after_the_caption_reached_the_new_folder_is_rolled_back_or_finished(base, copied):
    """The caption is in both folders: before the PNG moved (back) or after (forward)."""
    pools.add_frames(base, "p", [frame(1), frame(2)], ["one", "two"])
    folder = os.path.join(base, "p")

    def second_caption(name, state):
        source = os.path.join(folder, "pending", f"{name}.txt")
        target = os.path.join(folder, state, f"{name}.txt")
        if copied:
            with open(source, "rb") as a, open(target, "wb") as b:
                b.write(a.read())
        else:
            os.link(source, target)

    second_caption("000001", "kept")  # killed before the PNG moved
    second_caption("000002", "rejected")  # killed after the PNG moved
    os.rename(os.path.join(folder, "pending", "000002.png"), os.path.join(folder, "rejected", "000002.png"))
    page = pools.pending_page(base, "p", 16)
    assert [(item.name, item.caption) for item in page.items] == [("000001", "one")]
    assert files(base)["pending"] == ["000001.png", "000001.txt"]
    assert files(base)["kept"] == []
    assert files(base)["rejected"] == ["000002.png", "000002.txt"]


def test_a_different_caption_in_another_folder_is_left_alone(base):
    pools.add_frames(base, "p", [frame(1)], ["one"])
    with open(os.path.join(base, "p", "kept", "000001.txt"), "w") as handle:
        handle.write("a person's other caption")
    pools.pending_page(base, "p", 16)
    assert files(base)["kept"] == ["000001.txt"]


def test_a_decision_never_leaves_a_png_without_its_caption_at_any_step(base, monkeypatch):
    """Record the folders after every rename, link and unlink a decision makes."""
    pools.add_frames(base, "p", [frame(n) for n in range(4)], [f"c{n}" for n in range(4)])
    states = []

    def check():
        for state in ("pending", "kept", "rejected"):
            names = set(os.listdir(os.path.join(base, "p", state)))
            for name in names:
                if name.endswith(".png"):
                    assert name[:-4] + ".txt" in names, f"{state}/{name} without its caption: {names}"
        states.append(files(base))

    for module_fn in ("rename", "replace", "link", "unlink"):
        real = getattr(os, module_fn)

        def wrapped(*args, _real=real, **kwargs):
            result = _real(*args, **kwargs)
            check()
            return result

        monkeypatch.setattr(pools.os, module_fn, wrapped)
    pools.decide(base, "p", keep=["000001", "000003"], reject=["000002", "000004"])
    assert len(states) >= 12
    assert files(base)["kept"] == ["000001.png", "000001.txt", "000003.png", "000003.txt"]


def test_a_removal_killed_between_png_and_caption_is_finished(base):
    pools.add_frames(base, "p", [frame(1), frame(2)], ["one", "two"])
    folder = os.path.join(base, "p", "pending")
    os.rename(os.path.join(folder, "000001.png"),
              os.path.join(folder, f"{POOL_STAGING_PREFIX}rm-{DEAD_PID}-deadbeef-0123456789ab-000001.png"))
    assert pools.scan(base, "p").counts()["pending"] == 1
    pools.pending_page(base, "p", 16)
    assert files(base)["pending"] == ["000002.png", "000002.txt"]


def test_staging_files_of_a_live_process_are_left_alone(base):
    pools.add_frames(base, "p", [frame(1)])
    live = stage(base, "pending", "add", "000005.png", b"in progress", pid=os.getppid())
    pools.pending_page(base, "p", 16)
    assert os.path.exists(live)
    junk = os.path.join(base, "p", "pending", f"{POOL_STAGING_PREFIX}whatever")
    open(junk, "w").close()
    pools.pending_page(base, "p", 16)
    assert not os.path.exists(junk), "a staging name of no known form is a leftover"


def test_a_name_in_two_folders_counts_once_by_precedence(base):
    pools.add_frames(base, "p", [frame(1)])
    folder = os.path.join(base, "p")
    Image.fromarray(frame(1)).save(os.path.join(folder, "kept", "000001.png"))
    assert pools.scan(base, "p").counts() == {"pending": 0, "kept": 1, "rejected": 0}
    assert pools.pending_page(base, "p", 16).items == []


# --- ids, links, escapes ---------------------------------------------------------------------------

@pytest.mark.parametrize("pool", ["", ".", "..", "../x", "a/b", "a\\b", "/etc", "CON", "nul.txt", "a" * 65,
                                  "x\x00", "tab\there", "-dash", "dot.", "caf\u00e9", 7, None])
def test_hostile_pool_ids_are_refused_before_the_disk_is_touched(base, pool):
    with pytest.raises(pools.PoolIdError) as caught:
        pools.add_frames(base, pool, [frame(1)])
    assert "pool id" in str(caught.value)
    assert not os.path.exists(base)


def test_a_pool_folder_or_state_folder_that_is_a_link_is_refused(base, tmp_path):
    outside = tmp_path / "outside"
    (outside / "pending").mkdir(parents=True)
    os.makedirs(base)
    os.symlink(outside, os.path.join(base, "linked"))
    with pytest.raises(pools.PoolIdError, match="symbolic link"):
        pools.add_frames(base, "linked", [frame(1)])
    with pytest.raises(pools.PoolIdError, match="symbolic link"):
        pools.pending_page(base, "linked", 4)
    assert list((outside / "pending").iterdir()) == []
    pools.add_frames(base, "p", [frame(1)])
    os.rmdir(os.path.join(base, "p", "kept"))
    os.symlink(outside, os.path.join(base, "p", "kept"))
    with pytest.raises(pools.PoolError, match="kept/ is a symbolic link"):
        pools.add_frames(base, "p", [frame(2)])
    assert sorted(os.listdir(outside)) == ["pending"]


def test_an_item_file_that_is_a_link_is_refused_when_read(base, tmp_path):
    secret = tmp_path / "secret.png"
    Image.fromarray(frame(1)).save(secret)
    pools.add_frames(base, "p", [frame(2)])
    os.symlink(secret, os.path.join(base, "p", "pending", "000000.png"))
    with pytest.raises(pools.PoolError, match="000000.png is a symbolic link"):
        pools.pending_page(base, "p", 4)


def test_gate_pool_itself_may_be_a_link(tmp_path):
    real = tmp_path / "elsewhere"
    real.mkdir()
    link = tmp_path / "gate_pool"
    os.symlink(real, link)
    pools.add_frames(str(link), "p", [frame(1)])
    assert (real / "p" / "pending" / "000001.png").exists()
    assert pools.list_pools(str(link)) == [{"id": "p", "pending": 1, "kept": 0, "rejected": 0}]
