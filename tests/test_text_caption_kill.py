"""A writer killed (SIGKILL) at random moments while it rewrites one caption, over and over: the caption
on disk is always one whole version, never a torn or empty file, and the next write removes what the
killed writers left behind."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gates import captions, folders
from gates.constants import SCRATCH_SUFFIX

REPO_ROOT = Path(__file__).resolve().parents[1]
PAD = 256 * 1024  # a caption big enough that a write takes a while, so kills land inside writes
ROUNDS = 30

WRITER = f"""
import sys
from gates import captions
target = sys.argv[1]
version = 0
while True:
    version += 1
    captions.write_caption(target, f"version {{version}} " + "x" * {PAD})
    if version == 1:
        print("ready", flush=True)
"""

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")


def whole_version(raw: bytes) -> bool:
    text = folders.decode_caption(raw)
    return text == "original caption" or re.fullmatch(rf"version \d+ x{{{PAD}}}", text) is not None


def test_a_caption_killed_mid_write_is_always_whole(tmp_path):
    target = tmp_path / "1.txt"
    target.write_bytes(b"\xef\xbb\xbforiginal caption\r\n")
    rng = random.Random(9)
    torn, versions = [], set()
    for _ in range(ROUNDS):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=REPO_ROOT,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert writer.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 0.15))
        finally:
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait(10)
            writer.stdout.close()
        raw = target.read_bytes()
        if not raw.startswith(b"\xef\xbb\xbf") or not raw.endswith(b"\r\n") or not whole_version(raw):
            torn.append(raw[:40] + b"..." + raw[-10:])
        versions.add(raw[3:20])
    assert torn == [], f"{len(torn)} torn captions: {torn[:3]}"
    assert len(versions) > 1, "the kills never landed between versions: the test said nothing"
    # What killed writers left is removed by the next write of the caption, and nothing else remains.
    captions.write_caption(target, "final")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(SCRATCH_SUFFIX)]
    assert leftovers == [] and target.read_bytes() == b"\xef\xbb\xbffinal\r\n"
