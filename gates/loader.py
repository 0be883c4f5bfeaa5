"""The Image Folder Loader's logic: which image a run gets, reading it as ComfyUI's LoadImage does,
and moving a `next` walk only when the prompt that used the image succeeded.

When a `next` position moves. A loader that hands out image 37 does not know yet whether the run
will use it: a later gate may be cancelled, a node may fail. So the loader only notes the new
position as tentative, under the prompt's id, and it is written to disk when ComfyUI reports that
prompt done. The hook for that is `PromptQueue.task_done`, which ComfyUI's prompt worker calls once
per prompt, on the worker thread, with the prompt's status ("success" or "error", an interrupt
being an error), and which is what puts the prompt into /history. The pack wraps that method of the
server's queue: the wrapper commits (or drops) the prompt's tentative positions and then calls
ComfyUI's own task_done, so the new position is on disk by the time the prompt shows in /history
and before the next prompt starts. ComfyUI offers no completion callback for custom nodes; this is
the narrowest seam (a public method of a public object, called with documented arguments), and if a
later ComfyUI changes it the wrapper is not installed and the loader commits at once, logging why.

A commit is a compare-and-set against the position the run started from, so a Reset pressed while
the prompt ran wins over the prompt's commit.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from . import folders
from .constants import LOADER_STATE_DIR
from .folders import Listing, Position, PositionStore

log = logging.getLogger("datasete_gates")


class LoaderError(ValueError):
    """A run the loader cannot serve (an index out of range, an unreadable image); the message names it."""


# --- one image --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    index: int        # 0-based, in the folder's natural order
    count: int        # images in the folder
    relative: str     # "/"-joined path inside the folder
    path: str         # "/"-joined path inside ComfyUI's input folder (the loader's `path` output)
    file: Path        # where it is on disk
    name: str         # the file name without its extension

    @property
    def remaining(self) -> int:
        return self.count - self.index - 1


def item_at(folder_key: str, folder_path: Path, listing: Listing, index: int) -> Item:
    relative = listing.paths[index]
    file = folder_path.joinpath(*relative.split("/"))
    return Item(index, len(listing), relative, f"{folder_key}/{relative}", file, Path(relative).stem)


def load_picture(path, shown: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(image (1,H,W,3), mask (1,H,W)) of a picture file's first frame, as LoadImage makes them.

    EXIF orientation is applied, 32-bit integer pictures are scaled as LoadImage scales them, and
    the mask is 1 - alpha (a palette picture's transparent colour counts as alpha). Unlike
    LoadImage, a picture without alpha gets a mask of its own size (not 64x64) of zeros, and a
    truncated file is an error rather than a picture with a grey bottom: a dataset wants to know.
    """
    try:
        with Image.open(path) as opened:
            frame = ImageOps.exif_transpose(opened)
            if frame.mode == "I":
                frame = frame.point(lambda value: value * (1 / 255))
            rgb = frame.convert("RGB")
            alpha = None
            if "A" in frame.getbands():
                alpha = frame.getchannel("A")
            elif frame.mode == "P" and "transparency" in frame.info:
                alpha = frame.convert("RGBA").getchannel("A")
            pixels = np.asarray(rgb, dtype=np.float32) / np.float32(255.0)
            alpha_pixels = None if alpha is None else np.asarray(alpha, dtype=np.float32) / np.float32(255.0)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds; every one means "cannot read it"
        reason = str(exc) or type(exc).__name__
        raise LoaderError(f"image {shown} cannot be read: {reason}") from None
    image = torch.from_numpy(np.ascontiguousarray(pixels))[None]
    if alpha_pixels is None:
        mask = torch.zeros((1, pixels.shape[0], pixels.shape[1]), dtype=torch.float32)
    else:
        mask = 1.0 - torch.from_numpy(np.ascontiguousarray(alpha_pixels))[None]
    return image, mask


@dataclass(frozen=True)
class Loaded:
    item: Item
    image: torch.Tensor
    mask: torch.Tensor
    caption: str


def load_item(item: Item) -> Loaded:
    """The picture and caption of one item; LoaderError naming the file if either cannot be read."""
    image, mask = load_picture(item.file, item.path)
    folder = item.path.rsplit("/", 1)[0]
    try:
        caption, _file = folders.read_caption(item.file, lambda found: f"{folder}/{found.name}")
    except folders.CaptionReadError as exc:
        raise LoaderError(str(exc)) from None
    return Loaded(item, image, mask, caption)


# --- status texts ----------------------------------------------------------------------------------

def status_text(state: str, index: int | None = None, count: int = 0) -> str:
    """What the node shows: "37 of 120", "done: 120 of 120", "no images", "next: 38 of 120", "120 images"."""
    if state == "empty" or count == 0:
        return "no images"
    if state == "done":
        return f"done: {count} of {count}"
    if state == "next":
        return f"next: {index + 1} of {count}"
    if state == "all":
        return f"all {count} images" if count != 1 else "all 1 image"
    return f"{index + 1} of {count}"


def walk_state(listing: Listing, position: Position) -> dict:
    """Where a `next` walk stands, for the node and the state route."""
    count = len(listing)
    next_index = listing.index_after(position.last)
    done = count > 0 and next_index >= count
    state = "empty" if count == 0 else "done" if done else "next"
    return {"count": count, "next_index": None if (done or count == 0) else next_index,
            "handed_out": next_index, "remaining": max(0, count - next_index), "done": done,
            "last": position.last, "state": state, "text": status_text(state, next_index, count)}


# --- the walk on disk ------------------------------------------------------------------------------

def position_store(user_dir) -> folders.PositionStore:
    return folders.PositionStore(Path(user_dir).joinpath(*LOADER_STATE_DIR))


def fingerprint(input_dir, folder, mode, index, include_subfolders) -> str:
    """What an `index` or `all` run read: the folder's entries and the files' sizes and times."""
    key, path = folders.resolve_folder(input_dir, folder)
    recursive = bool(include_subfolders)
    listing = folders.list_images(path, recursive)
    digest = hashlib.sha256(repr((key, recursive, mode, folders.listing_fingerprint(path, recursive))).encode())
    if mode == "index":
        if 0 <= index < len(listing):
            digest.update(repr(folders.file_fingerprint(path / listing.paths[index])).encode())
    else:
        for relative in listing.paths:
            digest.update(repr(folders.file_fingerprint(path / relative)).encode())
    return digest.hexdigest()


def loader_state(input_dir, user_dir, folder, include_subfolders) -> dict:
    """Where the `next` walk of a folder stands (the state route and the node's status line)."""
    key, path = folders.resolve_folder(input_dir, folder)
    recursive = bool(include_subfolders)
    listing = folders.list_images(path, recursive)
    position = position_store(user_dir).read(folders.position_key(key, recursive))
    return {"folder": key, "include_subfolders": recursive, **walk_state(listing, position)}


def reset_walk(input_dir, user_dir, folder, include_subfolders) -> dict:
    """Start the `next` walk of a folder over; the new state."""
    key, _path = folders.resolve_folder(input_dir, folder)
    recursive = bool(include_subfolders)
    position_store(user_dir).reset(folders.position_key(key, recursive), folder=key, recursive=recursive)
    return loader_state(input_dir, user_dir, folder, include_subfolders)


# --- positions per prompt ----------------------------------------------------------------------------

@dataclass
class _Tentative:
    store: PositionStore
    base: Position     # what was on disk when the prompt first walked this folder
    new: Position
    folder: str
    recursive: bool
    count: int
    index: int         # of the image handed out last


class Walks:
    """The `next` positions the running prompts handed out, committed when their prompt succeeds."""

    def __init__(self):
        self._lock = threading.Lock()
        self._tentative: dict[str, dict[str, _Tentative]] = {}
        self.warned = False
        # Told of every committed position (the node broadcasts it, so open pages show the new place).
        self.notify = None

    def current(self, store: PositionStore, key: str, prompt_id: str | None) -> Position:
        """The position a run of `prompt_id` walks from: its own tentative one if it walked here already."""
        with self._lock:
            tentative = self._tentative.get(prompt_id, {}).get(key) if prompt_id else None
        return tentative.new if tentative is not None else store.read(key)

    def hand_out(self, store: PositionStore, key: str, base: Position, new: Position, prompt_id: str | None, *,
                 folder: str, recursive: bool, count: int, index: int = -1, deferred: bool = True) -> bool:
        """Note that a run handed out the image at `new`; True if it waits for the prompt to succeed.

        Without a prompt id, or when the completion hook is not installed (`deferred` False), it is
        written at once.
        """
        if prompt_id is None or not deferred:
            store.compare_and_write(key, base, new, folder=folder, recursive=recursive, count=count)
            return False
        with self._lock:
            walked = self._tentative.setdefault(prompt_id, {})
            earlier = walked.get(key)
            walked[key] = _Tentative(store, earlier.base if earlier else base, new, folder, recursive, count, index)
        return True

    def skip(self, store: PositionStore, key: str, base: Position, new: Position, prompt_id: str | None, *,
             folder: str, recursive: bool, count: int) -> None:
        """Move past an image that cannot be read, now: the prompt fails, and the next run must go on."""
        with self._lock:
            earlier = self._tentative.get(prompt_id, {}).pop(key, None) if prompt_id else None
        store.compare_and_write(key, earlier.base if earlier else base, new, folder=folder, recursive=recursive,
                                count=count)

    def finish(self, prompt_id: str | None, success: bool) -> int:
        """Commit (on success) or drop the positions of a finished prompt; returns how many were written."""
        if prompt_id is None:
            return 0
        with self._lock:
            walked = self._tentative.pop(prompt_id, {})
        written = 0
        if success:
            for key, entry in walked.items():
                try:
                    if entry.store.compare_and_write(key, entry.base, entry.new, folder=entry.folder,
                                                     recursive=entry.recursive, count=entry.count):
                        written += 1
                        self._notify(entry)
                except OSError:
                    log.exception("Image Folder Loader: could not save the walk position of %r", entry.folder)
        return written

    def _notify(self, entry: _Tentative) -> None:
        if self.notify is None:
            return
        after = entry.index + 1
        state = "done" if after >= entry.count else "next"
        try:
            self.notify({"node_id": None, "committed": True, "folder": entry.folder,
                         "include_subfolders": entry.recursive, "last": entry.new.last, "count": entry.count,
                         "handed_out": after, "next_index": None if state == "done" else after,
                         "remaining": max(0, entry.count - after), "done": state == "done", "state": state,
                         "text": status_text(state, after, entry.count)})
        except Exception:  # noqa: BLE001 - telling the pages is a courtesy; the commit is done
            log.exception("Image Folder Loader: could not announce the new walk position")

    def pending(self, prompt_id: str) -> dict:
        with self._lock:
            return dict(self._tentative.get(prompt_id, {}))


WALKS = Walks()
_hook_lock = threading.Lock()


def install_commit_hook(queue, walks: Walks = WALKS) -> bool:
    """Wrap `queue.task_done` so a prompt's positions are committed before it enters /history.

    Idempotent. False (and the loader commits at once) when the queue does not look like ComfyUI's.
    """
    with _hook_lock:
        original = getattr(queue, "task_done", None)
        if original is None or not callable(original):
            if not walks.warned:
                walks.warned = True
                log.warning("Image Folder Loader: ComfyUI's prompt queue has no task_done; walk positions are "
                            "saved when an image is handed out, even if its run is cancelled later")
            return False
        if getattr(original, "_datasete_walks", None) is walks:
            return True

        def task_done(item_id, *args, **kwargs):
            try:
                status = kwargs.get("status", args[1] if len(args) > 1 else None)
                success = getattr(status, "status_str", None) == "success"
                walks.finish(_prompt_id_of(queue, item_id), success)
            except Exception:  # noqa: BLE001 - a bug here must never keep ComfyUI from finishing a prompt
                log.exception("Image Folder Loader: committing walk positions failed")
            return original(item_id, *args, **kwargs)

        task_done._datasete_walks = walks
        queue.task_done = task_done
        return True


def _prompt_id_of(queue, item_id) -> str | None:
    """The id of the prompt a queue item is: item[1] of ComfyUI's queue items (number, prompt_id, ...)."""
    mutex = getattr(queue, "mutex", None)
    running = getattr(queue, "currently_running", None)
    if mutex is not None and isinstance(running, dict):
        with mutex:
            item = running.get(item_id)
        if isinstance(item, (tuple, list)) and len(item) > 1 and isinstance(item[1], str):
            return item[1]
    server = getattr(queue, "server", None)
    return getattr(server, "last_prompt_id", None)
