"""Part 1: hostile slot ids through every door; nothing may be read or written outside gate_bus.

Canaries: valid-looking slots planted OUTSIDE gate_bus exactly where traversal and absolute ids would
land, watched with inotify (a read leaves no trace on disk), and a snapshot of every file before and
after. Folders with hostile names are also planted INSIDE gate_bus, each holding a valid slot, so an id
that slipped through validation would find something to load there too.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gates import imagebus, slots
from gates.constants import ROUTE_BUS_LIST, SLOT_STAGING_PREFIX
from gates.nodes import image_gate

from .harness import (
    CanaryWatch,
    PartResult,
    gated_prompt,
    history_error,
    snapshot,
    snapshot_diff,
    timed,
    wait_finished,
    wait_pause_or_done,
    write_slot_files,
)

OUTSIDE = "{outside}"  # replaced by an absolute folder outside the ComfyUI base, made per run

CANARY_RGB = (255, 0, 255)  # a loaded canary would show as magenta
LEGIT_SLOT = "legit_slot"   # one valid slot inside gate_bus: the list route must show it and only it


@dataclass(frozen=True)
class HostileId:
    category: str
    value: str
    # "refuse": every door refuses it with an error naming it.
    # "contained": a valid id whose slot is odd (files inside are links out): a publish may replace it
    # inside gate_bus, a read must refuse it; either way nothing outside is touched.
    expect: str = "refuse"


CATALOGUE: list[HostileId] = [
    # traversal
    HostileId("traversal", ".."),
    HostileId("traversal", "../canary"),
    HostileId("traversal", "../../canary"),
    HostileId("traversal", "../../../../../../../../tmp"),
    HostileId("traversal", "legit_slot/../../canary"),
    HostileId("traversal", "./legit_slot"),
    HostileId("traversal", "."),
    HostileId("traversal", "..."),
    HostileId("traversal", "....//canary"),
    HostileId("traversal", "%2e%2e%2fcanary"),
    HostileId("traversal", "..%2f..%2fcanary"),
    # absolute
    HostileId("absolute", OUTSIDE + "/canary"),
    HostileId("absolute", "/etc/passwd"),
    HostileId("absolute", "/"),
    HostileId("absolute", "//" + OUTSIDE.lstrip("/") + "/canary"),
    HostileId("absolute", "~/canary"),
    HostileId("absolute", "~root"),
    # Windows drive and UNC forms
    HostileId("windows", "C:\\Windows\\win.ini"),
    HostileId("windows", "C:canary"),
    HostileId("windows", "c:/canary"),
    HostileId("windows", "\\\\server\\share\\canary"),
    HostileId("windows", "\\\\?\\C:\\canary"),
    HostileId("windows", "\\\\.\\pipe\\canary"),
    HostileId("windows", "..\\canary"),
    HostileId("windows", "..\\..\\canary"),
    HostileId("windows", "legit_slot:stream"),
    # separators
    HostileId("separator", "a/b"),
    HostileId("separator", "a\\b"),
    HostileId("separator", "legit_slot/"),
    HostileId("separator", "legit_slot\\"),
    HostileId("separator", "legit_slot/image.png"),
    # NUL and control characters
    HostileId("control", "legit_slot\x00"),
    HostileId("control", "legit_slot\x00../../canary"),
    HostileId("control", "\x00"),
    HostileId("control", "legit_slot\n"),
    HostileId("control", "legit_slot\r\n"),
    HostileId("control", "legit\tslot"),
    HostileId("control", "\x1b[31mlegit_slot"),
    HostileId("control", "legit_slot\x7f"),
    HostileId("control", "\x08\x08../canary"),
    # Unicode lookalikes and normalisation tricks
    HostileId("unicode", "\uff0e\uff0e\uff0fcanary"),        # fullwidth ．．／
    HostileId("unicode", "\u2024\u2024/canary"),              # one dot leader ․․
    HostileId("unicode", "\u2025/canary"),                    # two dot leader ‥
    HostileId("unicode", "..\u2215canary"),                   # division slash ∕
    HostileId("unicode", "..\u2044canary"),                   # fraction slash ⁄
    HostileId("unicode", "..\uff3ccanary"),                   # fullwidth reverse solidus ＼
    HostileId("unicode", "\uff4c\uff45\uff47\uff49\uff54_slot"),  # fullwidth ｌｅｇｉｔ
    HostileId("unicode", "legit_slot\u0301"),                  # combining acute accent
    HostileId("unicode", "caf\u00e9"),                          # é precomposed (NFC)
    HostileId("unicode", "cafe\u0301"),                         # é decomposed (NFD)
    HostileId("unicode", "l\u0435git_slot"),                    # Cyrillic е
    HostileId("unicode", "legit_slot\u200b"),                   # zero width space
    HostileId("unicode", "\u202elegit_slot"),                   # right-to-left override
    HostileId("unicode", "\ufefflegit_slot"),                   # byte order mark
    HostileId("unicode", "legit\u00a0slot"),                    # no-break space
    HostileId("unicode", "\ufb01le"),                           # ﬁ ligature
    HostileId("unicode", "legit_slot\ufe52"),                   # small full stop ﹒
    HostileId("unicode", "\u212aelvin"),                        # Kelvin sign K
    HostileId("unicode", "\u0130stanbul"),                      # dotted capital I
    # reserved device names
    HostileId("reserved", "CON"),
    HostileId("reserved", "con"),
    HostileId("reserved", "NUL"),
    HostileId("reserved", "nul.png"),
    HostileId("reserved", "COM1"),
    HostileId("reserved", "LPT9.txt"),
    HostileId("reserved", "AUX"),
    HostileId("reserved", "PRN.tar.gz"),
    HostileId("reserved", "CONIN$"),
    HostileId("reserved", "COM\u00b9"),
    # length
    HostileId("length", "a" * 65),
    HostileId("length", "b" * 255),
    HostileId("length", "c" * 4096),
    # whitespace and edge punctuation
    HostileId("whitespace", " "),
    HostileId("whitespace", "legit_slot "),
    HostileId("whitespace", " legit_slot"),
    HostileId("whitespace", "\t"),
    HostileId("whitespace", "legit slot"),
    HostileId("punctuation", "legit_slot."),
    HostileId("punctuation", "-legit_slot"),
    HostileId("punctuation", ".hidden"),
    HostileId("punctuation", ".staging-new-1-00000000-legit_slot"),
    HostileId("punctuation", "*"),
    HostileId("punctuation", "legit?slot"),
    HostileId("punctuation", "legit|slot"),
    HostileId("punctuation", "<legit_slot>"),
    HostileId("punctuation", '"legit_slot"'),
    # symbolic links planted inside gate_bus
    HostileId("symlink", "linked_out"),                           # the slot folder links outside
    HostileId("symlink", "linked_file", expect="contained"),      # image.png links outside
    HostileId("symlink", "linked_mask", expect="contained"),      # mask.png links outside
]


def resolve(value: str, outside: Path) -> str:
    return value.replace(OUTSIDE, str(outside))


@dataclass
class Arena:
    """The planted world: canaries outside gate_bus, hostile-named and linked slots inside it."""

    input_dir: Path
    outside: Path
    canary_dirs: list[Path]
    watched: list[tuple[Path, set[str] | None]]

    @property
    def bus(self) -> Path:
        return self.input_dir / "gate_bus"

    @property
    def base(self) -> Path:
        return self.input_dir.parent


def plant(input_dir: Path, outside: Path) -> Arena:
    bus = input_dir / "gate_bus"
    bus.mkdir(parents=True, exist_ok=True)
    base = input_dir.parent
    canary_dirs = [input_dir / "canary", base / "canary", outside / "canary", outside / "linked_target",
                   outside / "file_target"]
    for folder in canary_dirs:
        write_slot_files(folder, CANARY_RGB)
    # ".." as a slot is the input folder itself: make it look like a slot too.
    write_slot_files(input_dir, CANARY_RGB)
    write_slot_files(bus / LEGIT_SLOT, (0, 128, 0))
    (bus / "linked_out").symlink_to(outside / "linked_target", target_is_directory=True)
    for name, linked in (("linked_file", "image.png"), ("linked_mask", "mask.png")):
        write_slot_files(bus / name, (0, 0, 200))
        os.remove(bus / name / linked)
        os.symlink(outside / "file_target" / linked, bus / name / linked)
    # Every hostile id that can be a folder name on this system gets a valid slot of its own.
    for hostile in CATALOGUE:
        name = resolve(hostile.value, outside)
        if name in (".", "..") or "/" in name or "\x00" in name or len(os.fsencode(name)) > 255:
            continue
        if hostile.category == "symlink" or os.path.lexists(bus / name) or name.startswith(SLOT_STAGING_PREFIX):
            continue  # a staging-like name is the sweep's to remove, rightly
        write_slot_files(bus / name, (200, 0, 0))
    watched: list[tuple[Path, set[str] | None]] = [(folder, None) for folder in canary_dirs]
    watched.append((input_dir, {"image.png", "mask.png", "slot.json"}))
    return Arena(input_dir, outside, canary_dirs, watched)


def make_outside() -> Path:
    return Path(tempfile.mkdtemp(prefix="datasete-outside-"))


def names_the_id(message: str, value: str) -> bool:
    return repr(value) in message or (value in message and value.strip() != "")


class Doors:
    """Runs attempts and keeps the tallies every door shares."""

    def __init__(self, result: PartResult, arena: Arena):
        self.result = result
        self.arena = arena
        self.attempts = 0
        self.as_expected = 0
        self.escapes = 0
        self.canary_loads = 0
        self.per_door: dict[str, int] = {}
        self.watch = CanaryWatch()
        for folder, only in arena.watched:
            self.watch.watch(folder, only)

    def record(self, door: str, hostile: HostileId, outcome: str, ok: bool, loaded_canary: bool = False) -> None:
        self.attempts += 1
        self.per_door[door] = self.per_door.get(door, 0) + 1
        events_before = len(self.watch.events)
        touched = self.watch.drain()[events_before:]
        if loaded_canary:
            self.canary_loads += 1
        if touched or loaded_canary:
            self.escapes += 1
            self.result.note(f"ESCAPE {door} {hostile.value!r}: {outcome}; {touched[:3]}")
        if ok:
            self.as_expected += 1
        else:
            self.result.note(f"unexpected {door} {hostile.value!r}: {outcome}")


# --- the doors without a server: the node's own functions ------------------------------------------


def unit_doors(doors: Doors) -> None:
    """send_id / get_id / delete / list through the pack's functions, exactly as the node calls them."""
    base = str(doors.arena.bus)
    image = torch.full((1, 8, 8, 3), 0.5)
    mask = torch.zeros((1, 8, 8))
    for hostile in CATALOGUE:
        value = resolve(hostile.value, doors.arena.outside)
        checks = {
            "validate(send_id)": lambda v=value: image_gate.validate_slot_ids(v, ""),
            "validate(get_id)": lambda v=value: image_gate.validate_slot_ids("", v),
            "bus_save": lambda v=value: slots.bus_save(base, v, image, mask),
            "resolve_source": lambda v=value: slots.resolve_source(base, None, v),
            "bus_load": lambda v=value: slots.bus_load(base, v),
            "delete_id": lambda v=value: imagebus.delete_id(base, v),
        }
        for door, call in checks.items():
            if hostile.category == "symlink" and door.startswith("validate"):
                continue  # the id itself is well formed: links are found where the path is used
            if hostile.expect == "contained" and door in ("bus_save", "delete_id"):
                continue  # a real folder inside gate_bus: may be replaced; the snapshot shows nothing left it
            try:
                answer = call()
            except (imagebus.SlotIdError, imagebus.SlotError, ValueError) as exc:
                ok = names_the_id(str(exc), value)
                doors.record(door, hostile, f"refused: {exc}", ok)
                continue
            loaded = isinstance(answer, tuple) and answer[0] is not None and _is_canary(answer[0])
            doors.record(door, hostile, f"accepted: {type(answer).__name__}", False, loaded)
    listed = imagebus.list_ids(base)
    for hostile in CATALOGUE:
        value = resolve(hostile.value, doors.arena.outside)
        # A "contained" slot is a real folder with a valid id: listing it is fine, loading it fails clearly.
        doors.record("list_ids", hostile, f"listed: {value in listed}",
                     value not in listed or hostile.expect == "contained")
    doors.result.stated("slots listed by list_ids", ", ".join(listed))


def _is_canary(image) -> bool:
    pixels = image[0, 0, 0, :3] if isinstance(image, torch.Tensor) else None
    return pixels is not None and bool(torch.allclose(pixels, torch.tensor([1.0, 0.0, 1.0]), atol=0.02))


# --- the doors of a real ComfyUI ---------------------------------------------------------------------


def prompt_door(doors: Doors, server, door: str, hostile: HostileId) -> None:
    """Queue a gate with the id as send_id (image wired) or get_id (no image); it must be refused."""
    value = resolve(hostile.value, doors.arena.outside)
    prompt = gated_prompt(send_id=value, wire_image=True) if door == "send_id" else gated_prompt(
        get_id=value, wire_image=False)
    status, answer = server.post_json("/prompt", {"prompt": prompt, "client_id": "reliability"})
    if status != 200:
        text = json.dumps(answer) if not isinstance(answer, bytes) else answer.decode(errors="replace")
        details = _node_error_text(answer)
        ok = hostile.expect == "refuse" and names_the_id(details, value) or hostile.expect == "contained"
        doors.record(door, hostile, f"refused at queue ({status}): {text[:200]}", ok)
        return
    prompt_id = answer["prompt_id"]
    entry, history = wait_pause_or_done(server, prompt_id)
    loaded_canary = False
    if entry is not None:
        loaded_canary = _preview_is_canary(server, entry)
        server.post_json("/datasete_gate/choose", {"token": entry["token"], "route": 1})
        history = wait_finished(server, prompt_id)
        error = history_error(history)
        if hostile.expect == "contained" and door == "send_id" and not error:
            doors.record(door, hostile, "accepted: published inside gate_bus", True, loaded_canary)
            return
        doors.record(door, hostile, f"PAUSED then {error or 'succeeded'}", False, loaded_canary)
        return
    error = history_error(history)
    if error:
        ok = names_the_id(error, value)
        doors.record(door, hostile, f"refused when run: {error[:200]}", ok)
    else:
        doors.record(door, hostile, "prompt succeeded without refusing the id", False)


def _node_error_text(answer) -> str:
    if not isinstance(answer, dict):
        return str(answer)
    parts = [json.dumps(answer.get("error", ""))]
    for node in (answer.get("node_errors") or {}).values():
        for error in node.get("errors", []):
            parts.append(str(error.get("message", "")))
            parts.append(str(error.get("details", "")))
    return "\n".join(parts)


def _preview_is_canary(server, entry: dict) -> bool:
    try:
        raw = server.view(entry["images"][0])
    except OSError:
        return False
    pixel = np.array(Image.open(io.BytesIO(raw)).convert("RGB"))[0, 0]
    return tuple(int(v) for v in pixel) == CANARY_RGB


def list_door(doors: Doors, server) -> None:
    """The list route must list the legit slot and none of the planted hostile folders, whatever the query."""
    for hostile in CATALOGUE:
        value = resolve(hostile.value, doors.arena.outside)
        query = urllib.parse.urlencode({"id": value, "path": value}, errors="surrogatepass")
        for path in (f"{ROUTE_BUS_LIST}?{query}", f"/api{ROUTE_BUS_LIST}?{query}"):
            status, answer = server.request("GET", path)
            ids = answer.get("ids", []) if isinstance(answer, dict) else []
            # aiohttp itself answers 400 to a request line over 8190 bytes (the 4096-character id, encoded).
            ok = status == 200 and (value not in ids or hostile.expect == "contained") and LEGIT_SLOT in ids and all(
                imagebus.is_valid_id(i) for i in ids) or (status == 400 and len(path) > 8190)
            doors.record("list route", hostile, f"{status} {ids}", ok)


def cli_door(doors: Doors, input_dir: Path, repo_root: Path, subprocess_sample: int = 12) -> bool:
    """`python -m gates.bus show|put|export|rm ID` with each id: a failing exit code and an error naming it.

    Every id goes through the command's own entry point, main(argv), in this process (a Python start per
    call would take minutes); one id of each category, up to `subprocess_sample`, also goes through a
    real `python -m gates.bus` process, so argument decoding by the interpreter is covered too.
    """
    if not (repo_root / "gates" / "bus.py").exists():
        doors.result.note("the command line door (python -m gates.bus) does not exist yet: not tried")
        return False
    from gates import bus as bus_cli

    export_dir = Path(tempfile.mkdtemp(prefix="datasete-export-"))
    sampled_categories: set[str] = set()
    try:
        picture = export_dir / "in.png"
        Image.fromarray(np.full((8, 8, 3), 40, dtype=np.uint8)).save(picture)
        for hostile in CATALOGUE:
            value = resolve(hostile.value, doors.arena.outside)
            # "--" ends the options, as a careful user types it, so an id starting with "-" reaches the
            # command's own id check rather than argparse's option parser.
            commands = {
                "cli show": ["show", "--", value],
                "cli put": ["put", "--", value, str(picture)],
                "cli export": ["export", "--", value, str(export_dir / f"out{doors.attempts}")],
                "cli rm": ["rm", "--", value],
            }
            for door, args in commands.items():
                if hostile.expect == "contained" and door in ("cli put", "cli rm"):
                    continue
                argv = ["--input-dir", str(input_dir), *args]
                code, stderr = _cli_in_process(bus_cli, argv)
                # A "contained" slot may have been republished as a plain one by the node doors before.
                ok = code != 0 and names_the_id(stderr, value) or (hostile.expect == "contained" and code == 0)
                if door == "cli export" and code != 0 and os.path.lexists(args[-1]):
                    ok = False  # refused, yet it wrote into the export folder
                doors.record(door, hostile, f"exit {code}: {stderr.strip()[:200]}", ok)
            if (hostile.category not in sampled_categories and len(sampled_categories) < subprocess_sample
                    and "\x00" not in value):  # a command line cannot carry NUL: the kernel ends the argument there
                sampled_categories.add(hostile.category)
                for command in ("show", "rm"):
                    if hostile.expect == "contained" and command == "rm":
                        continue
                    done = subprocess.run(
                        [sys.executable, "-m", "gates.bus", "--input-dir", str(input_dir), command, "--", value],
                        cwd=repo_root, capture_output=True, timeout=120, env=dict(os.environ, PYTHONIOENCODING="utf-8"))
                    stderr = done.stderr.decode("utf-8", errors="replace")
                    ok = done.returncode != 0 and names_the_id(stderr, value) or (
                        hostile.expect == "contained" and done.returncode == 0)
                    doors.record(f"cli process {command}", hostile, f"exit {done.returncode}: {stderr.strip()[:200]}",
                                 ok)
    finally:
        shutil.rmtree(export_dir, ignore_errors=True)
    return True


def _cli_in_process(bus_cli, argv: list[str]) -> tuple[int, str]:
    stderr, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        try:
            code = bus_cli.main(argv)
        except SystemExit as exc:  # argparse refuses some arguments itself
            code = exc.code if isinstance(exc.code, int) else 2
    return code, stderr.getvalue()


# --- the part ------------------------------------------------------------------------------------------

SNAPSHOT_SKIP = ("comfyui.log", "comfyui.db", "user", "models", "custom_nodes", "temp")


def run_unit(work: Path) -> PartResult:
    """Every hostile id through the pack's functions, no ComfyUI: the fast tier."""
    result = PartResult("1", "Hostile ids (pack functions)")
    if not sys.platform.startswith("linux"):
        result.skipped = "the canary watch uses Linux inotify"
        return result
    with timed(result):
        outside = make_outside()
        try:
            arena = plant(work / "input", outside)
            before = snapshot(work) | {f"outside/{k}": v for k, v in snapshot(outside).items()}
            doors = Doors(result, arena)
            unit_doors(doors)
            doors.watch.close()
            after = snapshot(work) | {f"outside/{k}": v for k, v in snapshot(outside).items()}
            _figures(result, doors, before, after, arena)
        finally:
            shutil.rmtree(outside, ignore_errors=True)
    return result


def run_real(server, repo_root: Path, with_cli: bool = True, cli_processes: int = 12) -> PartResult:
    """Every hostile id through a real ComfyUI's prompts and list route, and the command line."""
    result = PartResult("1", "Hostile ids")
    if not sys.platform.startswith("linux"):
        result.skipped = "the canary watch uses Linux inotify"
        return result
    with timed(result):
        outside = make_outside()
        try:
            arena = plant(server.input_dir, outside)
            watched_roots = (server.base_dir, outside)
            before = _snapshots(watched_roots)
            doors = Doors(result, arena)
            for hostile in CATALOGUE:
                # get_id first: a "contained" id's send_id republishes its odd slot as a plain one.
                for door in ("get_id", "send_id"):
                    prompt_door(doors, server, door, hostile)
            list_door(doors, server)
            if with_cli:
                cli_door(doors, server.input_dir, repo_root, cli_processes)
            doors.watch.close()
            after = _snapshots(watched_roots)
            _figures(result, doors, before, after, arena)
        finally:
            shutil.rmtree(outside, ignore_errors=True)
    return result


def _snapshots(roots) -> dict:
    found = {}
    for index, root in enumerate(roots):
        found |= {f"{index}:{k}": v for k, v in snapshot(root, SNAPSHOT_SKIP).items()}
    return found


def _figures(result: PartResult, doors: Doors, before: dict, after: dict, arena: Arena) -> None:
    changes = snapshot_diff(before, after)
    bus_prefixes = ("input/gate_bus/", "0:input/gate_bus/", "gate_bus/")
    inside = [c for c in changes if c.split(" ", 1)[1].startswith(bus_prefixes)]
    outside = [c for c in changes if c not in inside]
    # A "contained" id may legitimately republish its own slot inside gate_bus; nothing else may change.
    contained = {h.value for h in CATALOGUE if h.expect == "contained"}
    inside_unexpected = [c for c in inside if not any(f"gate_bus/{name}" in c for name in contained)]
    for change in (outside + inside_unexpected)[:20]:
        result.note(f"disk change: {change}")
    for event in doors.watch.events[:20]:
        result.note(f"canary touched: {event}")
    result.at_least("hostile ids in the catalogue", len(CATALOGUE), 40)
    result.stated("categories", ", ".join(sorted({h.category for h in CATALOGUE})))
    result.stated("door attempts", doors.attempts)
    result.stated("attempts per door", ", ".join(f"{door} {count}" for door, count in doors.per_door.items()))
    result.equal("attempts answered as expected (refused with an error naming the id)",
                 doors.as_expected, doors.attempts)
    result.at_most("escapes", doors.escapes, 0)
    result.at_most("files written, changed or removed outside gate_bus", len(outside), 0)
    result.at_most("canary files opened or read outside gate_bus (inotify events)", len(doors.watch.events), 0)
    result.at_most("canary slots loaded", doors.canary_loads, 0)
    result.at_most("files changed inside gate_bus by a refused id", len(inside_unexpected), 0)
