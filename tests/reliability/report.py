"""Run every part of the reliability suite at full size and write docs/RELIABILITY.md.

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/python python tests/reliability/report.py

Each part starts its own real ComfyUI (and, for part 8, Debian chromium), so the figures of one part are
not disturbed by another. The markdown shows every figure with its bound and PASS or FAIL; the command
exits non-zero if any figure misses its bound or a part could not run. `--parts 3,6` runs some parts only
(the report then holds only those); `--output` writes elsewhere.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
for path in (str(REPO_ROOT / "tests"), str(REPO_ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

from comfy_server import ComfyServer, comfy_paths  # noqa: E402

from reliability import (  # noqa: E402
    browser_resilience,
    cancel_storm,
    concurrency,
    crash_publish,
    disk_trouble,
    hostile_ids,
    http_fuzz,
    soak,
)
from reliability.harness import Figure, PartResult  # noqa: E402

COMMAND = "python tests/reliability/report.py"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")

# What each part does, for the reader of the report.
DESCRIPTIONS = {
    "1": ("Every id of a catalogue of hostile slot ids goes through every door: the node's send_id (with an "
          "image wired) and get_id (without) in real ComfyUI prompts, the list route (with the id in its query, "
          "and with a valid slot planted in gate_bus under each hostile name the file system allows), the "
          "command line `python -m gates.bus show|put|export|rm` (every id through its entry point, one id of "
          "each category as a real process), and the pack's own functions. Valid-looking canary slots are "
          "planted outside gate_bus exactly where traversal and absolute ids would land, watched with inotify "
          "(a read leaves no trace on disk) and snapshotted with every other file before and after."),
    "2": ("Hypothesis draws requests for every route (method, path, HTTP version, headers, framing: lengths "
          "that lie, chunking, compression, oversize declarations; bodies: broken JSON, wrong types, bad routes, "
          "masks of the wrong size or not PNG) and writes them byte by byte on a raw socket while a gate waits. "
          "An oracle mirroring the API turns any request that would legitimately decide the gate into a bad one "
          "first, so a gate released during fuzzing was released by a bad request. After each request the gate "
          "must still be waiting; after each round a proper choice must decide it. Run against the pack's "
          "handlers in a plain aiohttp app and against a real ComfyUI."),
    "3": ("A real ComfyUI publishes two-frame 2048x2048 batches and a mask to one slot; each publish's colours "
          "and mask level encode its number. The server is killed with SIGKILL at a random moment after the "
          "choice (uniform over a little more than a publish's duration), then restarted on the same base "
          "directory. The slot is then read and must hold one whole publish, the one in flight or the last one "
          "confirmed; staging folders must be gone after the restart."),
    "4": ("Publishers and readers hammer one slot at once from threads of one process and from separate "
          "processes. Every publish describes itself in every pixel, its frame count, size and mask layout, so "
          "a reader can tell any mix of two publishes. Each read also lists the slots."),
    "5": ("Each round queues a gated prompt and fires one action: /interrupt before, at a random moment, during "
          "the pause or right after a choice; the gate's cancel during the pause or right after a choice; a "
          "stale token's cancel before the pause; cancel and interrupt together; choose and cancel racing. The "
          "prompt must end as the API promises, no pause may be left, and the next prompt must run."),
    "6": ("Gated prompts in a row in one real ComfyUI, each chosen through the HTTP API: batches of 1-3 frames "
          "of several sizes, painted masks, publishes to a slot and gates loading from it, a websocket client "
          "counting events. Threads and resident memory of the server come from /proc/PID/status; each prompt "
          "is removed from ComfyUI's history once checked, so ComfyUI's own bookkeeping does not count as "
          "growth."),
    "7": ("ComfyUI's input folder is a small tmpfs mounted by the test (tests run as root, where chmod stops "
          "nothing): remounted read-only, then filled completely, then filled to within 256 KiB so a publish "
          "fails part-way. Each failed publish must give an error naming the slot and the cause, leave the old "
          "slot byte for byte and no staging folder, and the server must go on running gated prompts. Also run "
          "on the pack's functions without ComfyUI."),
    "8": ("The real ComfyUI frontend in Debian chromium with the example workflow: reload the page while the "
          "gate waits; two tabs, where a choice in one must clear the other; the websocket dropped (relayed "
          "through Playwright, closed, and every reconnect kept silent for a while) while another client decides "
          "the pause and a new one starts, then restored. Each cycle must end with a click on a route button "
          "inside the node deciding the pause shown."),
}

PYTEST_NOTES = {
    "1": "`python -m pytest tests/reliability/test_hostile_ids.py` runs the same catalogue and doors (with 2 "
         "command-line processes instead of 12).",
    "2": "`python -m pytest tests/reliability/test_http_fuzz.py` sends 360 requests in process and 240 to a real "
         "ComfyUI, shrinking any failure to a minimal request; `--heavy` adds the full-size run on ComfyUI.",
    "3": "`python -m pytest tests/reliability/test_crash_publish.py` kills 3 times at 1024x1024; `--heavy` runs "
         "the 50 kills.",
    "4": "`python -m pytest tests/reliability/test_concurrency.py` runs 3 seconds with one process of each kind; "
         "`--heavy` runs the minute.",
    "5": "`python -m pytest tests/reliability/test_cancel_storm.py` runs 27 rounds (3 of each action); "
         "`--heavy` runs 200.",
    "6": "`python -m pytest tests/reliability/test_soak.py` runs 30 prompts; `--heavy` runs 500.",
    "7": "`python -m pytest tests/reliability/test_disk_trouble.py` runs both, as here.",
    "8": "`python -m pytest tests/reliability/test_browser_resilience.py` runs one cycle of each scenario; "
         "`--heavy` runs 10.",
}


def chromium_path() -> str | None:
    explicit = os.environ.get("CHROMIUM_PATH")
    if explicit:
        return explicit
    return next((p for p in CHROMIUM_CANDIDATES if os.path.exists(p)), shutil.which("chromium"))


class Servers:
    """Each part gets a fresh ComfyUI; all are stopped and their folders removed at the end."""

    def __init__(self):
        self.started: list[ComfyServer] = []

    def new(self, **options) -> ComfyServer:
        server = ComfyServer(**options)
        self.started.append(server)
        return server

    def fresh(self) -> ComfyServer:
        return self.new().start()

    def cleanup(self) -> None:
        for server in self.started:
            server.cleanup()


def part_1(servers: Servers) -> list[PartResult]:
    work = Path(tempfile.mkdtemp(prefix="datasete-hostile-"))
    try:
        unit = hostile_ids.run_unit(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [hostile_ids.run_real(servers.fresh(), REPO_ROOT, cli_processes=12), unit]


def part_2(servers: Servers) -> list[PartResult]:
    return [http_fuzz.run_comfy(servers.fresh(), gates=20, per_gate=250, seed_value=2026),
            http_fuzz.run_in_process(gates=10, per_gate=300, seed_value=2027)]


def part_3(servers: Servers) -> list[PartResult]:
    base = Path(tempfile.mkdtemp(prefix="datasete-crash-"))
    try:
        return [crash_publish.run(lambda: servers.new(base_dir=base), kills=50, size=2048)]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def part_4(_servers: Servers) -> list[PartResult]:
    return [concurrency.run(seconds=60, threads=2, processes=2)]


def part_5(servers: Servers) -> list[PartResult]:
    return [cancel_storm.run(servers.fresh(), rounds=200)]


def part_6(servers: Servers) -> list[PartResult]:
    return [soak.run(servers.fresh(), prompts=500, warmup=50)]


def part_7(servers: Servers) -> list[PartResult]:
    return [disk_trouble.run_comfy(lambda mount: servers.new(input_directory=mount)), disk_trouble.run_unit()]


def part_8(servers: Servers) -> list[PartResult]:
    executable = chromium_path()
    if executable is None:
        result = PartResult("8", "Browser resilience")
        result.skipped = "no chromium found (install Debian's chromium, or set CHROMIUM_PATH)"
        return [result]
    return [browser_resilience.run(servers.fresh(), executable, cycles=10)]


PARTS = {"1": part_1, "2": part_2, "3": part_3, "4": part_4, "5": part_5, "6": part_6, "7": part_7, "8": part_8}
TITLES = {"1": "Hostile ids", "2": "HTTP fuzzing", "3": "Crash during publish", "4": "Concurrency",
          "5": "Cancel storms", "6": "Soak", "7": "Disk trouble", "8": "Browser resilience"}


# --- the markdown ---------------------------------------------------------------------------------------------


def scrub(text: str) -> str:
    """Keep this machine's folders out of the report."""
    replacements = [(str(REPO_ROOT), "<repo>"), (tempfile.gettempdir().rstrip("/") + "/", "<tmp>/"),
                    (str(Path.home()), "~")]
    paths = comfy_paths()
    if paths is not None:
        replacements.insert(0, (str(paths[0]), "<ComfyUI>"))
    for old, new in replacements:
        text = text.replace(old, new)
    return text.replace("|", "\\|").replace("\n", " ")


def cell(value) -> str:
    return scrub(str(value))


def machine(start_state: tuple[str, bool]) -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    memory = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            total_kib = int(next(line for line in handle if line.startswith("MemTotal")).split()[1])
        memory = f"{total_kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    comfy_version = torch_version = "?"
    paths = comfy_paths()
    if paths is not None:
        try:
            comfy_version = (paths[0] / "comfyui_version.py").read_text().split('"')[1]
        except (OSError, IndexError):
            pass
        done = subprocess.run([paths[1], "-c", "import torch; print(torch.__version__)"], capture_output=True,
                              text=True)
        torch_version = done.stdout.strip() or "?"
    now = pack_state()
    pack = f"- Pack at commit {start_state[0]}"
    if start_state[1]:
        pack += " with uncommitted changes to its code"
    if now != start_state:
        pack += f" (the code changed during the run: commit {now[0]} at the end)"
    return [
        f"- Machine: {os.cpu_count()} CPU cores ({cpu}), {memory}, {platform.system()} {platform.release()}",
        f"- ComfyUI {comfy_version} run with --cpu, torch {torch_version}, Python {platform.python_version()}",
        pack,
    ]


PACK_CODE = ("__init__.py", "gates", "web")


def pack_state() -> tuple[str, bool]:
    """(short commit, whether the pack's own code has uncommitted changes)."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                            text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *PACK_CODE],
                           cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    return commit, bool(dirty)


def render(results: dict[str, list[PartResult]], started: datetime.datetime, seconds: float,
           start_state: tuple[str, bool]) -> str:
    all_results = [r for group in results.values() for r in group]
    verdict = "every figure is at its bound" if all(r.passed for r in all_results) else "SOME FIGURES FAIL"
    lines = [
        "# Reliability report",
        "",
        "People leave a gate waiting overnight, open three tabs, reload, press Cancel at the wrong moment, type "
        "`../` into a text box and kill ComfyUI in the middle of a save. This report measures what the pack "
        "does then. It is generated, figures and all, by one command:",
        "",
        "```sh",
        f"COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/ComfyUI/python {COMMAND}",
        "```",
        "",
        "It runs every part at full size, each against its own real ComfyUI (part 8 also drives Debian chromium "
        "through Playwright; part 7 mounts tmpfs file systems, so it needs root or CAP_SYS_ADMIN), and exits "
        "non-zero if any figure misses its bound. The same code runs in pytest: light versions of every part "
        "in the normal run, the long ones (kill loop, soak, storms, minute-long concurrency, browser cycles) "
        "with `--heavy`:",
        "",
        "```sh",
        "python -m pytest tests/reliability            # light versions (real tiers with COMFYUI_DIR set)",
        "python -m pytest tests/reliability --heavy    # also the full-size kill loop, soak, storms, cycles",
        "```",
        "",
        f"## Result: {verdict}",
        "",
        f"Run on {started:%Y-%m-%d %H:%M} UTC, {seconds / 60:.1f} minutes in all.",
        "",
        *machine(start_state),
        "",
        "| part | | result | seconds |",
        "|---|---|---|---|",
    ]
    for part, group in results.items():
        for result in group:
            state = "SKIPPED" if result.skipped else ("PASS" if result.passed else "FAIL")
            lines.append(f"| {part} | {cell(result.title)} | {state} | {result.seconds} |")
    for part, group in results.items():
        lines += ["", f"## {part}. {TITLES[part]}", "", DESCRIPTIONS[part], "", f"In pytest: {PYTEST_NOTES[part]}"]
        for result in group:
            lines += ["", f"### {cell(result.title)}", ""]
            if result.skipped:
                lines += [f"SKIPPED: {cell(result.skipped)}"]
                continue
            lines += ["| figure | value | bound | result |", "|---|---|---|---|"]
            for figure in result.figures:
                verdict_cell = "PASS" if figure.passed else "**FAIL**"
                lines.append(f"| {cell(figure.name)} | {cell(figure.value)} | {cell(figure.bound or 'stated')} | "
                             f"{verdict_cell} |")
            if result.notes:
                lines += ["", "Notes from the run:", ""]
                lines += [f"- {cell(note)[:400]}" for note in result.notes[:12]]
                if len(result.notes) > 12:
                    lines.append(f"- ... and {len(result.notes) - 12} more")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated part numbers (default: all)")
    parser.add_argument("--output", default=str(REPO_ROOT / "docs" / "RELIABILITY.md"),
                        help="where to write the markdown (default: docs/RELIABILITY.md)")
    args = parser.parse_args(argv)
    if comfy_paths() is None:
        print("set COMFYUI_DIR (a ComfyUI source tree) and COMFYUI_PYTHON (its interpreter)", file=sys.stderr)
        return 2
    chosen = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}: choose from {', '.join(PARTS)}")
    started = datetime.datetime.now(datetime.timezone.utc)
    start_state = pack_state()
    clock = time.monotonic()
    results: dict[str, list[PartResult]] = {}
    for part in chosen:
        print(f"part {part}: {TITLES[part]} ...", flush=True)
        servers = Servers()
        part_clock = time.monotonic()
        try:
            results[part] = PARTS[part](servers)
        except Exception as exc:  # noqa: BLE001 - a part that crashes is reported, the others still run
            crashed = PartResult(part, TITLES[part])
            crashed.figures.append(_crash_figure(exc))
            crashed.notes.append(traceback.format_exc()[-1500:])
            crashed.seconds = round(time.monotonic() - part_clock, 1)
            results[part] = [crashed]
        finally:
            servers.cleanup()
        for result in results[part]:
            state = "skipped: " + result.skipped if result.skipped else ("PASS" if result.passed else
                                                                         "FAIL: " + "; ".join(result.failures()))
            print(f"  {result.title}: {state} ({result.seconds} s)", flush=True)
    text = render(results, started, time.monotonic() - clock, start_state)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0 if all(r.passed for group in results.values() for r in group) else 1


def _crash_figure(exc: BaseException) -> Figure:
    message = re.sub(r"\s+", " ", str(exc))[:300]
    return Figure("the part ran to the end", f"crashed: {type(exc).__name__}: {message}", "ran", False)


if __name__ == "__main__":
    sys.exit(main())
