"""Text Gate: pause the workflow with a text (a caption) to read and edit inside the node.

Thin glue over pause (the rendezvous, kind "text"), captions (where and how a caption is written,
and the answer's rules) and previews. ComfyUI itself is imported only through gates_compat.
"""

from __future__ import annotations

import logging

from .. import captions, imaging, origin
from ..constants import CATEGORY, KIND_TEXT, ON_TIMEOUT_CANCEL
from ..folders import FolderError
from ..pause import GATES, GateBus
from ..previews import remove_previews, save_previews
from ..timeouts import parse_on_timeout, parse_timeout, timeout_inputs
from ..waiting import say_of, status_ui, waiting


def validate_caption_path(input_dir, caption_path) -> tuple[str, object] | None:
    """None for no caption file, else (shown path, .txt path); CaptionPathError naming a bad value."""
    if caption_path is None or caption_path == "":
        return None
    return captions.caption_target(input_dir, caption_path)


class TextGate:
    DESCRIPTION = (
        "Pauses the workflow and shows the text (a caption) in an editable box inside this node, with the "
        "image if one is wired. Approve (Ctrl+Enter) passes the edited text on and, with caption_path, saves it "
        "beside the image as its same-stem .txt (atomically, only inside ComfyUI's input folder). Reject blocks "
        "every output and the run succeeds; Cancel (Esc) stops the run.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("STRING", "IMAGE")
    RETURN_NAMES = ("text", "image")
    OUTPUT_TOOLTIPS = (
        "The approved text, exactly as approved (never trimmed). Blocked on Reject.",
        "The image input, passed through on Approve; blocked on Reject or when no image is wired.",
    )
    SEARCH_ALIASES = ["caption editor", "edit caption", "text review", "human in the loop"]

    bus: GateBus = GATES

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text": ("STRING", {
                    "default": "", "multiline": True,
                    "tooltip": "The text to review: type it, or link it (a captioning node, the Image Folder "
                               "Loader's caption). It is shown for editing when the gate pauses."}),
            },
            "optional": {
                "image": ("IMAGE", {
                    "tooltip": "Shown above the text while the gate waits, and passed through on Approve."}),
                "caption_path": ("STRING", {
                    "default": "",
                    "tooltip": "An image's path inside ComfyUI's input folder (link the loader's path). On "
                               "Approve the text is saved as that image's same-stem .txt. Empty: nothing is "
                               "written. '..' and absolute paths are refused."}),
                "trigger": ("STRING", {
                    "default": "",
                    "tooltip": "A word (or phrase) the text must hold, such as a LoRA trigger: it is highlighted, "
                               "and Approve warns first when it is missing. Any case, whole words."}),
                # New inputs go last, so workflows saved before them load as they were.
                **timeout_inputs(KIND_TEXT),
            },
            "hidden": dict(origin.HIDDEN),
        }

    @classmethod
    def VALIDATE_INPUTS(cls, caption_path=""):
        """Refuse a typed-in caption_path outside the input folder before anything runs (a linked one is
        None here and checked when the gate runs, before it pauses). on_timeout is left to ComfyUI's own
        choice check: a refusal here would be filed under every input this method takes."""
        if caption_path is None or caption_path == "":
            return True
        from .. import gates_compat as comfy

        try:
            validate_caption_path(comfy.input_directory(), caption_path)
        except FolderError as exc:
            return str(exc)
        return True

    @classmethod
    def IS_CHANGED(cls, **_kwargs):
        return float("nan")  # a person decides each run: never serve a gate from the cache

    def run(self, text, unique_id=None, image=None, caption_path="", trigger="", timeout=0,
            on_timeout=ON_TIMEOUT_CANCEL, prompt=None, extra_pnginfo=None):
        from .. import gates_compat as comfy

        timeout = parse_timeout(timeout)
        on_timeout = parse_on_timeout(KIND_TEXT, on_timeout)

        text = "" if text is None else str(text)
        trigger = "" if trigger is None else str(trigger)
        # A bad path fails the run before anyone edits anything.
        target = validate_caption_path(comfy.input_directory(), caption_path)
        blocker = comfy.execution_blocker()

        previews, width, height, frames, temp = [], 0, 0, 0, comfy.temp_directory()
        if image is not None:
            pixels = imaging.image_to_uint8(image)
            frames, height, width = (int(v) for v in pixels.shape[:3])
            previews = save_previews(pixels, temp)
        details = {**origin.origin(extra_pnginfo, prompt, unique_id),
                   "text": text, "trigger": trigger, "trigger_present": captions.has_trigger(text, trigger),
                   "caption_path": caption_path or None, "caption_file": target[0] if target else None,
                   "error": None}
        written = None
        notes = []

        def resolved(done):
            return {"kind": KIND_TEXT, "route": None,
                    "approved": None if done.cancelled or done.answer is None else done.answer["approve"],
                    "written": written, "published": None}

        try:
            while True:
                pause = self.bus.arm(unique_id, 0, prompt_id=comfy.current_prompt_id(), images=previews,
                                     width=width, height=height, frames=frames, kind=KIND_TEXT, details=details,
                                     timeout=timeout, on_timeout=on_timeout)
                with waiting(self.bus, comfy, pause, resolved, on_timeout=on_timeout):
                    notes += pause.notes
                    if pause.timed_out:
                        # Nobody edited it here: approve passes the text as the gate last showed it.
                        pause.answer = {"approve": on_timeout == "approve", "text": details["text"]}
                    answer = pause.answer
                    if not answer["approve"] or target is None:
                        break
                    try:
                        captions.write_caption(target[1], answer["text"])
                        written = target[0]
                        break
                    except (OSError, FolderError) as exc:
                        reason = getattr(exc, "strerror", None) or str(exc)
                        error = f"could not write {target[0]}: {reason}"
                        if pause.timed_out:
                            # Nobody is there to pause again for: pass the text on and say so.
                            notes.append(say_of(comfy, pause, "write_failed", error, logging.ERROR,
                                                file=target[0]))
                            break
                        # The person's edit must not be lost: pause again with it and the reason.
                        details = {**details, "text": answer["text"],
                                   "trigger_present": captions.has_trigger(answer["text"], trigger),
                                   "error": error}
        finally:
            remove_previews(previews, temp)
        if not answer["approve"]:
            return {"ui": {"approved": [False], **status_ui(*notes)}, "result": (blocker, blocker)}
        approved = answer["text"]
        ui = {"text": [approved], "approved": [True], **status_ui(*notes)}
        if written:
            ui["caption_file"] = [written]
        return {"ui": ui, "result": (approved, image if image is not None else blocker)}
