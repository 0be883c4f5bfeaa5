"""6. Peak memory added by publishing one frame (image + painted mask), in a fresh process.

The process builds the float image and mask tensors first, then resets the kernel's peak-RSS
mark (Linux /proc/self/clear_refs) and publishes; the peak minus the RSS before the publish
is what the publish added: every buffer of torch, numpy, the encoder and Python alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _measure_in_this_process(side: int) -> dict:
    import gc

    import torch

    from bench.common import painted_mask, photo_like
    from gates import imaging, slots

    image = photo_like(side, side, 1, seed=2)
    mask = painted_mask(side, side, 1)
    work = tempfile.mkdtemp(prefix="bench-mem-")
    try:
        slots.bus_save(os.path.join(work, "warm"), "warm", torch.rand(1, 16, 16, 3), None)  # imports, first calls
        gc.collect()
        time.sleep(0.2)
        before = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM to the current RSS
        slots.bus_save(os.path.join(work, "gate_bus"), "big", image, mask)
        peak = _status_kib("VmHWM")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    frame_bytes = side * side * 3
    added = (peak - before) * 1024
    return {"side": side, "backend": imaging.png_backend(), "added_bytes": added, "frame_bytes": frame_bytes,
            "ratio": added / frame_bytes}


def run(quick: bool, backend: str | None = None) -> dict:
    if not os.path.exists("/proc/self/clear_refs"):
        return {"skipped": "needs Linux /proc/self/clear_refs to reset the peak RSS"}
    side = 256 if quick else 4096
    env = dict(os.environ)
    if backend:
        env["DATASETE_GATES_PNG_BACKEND"] = backend
    env["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-m", "bench.memory", "--side", str(side)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"memory worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", type=int, required=True)
    print(json.dumps(_measure_in_this_process(parser.parse_args().side)))
    sys.stdout.flush()
