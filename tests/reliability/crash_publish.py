"""Part 3: a real ComfyUI killed with SIGKILL at random moments of a publish, restarted on the same base dir.

Each publish is numbered: both frames' colours encode the counter (red + 256 * green, blue tells the frame)
and the painted mask's grey level is the counter modulo 256. After every kill and restart the slot must
hold one whole publish, the last one confirmed or the one in flight: never a torn file, never a mix of two
publishes, never nothing, never an older one. Leftover staging folders must be gone after the restart.
"""

from __future__ import annotations

import io
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from gates import imagebus, slots
from gates.constants import SLOT_STAGING_PREFIX

from .harness import (
    PartResult,
    gated_prompt,
    history_status,
    timed,
    uniform_mask_base64,
    wait_finished,
)

SLOT = "crash_slot"
FRAME_BLUE = (7, 107)  # frame 0 and frame 1


def colour(counter: int, frame: int) -> int:
    return ((counter % 256) << 16) | (((counter // 256) % 256) << 8) | FRAME_BLUE[frame]


def publish_prompt(counter: int, size: int) -> dict:
    return gated_prompt(width=size, height=size, color=colour(counter, 0), second_color=colour(counter, 1),
                        routes=2, send_id=SLOT, output_route=2)


def inspect_slot(bus_dir: Path) -> tuple[str, int | None, str]:
    """("whole", counter, "") for one whole publish, else ("missing" | "torn" | "mixed", None, why)."""
    try:
        contents = slots.bus_read(str(bus_dir), SLOT)
    except imagebus.SlotNotFound as exc:
        return "missing", None, str(exc)
    except (imagebus.SlotError, OSError) as exc:
        return "torn", None, str(exc)
    frames, masks = contents.frames, contents.masks
    if frames.shape[0] != 2 or masks is None:
        return "torn", None, f"{frames.shape[0]} frames, mask {'absent' if masks is None else 'present'}"
    counters = []
    for index in range(2):
        frame = frames[index]
        first = frame[0, 0]
        if not np.all(frame == first):
            return "torn", None, f"frame {index} is not one colour"
        if int(first[2]) != FRAME_BLUE[index]:
            return "mixed", None, f"frame {index} has the blue of another frame"
        counters.append(int(first[0]) + 256 * int(first[1]))
    mask = masks[0]
    if not np.all(mask == mask[0, 0]):
        return "torn", None, "mask is not one grey level"
    if counters[0] != counters[1] or int(mask[0, 0]) != counters[0] % 256:
        return "mixed", None, f"frame counters {counters}, mask {int(mask[0, 0])}"
    return "whole", counters[0], ""


def staging_entries(bus_dir: Path) -> list[str]:
    try:
        return sorted(name for name in os.listdir(bus_dir) if name.startswith(SLOT_STAGING_PREFIX))
    except FileNotFoundError:
        return []


def publish(server, counter: int, size: int, timeout: float = 120.0) -> tuple[str, float]:
    """Queue, wait for the pause, choose with the counter's mask. Returns the prompt id and when it chose."""
    prompt_id = server.queue(publish_prompt(counter, size))
    entry = server.wait_pending(prompt_id=prompt_id, timeout=timeout)[0]
    status, answer = server.post_json("/datasete_gate/choose", {
        "token": entry["token"], "route": 1, "mask": uniform_mask_base64(size, size, counter % 256)})
    if status != 200:
        raise AssertionError(f"choose answered {status}: {answer}")
    return prompt_id, time.monotonic()


def loaded_counter(server) -> int | None:
    """Load the slot in a gate (get_id, no image wired) and read the publish number off its preview."""
    prompt_id = server.queue(gated_prompt(get_id=SLOT, wire_image=False, output_route=2))
    entry = server.wait_pending(prompt_id=prompt_id, timeout=60)[0]
    pixel = np.array(Image.open(io.BytesIO(server.view(entry["images"][0]))).convert("RGB"))[0, 0]
    server.post_json("/datasete_gate/cancel", {"token": entry["token"]})
    wait_finished(server, prompt_id, timeout=60)
    if entry["source"] != "bus" or entry["frames"] != 2:
        return None
    return int(pixel[0]) + 256 * int(pixel[1])


def run(server_factory, *, kills: int, size: int = 1536, seed_value: int = 3) -> PartResult:
    """`server_factory()` makes a ComfyServer on a fixed base dir; it is started, killed and restarted."""
    result = PartResult("3", "Crash during publish")
    rng = random.Random(seed_value)
    server = server_factory()
    bus_dir = server.bus_dir
    counts = {"whole old": 0, "whole new": 0, "torn": 0, "mixed": 0, "missing": 0, "rolled back": 0}
    mid_publish = 0
    leftovers_after_restart = 0
    failed_restarts = 0
    with timed(result):
        try:
            server.start()
            # Calibrate: how long a publish takes here, from the choice to the prompt's end.
            durations = []
            confirmed = 0
            for counter in (1, 2, 3):
                prompt_id, chose_at = publish(server, counter, size)
                history = wait_finished(server, prompt_id, timeout=120)
                if history_status(history) != "success":
                    raise AssertionError(f"calibration publish {counter} ended {history_status(history)}")
                durations.append(time.monotonic() - chose_at)
                confirmed = counter
            # Most of a kill's chances should fall inside the publish: a little past the typical duration.
            window = 1.2 * statistics.median(durations)
            result.stated("image size, frames", f"{size}x{size}, 2 frames + mask")
            result.stated("publish time, choice to prompt end (median of 3, s)", round(statistics.median(durations), 3))
            result.stated("kill delay after the choice (uniform, s)", f"0 .. {window:.3f}")

            for counter in range(4, 4 + kills):
                _, chose_at = publish(server, counter, size)
                delay = rng.uniform(0, window)
                time.sleep(max(0.0, chose_at + delay - time.monotonic()))
                server.stop(kill=True)
                if staging_entries(bus_dir):
                    mid_publish += 1
                try:
                    server.start()
                except RuntimeError as exc:
                    failed_restarts += 1
                    result.note(f"restart after kill {counter} failed: {exc}")
                    server.stop(kill=True)
                    server.start()
                left = staging_entries(bus_dir)
                if left:
                    leftovers_after_restart += 1
                    result.note(f"after kill {counter} and a restart, left over: {left}")
                state, found, why = inspect_slot(bus_dir)
                if state != "whole":
                    counts[state] += 1
                    result.note(f"kill {counter} at +{delay:.3f}s: slot {state}: {why}")
                elif found == counter:
                    counts["whole new"] += 1
                    confirmed = counter
                elif found == confirmed:
                    counts["whole old"] += 1
                else:
                    counts["rolled back"] += 1
                    result.note(f"kill {counter}: slot holds publish {found}, last confirmed {confirmed}")
            # The restarted server still publishes, and a gate loads what it published.
            prompt_id, _ = publish(server, 4 + kills, size)
            final = history_status(wait_finished(server, prompt_id, timeout=120))
            final_state, final_counter, _ = inspect_slot(bus_dir)
            loaded = loaded_counter(server)
        finally:
            server.stop(kill=True)
    result.at_least("SIGKILLs during a publish, each followed by a restart on the same base dir", kills,
                    kills if kills < 50 else 50)
    result.stated("kills that caught a publish half-done (staging folder on disk after the kill)", mid_publish)
    result.stated("after the restart the slot held the publish in flight / the previous one",
                  f"{counts['whole new']} / {counts['whole old']}")
    result.at_most("slots torn", counts["torn"], 0)
    result.at_most("slots mixed (image of one publish, mask or frame of another)", counts["mixed"], 0)
    result.at_most("slots missing", counts["missing"], 0)
    result.at_most("slots rolled back past the last confirmed publish", counts["rolled back"], 0)
    result.at_most("restarts that still found staging leftovers", leftovers_after_restart, 0)
    result.at_most("restarts that failed", failed_restarts, 0)
    result.equal("publish after the last restart", f"{final}, slot {final_state} #{final_counter}",
                 f"success, slot whole #{4 + kills}")
    result.equal("publish a get_id gate then loads and shows", loaded, 4 + kills)
    return result
