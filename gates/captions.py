"""Captions the Text Gate writes, and the answers it takes. Stdlib only.

Where a caption goes. `caption_path` is an image's path inside ComfyUI's input folder (the Image
Folder Loader's `path` output, such as datasets/cats/0001.png), under the same path rule as the
loader's folder (folders.split_relative: no '..', nothing absolute; a link inside the input folder
is followed). The caption is the same-stem `.txt` beside it (a path that already ends in .txt is
used as it is). The image's folder must exist; nothing is created outside it.

How it is written. The new caption is written to a hidden scratch file beside the .txt, flushed,
and renamed over it, so a reader, a crash or a kill sees the old caption or the new one, never a
half-written file; a scratch file a killed writer left is removed by the next write of that caption.
The file keeps its conventions: a .txt that began with a UTF-8 BOM keeps it, and one that ended with
a line ending (\\n or \\r\\n) ends with the same one, so approving an unchanged caption rewrites the
same bytes. A new .txt is the text in UTF-8, without BOM. Either way the loader reads back exactly
the text written: it removes one BOM and one trailing line ending, so a text that itself ends with a
line ending gets one more, and a text that starts with U+FEFF gets a BOM in front of it.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from . import folders
from .constants import CAPTION_WRITE_EXTENSION, KIND_TEXT, MAX_TEXT_BYTES
from .pause import BadAnswer, Pause, register_answer_parser

_BOM = b"\xef\xbb\xbf"


class CaptionPathError(folders.FolderError):
    """A caption_path the Text Gate must not write to; the message names it."""


# --- where ----------------------------------------------------------------------------------------

def caption_target(input_dir, caption_path) -> tuple[str, Path]:
    """("/"-joined .txt path inside the input folder, the .txt on disk) for an image's caption_path."""
    try:
        parts = folders.split_relative(caption_path, "caption_path")
    except folders.FolderError as exc:
        raise CaptionPathError(str(exc)) from None
    last = parts[-1]
    if last.lower().endswith(CAPTION_WRITE_EXTENSION):
        name = last
    else:
        name = (Path(last).stem or last) + CAPTION_WRITE_EXTENSION
    relative = "/".join(parts[:-1] + [name])
    folder = Path(input_dir).joinpath(*parts[:-1])
    try:
        folder_ok = folder.is_dir()
    except OSError:
        folder_ok = False
    if not folder_ok:
        raise CaptionPathError(f"caption_path {caption_path!r}: its folder does not exist in ComfyUI's input folder "
                               f"({input_dir}); nothing was written")
    target = folder / name
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return relative, target
    except OSError as exc:
        raise CaptionPathError(f"caption_path {caption_path!r}: {relative} cannot be checked: "
                               f"{exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CaptionPathError(f"caption_path {caption_path!r}: {relative} exists and is not a file; "
                               "nothing was written")
    return relative, target


# --- how ------------------------------------------------------------------------------------------

def caption_bytes(text: str, existing: bytes | None) -> bytes:
    """The bytes of a caption file holding `text`, in the conventions of the file it replaces."""
    bom = existing is not None and existing.startswith(_BOM)
    ending = None
    if existing is not None:
        if existing.endswith(b"\r\n"):
            ending = "\r\n"
        elif existing.endswith(b"\n"):
            ending = "\n"
    if ending is None and text.endswith("\n"):
        # The loader removes one trailing line ending: add one so it reads back this very text.
        ending = "\r\n" if text.endswith("\r\n") else "\n"
    if ending == "\n" and text.endswith("\r"):
        ending = "\r\n"  # "\r" + "\n" would read back as one line ending, taking the text's "\r"
    # Likewise the loader removes one leading BOM: a text that starts with U+FEFF needs one in front.
    bom = bom or text.startswith("\ufeff")
    return (_BOM if bom else b"") + (text + (ending or "")).encode("utf-8")


def write_caption(target, text: str) -> bytes:
    """Replace the caption file `target` with `text`, atomically; returns the bytes written."""
    target = Path(target)
    try:
        existing = target.read_bytes()
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        existing, mode = None, None
    data = caption_bytes(text, existing)
    folders.sweep_scratch(target)
    folders.write_atomic(target, data, mode)
    return data


# --- the Text Gate's answer -----------------------------------------------------------------------

def check_text(text, what: str = "text") -> str:
    """A text the gate can pass on and write: a string of at most MAX_TEXT_BYTES in UTF-8."""
    if not isinstance(text, str):
        raise BadAnswer(f"{what} must be a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT_BYTES:  # a character is at least one byte: no need to encode a huge one
        raise BadAnswer(f"{what} is over {MAX_TEXT_BYTES} bytes")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise BadAnswer(f"{what} is not valid Unicode: a lone surrogate at character {exc.start}") from None
    if size > MAX_TEXT_BYTES:
        raise BadAnswer(f"{what} is {size} bytes of UTF-8, over the limit of {MAX_TEXT_BYTES}")
    return text


def parse_text_answer(_pause: Pause, body: dict) -> dict:
    """{"approve": bool, "text": str}: approve is required and a boolean; text is required to approve."""
    if "approve" not in body:
        raise BadAnswer('a text gate is answered with "approve": true or false (and "text")')
    approve = body["approve"]
    if not isinstance(approve, bool):
        raise BadAnswer(f'"approve" must be true or false, got {approve!r}')
    if approve or "text" in body:
        text = check_text(body.get("text"))
    else:
        text = None
    return {"approve": approve, "text": text}


register_answer_parser(KIND_TEXT, parse_text_answer)


# --- the trigger word -----------------------------------------------------------------------------

def trigger_pattern(trigger: str) -> re.Pattern | None:
    """The trigger as a whole word (or phrase), any case; None when there is no trigger."""
    trigger = (trigger or "").strip()
    if not trigger:
        return None
    return re.compile(r"(?<!\w)" + re.escape(trigger) + r"(?!\w)", re.IGNORECASE)


def has_trigger(text: str, trigger: str) -> bool | None:
    """Whether `text` holds the trigger; None when there is no trigger to check."""
    pattern = trigger_pattern(trigger)
    return None if pattern is None else bool(pattern.search(text or ""))
