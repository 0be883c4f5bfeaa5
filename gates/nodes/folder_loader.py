"""Image Folder Loader: walk a folder of ComfyUI's input folder one image per run, by index, or all at once.

Thin glue over folders (paths, listing, captions, positions) and loader (reading pictures, the
per-prompt commit of a `next` walk). ComfyUI itself is imported only through gates_compat.
"""

from __future__ import annotations

from .. import folders, loader
from ..constants import CATEGORY, EVENT_LOADER, LOADER_MODES

OUTPUTS = 7


class ImageFolderLoader:
    DESCRIPTION = (
        "Loads images from a folder inside ComfyUI's input folder (datasets/cats, gate_pool/cats/kept), "
        "with each image's caption: its same-stem .txt, else .caption. In next mode each run gets the next "
        "image; the place is kept on disk across restarts and only moves when the run succeeds, so a run "
        "cancelled at a later gate gets the same image again. When every image was handed out it blocks "
        "its outputs and says done; Reset starts over. index mode loads one image, all mode every image as a list.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "MASK", "STRING", "STRING", "STRING", "INT", "INT")
    RETURN_NAMES = ("image", "mask", "caption", "name", "path", "index", "remaining")
    # A list in every mode (one item in next and index), so `all` can hand out images of different sizes.
    OUTPUT_IS_LIST = (True,) * OUTPUTS
    OUTPUT_TOOLTIPS = (
        "The image (EXIF orientation applied). In all mode a list: the nodes behind run once per image.",
        "1 - the image's alpha, as ComfyUI's Load Image makes it; zeros of the image's size without alpha.",
        "The caption: the same-stem .txt, else .caption, else empty; UTF-8, a leading BOM and one trailing "
        "line ending removed, nothing else changed.",
        "The file name without its extension (0001 for 0001.png).",
        "The image's path inside ComfyUI's input folder (datasets/cats/0001.png): wire it to a Text Gate's "
        "caption_path to save the edited caption beside the image.",
        "The image's 0-based position in the folder's natural order (2.png before 10.png).",
        "How many images come after this one in the folder.",
    )
    SEARCH_ALIASES = ["folder loader", "dataset loader", "load images from folder", "caption loader"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "folder": ("STRING", {
                    "default": "",
                    "tooltip": "A folder inside ComfyUI's input folder, such as datasets/cats or gate_pool/cats/kept. "
                               "Pick one in the list below the node, or type it. '..' and absolute paths are "
                               "refused; a symbolic link inside the input folder is followed."}),
                "mode": (list(LOADER_MODES), {
                    "default": "next",
                    "tooltip": "next: the image after the last one this folder handed out (kept across "
                               "restarts, moves only when the run succeeds). index: the image at index. "
                               "all: every image, as a list."}),
                "index": ("INT", {
                    "default": 0, "min": 0, "max": 2**31 - 1,
                    "tooltip": "The 0-based image to load in index mode (natural order). Ignored in next and all."}),
            },
            "optional": {
                "include_subfolders": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "Also walk the folders inside the folder (hidden ones are skipped). Its walk "
                               "position is kept apart from the folder's own."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, folder):
        """Refuse a typed-in folder that leaves the input folder or does not exist, before anything runs.

        A linked folder is not known yet here (ComfyUI passes None); run() checks it.
        """
        if folder is None:
            return True
        from .. import gates_compat as comfy

        try:
            folders.resolve_folder(comfy.input_directory(), folder)
        except folders.FolderError as exc:
            return str(exc)
        return True

    @classmethod
    def IS_CHANGED(cls, folder=None, mode="next", index=0, include_subfolders=False, **_kwargs):
        # next: every run is a new image. index and all: cached while the folder and its files are unchanged.
        if mode not in ("index", "all") or folder is None or index is None:
            return float("nan")
        from .. import gates_compat as comfy

        try:
            return loader.fingerprint(comfy.input_directory(), folder, mode, int(index), include_subfolders)
        except (OSError, ValueError):
            return float("nan")  # the run itself reports what is wrong

    def run(self, folder, mode, index, include_subfolders=False, unique_id=None):
        from .. import gates_compat as comfy

        key, path = folders.resolve_folder(comfy.input_directory(), folder)
        recursive = bool(include_subfolders)
        listing = folders.list_images(path, recursive)
        count = len(listing)

        def report(state: str, at: int | None = None, item: loader.Item | None = None) -> dict:
            status = {"node_id": None if unique_id is None else str(unique_id),
                      "prompt_id": comfy.current_prompt_id(), "folder": key, "include_subfolders": recursive,
                      "mode": mode, "state": state, "index": at, "count": count,
                      "remaining": item.remaining if item else (0 if state == "done" else None),
                      "name": item.name if item else None, "path": item.path if item else None,
                      "text": loader.status_text(state, at, count)}
            comfy.broadcast(EVENT_LOADER, status)
            return {"datasete_loader": [status]}

        blocker = comfy.execution_blocker()
        if count == 0:
            return {"ui": report("empty"), "result": (blocker,) * OUTPUTS}

        if mode == "all":
            loaded = [loader.load_item(loader.item_at(key, path, listing, at)) for at in range(count)]
            return {"ui": report("all"), "result": outputs(loaded)}

        if mode == "index":
            at = int(index)
            if not 0 <= at < count:
                raise loader.LoaderError(
                    f"index {at} is out of range: folder {key!r} has {count} image{'s' if count != 1 else ''} "
                    f"(index 0 to {count - 1})")
            item = loader.item_at(key, path, listing, at)
            loaded = loader.load_item(item)
            return {"ui": report("item", at, item), "result": outputs([loaded])}

        # next
        walks = loader.WALKS
        walks.notify = lambda status: comfy.broadcast(EVENT_LOADER, status)
        queue = comfy.prompt_queue()
        deferred = queue is not None and loader.install_commit_hook(queue, walks)
        store = loader.position_store(comfy.user_directory())
        state_key = folders.position_key(key, recursive)
        prompt_id = comfy.current_prompt_id()
        base = walks.current(store, state_key, prompt_id)
        at = listing.index_after(base.last)
        if at >= count:
            return {"ui": report("done"), "result": (blocker,) * OUTPUTS}
        item = loader.item_at(key, path, listing, at)
        moved = folders.Position(item.relative, base.generation)
        try:
            loaded = loader.load_item(item)
        except loader.LoaderError as exc:
            # Move past it now, or every later run would stop at the same file.
            walks.skip(store, state_key, base, moved, prompt_id, folder=key, recursive=recursive, count=count)
            after = f"the next run goes on with {listing.paths[at + 1]!r}" if at + 1 < count else \
                "it was the last image"
            raise loader.LoaderError(f"{exc} (skipped: {after}; Reset on the loader walks the folder again)") from None
        walks.hand_out(store, state_key, base, moved, prompt_id, folder=key, recursive=recursive, count=count,
                       index=at, deferred=deferred)
        return {"ui": report("item", at, item), "result": outputs([loaded])}


def outputs(loaded: list[loader.Loaded]) -> tuple:
    """The seven output lists, one entry per loaded image."""
    return ([entry.image for entry in loaded], [entry.mask for entry in loaded], [entry.caption for entry in loaded],
            [entry.item.name for entry in loaded], [entry.item.path for entry in loaded],
            [entry.item.index for entry in loaded], [entry.item.remaining for entry in loaded])
