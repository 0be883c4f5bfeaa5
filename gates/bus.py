"""Command line for the disk image bus: python -m gates.bus {list,show,put,export,rm}.

It reads and writes slots through the same code as the Image Gate (slots.bus_write,
slots.bus_read, imagebus), so the id rules and the atomic publish are the same.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path

import numpy as np

from . import folders, imagebus, imaging, slots
from .cli.common import EXIT_OK, EXIT_OS_ERROR, EXIT_USAGE, CliError, reason, run_reporting, store_base
from .constants import BUS_DIR_NAME

EXIT_BAD_ID = 3
EXIT_NO_SLOT = 4
EXIT_BAD_SLOT = 5
EXIT_BAD_INPUT = 6
EXIT_WOULD_OVERWRITE = 7

PROG = "python -m gates.bus"

DESCRIPTION = """\
Manage the Image Gate's disk image bus from a shell.

A slot is a named folder in ComfyUI's input folder, <input>/gate_bus/<ID>/. An Image
Gate with send_id=ID publishes the image batch and mask that passed it there; a gate
with no image wired and get_id=ID loads them back, pauses and routes them on, in a
later run, another workflow or after a restart. A slot holds image.png (frame 0),
frame_0001.png ... (the rest of a batch), mask.png (white = 1.0; mask_0001.png ... when
frames have masks of their own) and slot.json (frame count, size, channels).

Slot ids: 1 to 64 characters from A-Z a-z 0-9 _ . - , not starting with . or -, not
ending with ., and not a Windows device name (CON, NUL, COM1 ...). Writes are atomic:
a gate or a reader sees the old slot or the new one, never a mix."""

EPILOG = f"""\
examples:
  {PROG} --input-dir ~/ComfyUI/input list
  {PROG} --input-dir ~/ComfyUI/input show restart_point
  {PROG} --input-dir ~/ComfyUI/input put restart_point photo.png --mask mask.png
  {PROG} --input-dir ~/ComfyUI/input put restart_point f0.png f1.png f2.png
  {PROG} --input-dir ~/ComfyUI/input export restart_point ./out
  {PROG} --input-dir ~/ComfyUI/input rm restart_point

--input-dir defaults to ComfyUI's input folder when ComfyUI's folder_paths module is
importable (ComfyUI's folder on PYTHONPATH); pass it when ComfyUI runs with
--input-directory or --base-directory. With DATASETE_GATES_STORE=s3://bucket/prefix set
(README, "Several servers") the slots on that object store are used instead, and --input-dir
is not needed.

exit codes:
  {EXIT_OK}  success
  {EXIT_OS_ERROR}  the disk refused (permission denied, disk full, ...)
  {EXIT_USAGE}  bad arguments, or no input folder (pass --input-dir)
  {EXIT_BAD_ID}  invalid slot id
  {EXIT_NO_SLOT}  no such slot (show, export, rm)
  {EXIT_BAD_SLOT}  the slot cannot be read (corrupt or missing file, bad slot.json, mask of another size)
  {EXIT_BAD_INPUT}  an IMAGE or MASK file cannot be used (unreadable, sizes differ)
  {EXIT_WOULD_OVERWRITE}  export would overwrite files in DIR (pass --force)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input-dir", metavar="PATH",
                        help="ComfyUI's input folder; slots live in PATH/gate_bus (default: ComfyUI's, "
                             "when run with ComfyUI importable)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    listing = commands.add_parser("list", help="list the slots that hold an image")
    listing.add_argument("--json", action="store_true", help='print {"ids": [...]} like GET /datasete_gate/bus/list')

    show = commands.add_parser("show", help="show a slot: frames, size, channels, mask, files")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print the details as JSON")

    put = commands.add_parser("put", help="publish image files to a slot (several files: a batch, in order)",
                              description="Publish IMAGE files (any format Pillow reads; several make a batch, "
                                          "in the order given; all the same size) to slot ID, replacing it "
                                          "atomically. Alpha is kept: if any frame has alpha, all get it.")
    put.add_argument("id", metavar="ID")
    put.add_argument("images", metavar="IMAGE", nargs="+")
    put.add_argument("--mask", metavar="MASK",
                     help="mask for every frame, the images' size: its alpha channel if it has one, "
                          "else its brightness (white = 1.0)")

    export = commands.add_parser("export", help="write a slot's frames and mask as PNG files into a folder",
                                 description="Write slot ID into DIR as frame_0000.png, frame_0001.png ... and "
                                             "mask.png (mask_0000.png ... when frames have their own masks). "
                                             "DIR is created if needed; existing files are not overwritten "
                                             "unless --force.")
    export.add_argument("id", metavar="ID")
    export.add_argument("dir", metavar="DIR")
    export.add_argument("--force", action="store_true", help="overwrite files of the same names in DIR")

    remove = commands.add_parser("rm", help="delete a slot")
    remove.add_argument("id", metavar="ID")
    return parser


# --- commands ----------------------------------------------------------------------------

def cmd_list(base: Path, args) -> int:
    ids = imagebus.list_ids(base)
    if args.json:
        print(json.dumps({"ids": ids}))
    else:
        for bus_id in ids:
            print(bus_id)
    return EXIT_OK


def slot_details(base: Path, bus_id: str) -> dict:
    contents = slots.bus_read(base, bus_id)
    batch, height, width, channels = contents.frames.shape
    masks = 0 if contents.masks is None else int(contents.masks.shape[0])
    modified = max(st.st_mtime for st in contents.files.values())
    return {
        "id": bus_id,
        "folder": str(imagebus.bus_dir(base, bus_id)),
        "frames": int(batch), "width": int(width), "height": int(height), "channels": int(channels),
        "mask": masks > 0, "mask_frames": masks,
        "modified": datetime.fromtimestamp(modified).astimezone().isoformat(timespec="seconds"),
        "published_at": (contents.manifest or {}).get("published_at"),
        "files": {name: st.st_size for name, st in contents.files.items()},
    }


def cmd_show(base: Path, args) -> int:
    details = slot_details(base, args.id)
    if args.json:
        print(json.dumps(details, indent=1))
        return EXIT_OK
    mode = {1: "gray", 3: "RGB", 4: "RGBA"}[details["channels"]]
    if not details["mask"]:
        mask = "no (a gate loading it gets zeros)"
    elif details["mask_frames"] == 1:
        mask = "yes, one for every frame"
    else:
        mask = "yes, one per frame"
    rows = [("slot", details["id"]), ("folder", details["folder"]), ("frames", details["frames"]),
            ("size", f"{details['width']}x{details['height']}"), ("channels", f"{details['channels']} ({mode})"),
            ("mask", mask), ("modified", details["modified"])]
    for label, value in rows:
        print(f"{label:<10}{value}")
    print("files")
    width = max(len(name) for name in details["files"])
    for name, size in details["files"].items():
        print(f"  {name:<{width}}  {size:>10} bytes")
    print(f"  {'total':<{width}}  {sum(details['files'].values()):>10} bytes")
    return EXIT_OK


def read_input_image(path: str) -> np.ndarray:
    try:
        return imaging.read_image_pixels(path)
    except (imaging.ImagingError, OSError) as exc:
        raise CliError(EXIT_BAD_INPUT, f"cannot read image {path!r}: {reason(exc)}") from exc


def check_batch_size(paths: list[str]) -> None:
    """Refuse a batch by its files' headers, before any is decoded: together they must pass the size rule."""
    sizes = []
    for path in paths:
        try:
            size = imaging.declared_size(path, "it")
        except (imaging.ImagingError, OSError) as exc:
            raise CliError(EXIT_BAD_INPUT, f"cannot read image {path!r}: {reason(exc)}") from exc
        if size is not None:  # else the decoder says what is wrong with the file
            sizes.append(size)
    if sizes:
        width, height = max(sizes, key=lambda size: size[0] * size[1])
        too_big = imaging.oversize(width, height, len(paths))  # a sentence, or None
        if too_big:
            message = too_big.replace('declares', 'would be')
            raise CliError(EXIT_BAD_INPUT, f"the batch of {len(paths)} images {message}")


def cmd_put(base: Path, args) -> int:
    check_batch_size(args.images)
    frames = [read_input_image(path) for path in args.images]
    height, width = frames[0].shape[:2]
    for path, frame in zip(args.images[1:], frames[1:], strict=True):
        if frame.shape[:2] != (height, width):
            raise CliError(EXIT_BAD_INPUT, f"image {path!r} is {frame.shape[1]}x{frame.shape[0]}, "
                                           f"{args.images[0]!r} is {width}x{height}: a batch needs one size")
    if any(frame.shape[2] == 4 for frame in frames):
        frames = [frame if frame.shape[2] == 4 else np.dstack([frame, np.full((height, width), 255, np.uint8)])
                  for frame in frames]
    mask = None
    if args.mask is not None:
        try:
            mask = imaging.read_mask_pixels(args.mask)
        except (imaging.ImagingError, OSError) as exc:
            raise CliError(EXIT_BAD_INPUT, f"cannot read mask {args.mask!r}: {reason(exc)}") from exc
        if mask.shape != (height, width):
            raise CliError(EXIT_BAD_INPUT, f"mask {args.mask!r} is {mask.shape[1]}x{mask.shape[0]}, "
                                           f"the image is {width}x{height}")
    imagebus.sweep_once(base)
    try:
        manifest = slots.bus_write(base, args.id, np.stack(frames), mask)
    except imagebus.SlotIdError:
        raise
    except imagebus.SlotError as exc:
        raise CliError(EXIT_OS_ERROR, str(exc)) from exc
    print(f"published {args.id}: {manifest['frames']} frame(s) {width}x{height}, "
          f"{manifest['channels']} channels, mask {'yes' if manifest['mask'] else 'no'}")
    return EXIT_OK


def export_names(contents: slots.SlotContents) -> list[tuple[str, str]]:
    """(name in the slot, name in the export folder) for every frame and mask."""
    batch = contents.frames.shape[0]
    pairs = [(slots.frame_file_name(i), f"frame_{i:04d}.png") for i in range(batch)]
    masks = 0 if contents.masks is None else contents.masks.shape[0]
    if masks == 1:
        pairs.append((slots.mask_file_name(0), "mask.png"))
    else:
        pairs += [(slots.mask_file_name(i), f"mask_{i:04d}.png") for i in range(masks)]
    return pairs


def cmd_export(base: Path, args) -> int:
    contents = slots.bus_read(base, args.id, keep_data=True)
    target = Path(args.dir).expanduser()
    if target.exists() and not target.is_dir():
        raise CliError(EXIT_WOULD_OVERWRITE, f"{str(target)!r} exists and is not a folder")
    pairs = export_names(contents)
    clashes = [name for _, name in pairs if os.path.lexists(target / name)]
    if clashes and not args.force:
        raise CliError(EXIT_WOULD_OVERWRITE, f"{str(target)!r} already has {', '.join(clashes)}; "
                                             "pass --force to overwrite")
    target.mkdir(parents=True, exist_ok=True)
    for slot_name, out_name in pairs:
        folders.write_atomic(target / out_name, contents.data[slot_name])
    print(f"exported {args.id}: {', '.join(name for _, name in pairs)} -> {target}")
    return EXIT_OK


def cmd_rm(base: Path, args) -> int:
    if not imagebus.delete_id(base, args.id):
        raise CliError(EXIT_NO_SLOT, f"no slot {args.id!r} in {base}")
    print(f"removed {args.id}")
    return EXIT_OK


COMMANDS = {"list": cmd_list, "show": cmd_show, "put": cmd_put, "export": cmd_export, "rm": cmd_rm}


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "id", None) is not None:
        imagebus.validate_id(args.id)  # before anything is looked up, read or written
    base = store_base(args.input_dir, BUS_DIR_NAME)
    return COMMANDS[args.command](base, args)


def main(argv: list[str] | None = None) -> int:
    return run_reporting(lambda: run(argv), PROG, (
        (imagebus.SlotIdError, EXIT_BAD_ID),
        (imagebus.SlotNotFound, EXIT_NO_SLOT),
        (imagebus.SlotError, EXIT_BAD_SLOT),
    ))


if __name__ == "__main__":
    sys.exit(main())
