"""Command line for image pools: python -m gates.pool {list,show,add,move,export,rm}.

It reads and changes pools through the same code as the nodes (pools.add_frames, pools.move, ...),
so the id rules, the crash-safe writes and the lock that keeps processes apart are the same.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from .. import bus, folders, imaging, pools
from ..constants import POOL_DIR_NAME, POOL_KEPT, POOL_STATES
from ..storage import is_remote
from .common import EXIT_OK, EXIT_OS_ERROR, EXIT_USAGE, CliError, reason, run_reporting, store_base

EXIT_BAD_ID = 3
EXIT_NO_POOL = 4
EXIT_BAD_POOL = 5
EXIT_BAD_INPUT = 6
EXIT_WOULD_OVERWRITE = 7

PROG = "python -m gates.pool"

DESCRIPTION = """\
Manage the image pools of Add to Image Pool and the Grid Pool Gate from a shell.

A pool is a folder in ComfyUI's input folder, <input>/gate_pool/<POOL>/, whose items are PNG files
named 000001.png, 000002.png, ... (each with <name>.txt holding its caption, if it has one) in
pending/ (not reviewed yet), kept/ or rejected/. The folder an item is in is its state: moving the
files by hand (caption and image together) is fine, and so is deleting them.

Pool ids: 1 to 64 characters from A-Z a-z 0-9 _ . - , not starting with . or -, not ending with .,
and not a Windows device name (the disk bus's slot id rules)."""

EPILOG = f"""\
examples:
  {PROG} --input-dir ~/ComfyUI/input list
  {PROG} --input-dir ~/ComfyUI/input show portraits
  {PROG} --input-dir ~/ComfyUI/input add portraits ~/photos/*.png          # captions from photo.txt beside each
  {PROG} --input-dir ~/ComfyUI/input add portraits a.png b.png --caption "a portrait"
  {PROG} --input-dir ~/ComfyUI/input move portraits 000012 000013 --to pending   # review them again
  {PROG} --input-dir ~/ComfyUI/input export portraits ./train --repeats 10 --concept "ohwx person"
  {PROG} --input-dir ~/ComfyUI/input rm portraits 000007
  {PROG} --input-dir ~/ComfyUI/input rm portraits --force                   # the whole pool

--input-dir defaults to ComfyUI's input folder when ComfyUI's folder_paths module is importable.
With DATASETE_GATES_STORE=s3://bucket/prefix set (README, "Several servers") the pools on that object
store are used instead, and --input-dir is not needed.

exit codes:
  {EXIT_OK}  success
  {EXIT_OS_ERROR}  the disk refused (permission denied, disk full, ...), or the pool is busy
  {EXIT_USAGE}  bad arguments, or no input folder (pass --input-dir)
  {EXIT_BAD_ID}  invalid pool id or item name
  {EXIT_NO_POOL}  no such pool, or no such item
  {EXIT_BAD_POOL}  the pool cannot be read (a corrupt item file, a state folder that is a link)
  {EXIT_BAD_INPUT}  an IMAGE or caption file cannot be used
  {EXIT_WOULD_OVERWRITE}  export would overwrite files (pass --force); rm of a pool with kept items (pass --force)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input-dir", metavar="PATH",
                        help=f"ComfyUI's input folder; pools live in PATH/{POOL_DIR_NAME} (default: ComfyUI's, "
                             "when run with ComfyUI importable)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    listing = commands.add_parser("list", help="list the pools with their pending, kept and rejected counts")
    listing.add_argument("--json", action="store_true", help='print {"pools": [...]} like GET /datasete_gate/pool/list')

    show = commands.add_parser("show", help="show a pool: counts and every item with its caption")
    show.add_argument("pool", metavar="POOL")
    show.add_argument("--state", choices=POOL_STATES, help="only the items in this state")
    show.add_argument("--json", action="store_true", help="print the details as JSON")

    add = commands.add_parser(
        "add", help="add image files to a pool's pending items",
        description="Add IMAGE files (any format Pillow reads; alpha is kept) to POOL's pending/, in the order "
                    "given. Each image's caption is --caption, else the text of a .txt file of the same name "
                    "beside it (the kohya layout), else none. Images already in the pool are skipped unless "
                    "--allow-duplicates. The pool is made if needed.")
    add.add_argument("pool", metavar="POOL")
    add.add_argument("images", metavar="IMAGE", nargs="+")
    add.add_argument("--caption", metavar="TEXT", help="one caption for every image")
    add.add_argument("--allow-duplicates", action="store_true", help="add images whose pixels are in the pool already")

    move = commands.add_parser("move", help="move items to pending, kept or rejected (caption and image together)")
    move.add_argument("pool", metavar="POOL")
    move.add_argument("names", metavar="NAME", nargs="+")
    move.add_argument("--to", required=True, choices=POOL_STATES, dest="state")

    export = commands.add_parser(
        "export", help="write the kept items into a training folder (kohya layout)",
        description="Write POOL's kept items as DIR/<REPEATS>_<CONCEPT>/<name>.png and <name>.txt (the caption, "
                    "when the item has one): the layout kohya's trainers read. The PNGs are copied byte for "
                    "byte. Existing files are not overwritten unless --force.")
    export.add_argument("pool", metavar="POOL")
    export.add_argument("dir", metavar="DIR")
    export.add_argument("--repeats", type=int, default=1, metavar="N", help="repeats per epoch (default 1)")
    export.add_argument("--concept", required=True, metavar="NAME", help='the concept folder name, e.g. "ohwx person"')
    export.add_argument("--force", action="store_true", help="overwrite files of the same names")

    remove = commands.add_parser(
        "rm", help="delete items, or a whole pool",
        description="With NAMEs, delete those items (image and caption). Without, delete the whole pool; a pool "
                    "that holds kept items is only deleted with --force.")
    remove.add_argument("pool", metavar="POOL")
    remove.add_argument("names", metavar="NAME", nargs="*")
    remove.add_argument("--force", action="store_true", help="delete a pool even though it holds kept items")
    return parser


# --- commands ----------------------------------------------------------------------------------

def cmd_list(base: Path, args) -> int:
    found = pools.list_pools(base)
    if args.json:
        print(json.dumps({"pools": found}))
        return EXIT_OK
    if not found:
        print(f"no pools in {base}")
        return EXIT_OK
    width = max(4, *(len(entry["id"]) for entry in found))
    print(f"{'pool':<{width}}  {'pending':>7}  {'kept':>7}  {'rejected':>8}")
    for entry in found:
        print(f"{entry['id']:<{width}}  {entry['pending']:>7}  {entry['kept']:>7}  {entry['rejected']:>8}")
    return EXIT_OK


def pool_details(base: Path, pool: str, state: str | None = None) -> dict:
    if is_remote(base):
        from ..storage import s3pools

        items = [{"name": item.name, "state": item.state, "file": f"{item.state}/{item.png}", "bytes": size,
                  "caption": caption} for item, size, caption in s3pools.items(base, pool, state)]
        return {"id": pool, "folder": s3pools.pool_url(base, pool), **pools.pool_counts(base, pool), "items": items}
    with pools.opened(base, pool) as found:
        items = []
        for wanted in POOL_STATES:
            if state is not None and wanted != state:
                continue
            for item in found.in_state(wanted):
                st = os.lstat(found.path(item.state, item.png))
                items.append({"name": item.name, "state": item.state, "file": f"{item.state}/{item.png}",
                              "bytes": st.st_size, "caption": pools.read_caption(found, item)})
        return {"id": pool, "folder": str(found.folder), **found.counts(), "items": items}


def cmd_show(base: Path, args) -> int:
    details = pool_details(base, args.pool, args.state)
    if args.json:
        print(json.dumps(details, indent=1, ensure_ascii=False))
        return EXIT_OK
    print(f"pool      {details['id']}\nfolder    {details['folder']}")
    print(f"items     pending {details['pending']} · kept {details['kept']} · rejected {details['rejected']}")
    for item in details["items"]:
        caption = item["caption"]
        shown = "(no caption)" if caption is None else caption.replace("\n", " ⏎ ")
        if len(shown) > 70:
            shown = shown[:69] + "…"
        print(f"  {item['state']:<8}  {item['name']}  {item['bytes']:>9} bytes  {shown}")
    return EXIT_OK


def read_caption_file(path: Path) -> str | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CliError(EXIT_BAD_INPUT, f"cannot read caption {str(path)!r}: {reason(exc)}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CliError(EXIT_BAD_INPUT, f"caption {str(path)!r} is not UTF-8 text: {exc}") from exc
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


def cmd_add(base: Path, args) -> int:
    frames = [bus.read_input_image(path) for path in args.images]
    if args.caption is not None:
        captions = [args.caption or None] * len(frames)
    else:
        captions = [read_caption_file(Path(path).with_suffix(".txt")) or None for path in args.images]
    pools.sweep_root(base)
    result = pools.add_frames(base, args.pool, frames, captions, skip_duplicates=not args.allow_duplicates)
    skipped = [args.images[i] for i in result.duplicates]
    print(f"{args.pool}: {result.summary()}")
    if result.added:
        print(f"added {', '.join(result.added)}")
    for path in skipped:
        print(f"skipped {path}: its pixels are in the pool already")
    return EXIT_OK


def cmd_move(base: Path, args) -> int:
    result = pools.move(base, args.pool, dict.fromkeys(args.names, args.state))
    if result.missing:
        raise CliError(EXIT_NO_POOL, f"pool {args.pool!r} has no item {', '.join(result.missing)}"
                                     + (f" (moved {', '.join(result.moved)})" if result.moved else ""))
    print(f"moved {', '.join(result.moved)} to {args.state}/")
    return EXIT_OK


_CONCEPT = re.compile(r"[^\x00-\x1f\x7f/\\:*?\"<>|]{1,100}")


def check_concept(concept: str) -> str:
    """A concept name becomes part of a folder name: no separators, control or reserved characters."""
    if not _CONCEPT.fullmatch(concept) or concept.strip() != concept or concept.strip(".") == "":
        raise CliError(EXIT_USAGE, f"invalid concept {concept!r}: 1 to 100 characters, no / \\ : * ? \" < > | "
                                   "or control characters, no leading or trailing space, not only dots")
    return concept


def cmd_export(base: Path, args) -> int:
    if args.repeats < 1:
        raise CliError(EXIT_USAGE, f"--repeats must be 1 or more, got {args.repeats}")
    concept = check_concept(args.concept)
    target_root = Path(args.dir).expanduser()
    target = target_root / f"{args.repeats}_{concept}"
    for path in (target_root, target):
        if path.exists() and not path.is_dir():
            raise CliError(EXIT_WOULD_OVERWRITE, f"{str(path)!r} exists and is not a folder")
    if is_remote(base):
        files, count = _kept_files_remote(base, args.pool)
    else:
        files, count = _kept_files(base, args.pool)
    clashes = [name for name, _ in files if os.path.lexists(target / name)]
    if clashes and not args.force:
        shown = ", ".join(clashes[:5]) + (f" and {len(clashes) - 5} more" if len(clashes) > 5 else "")
        raise CliError(EXIT_WOULD_OVERWRITE, f"{str(target)!r} already has {shown}; pass --force to overwrite")
    target.mkdir(parents=True, exist_ok=True)
    for name, data in files:
        folders.write_atomic(target / name, data)
    captions = sum(1 for name, _ in files if name.endswith(".txt"))
    print(f"exported {count} kept item(s) of {args.pool} ({captions} with a caption) -> {target}")
    return EXIT_OK


def _checked_png(pool: str, item, png: bytes) -> bytes:
    try:
        imaging.read_image_pixels(png)  # a corrupt kept file must not reach a training set
    except imaging.ImagingError as exc:
        raise pools.PoolError(f"pool {pool!r}: {item.state}/{item.png} is not a readable image ({exc})") from None
    return png


def _kept_files_remote(base, pool: str) -> tuple[list[tuple[str, bytes]], int]:
    from ..storage import s3pools

    files = []
    kept = s3pools.items(base, pool, POOL_KEPT)
    for item, _size, caption in kept:
        files.append((f"{item.name}.png", _checked_png(pool, item, s3pools.read_item_png(base, pool, item))))
        if caption is not None:
            files.append((f"{item.name}.txt", caption.encode("utf-8")))
    return files, len(kept)


def _kept_files(base, pool: str) -> tuple[list[tuple[str, bytes]], int]:
    with pools.opened(base, pool) as found:
        items = found.in_state(POOL_KEPT)
        files = []
        for item in items:
            files.append((f"{item.name}.png", _checked_png(pool, item, pools._read_file(found, item.state, item.png))))
            caption = pools.read_caption(found, item)
            if caption is not None:
                files.append((f"{item.name}.txt", caption.encode("utf-8")))
        return files, len(items)


def cmd_rm(base: Path, args) -> int:
    if args.names:
        result = pools.remove_items(base, args.pool, args.names)
        if result.missing:
            raise CliError(EXIT_NO_POOL, f"pool {args.pool!r} has no item {', '.join(result.missing)}"
                                         + (f" (removed {', '.join(result.moved)})" if result.moved else ""))
        print(f"removed {', '.join(result.moved)}")
        return EXIT_OK
    counts = pools.pool_counts(base, args.pool)
    if counts[POOL_KEPT] and not args.force:
        raise CliError(EXIT_WOULD_OVERWRITE, f"pool {args.pool!r} holds {counts[POOL_KEPT]} kept item(s); "
                                             "pass --force to delete it anyway")
    if not pools.remove_pool(base, args.pool):
        raise pools.PoolNotFound(f"pool {args.pool!r} does not exist")
    print(f"removed pool {args.pool} ({counts['pending']} pending, {counts['kept']} kept, "
          f"{counts['rejected']} rejected)")
    return EXIT_OK


COMMANDS = {"list": cmd_list, "show": cmd_show, "add": cmd_add, "move": cmd_move, "export": cmd_export,
            "rm": cmd_rm}


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "pool", None) is not None:
        pools.validate_pool_id(args.pool)  # before anything is looked up, read or written
    for name in getattr(args, "names", None) or ():
        pools.validate_item_name(name)
    base = store_base(args.input_dir, POOL_DIR_NAME)
    return COMMANDS[args.command](base, args)


def main(argv: list[str] | None = None) -> int:
    return run_reporting(lambda: run(argv), PROG, (
        (pools.PoolIdError, EXIT_BAD_ID),
        (pools.PoolNotFound, EXIT_NO_POOL),
        (pools.CaptionError, EXIT_BAD_INPUT),
        (pools.ItemNotFound, EXIT_NO_POOL),
        (pools.PoolBusy, EXIT_OS_ERROR),
        (pools.PoolError, EXIT_BAD_POOL),
    ))
