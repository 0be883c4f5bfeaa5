"""A pool worker to SIGKILL at random instants, and the checks of what it leaves (tests/test_pool_crash.py).

Every frame carries its sequence number in its pixels (and in its caption, for two frames out of
three), so an item on disk says which add it came from, whatever its name. The worker prints one
line per confirmed operation; the parent kills it, then checks the files:

- at the instant of the kill (before any repair): every PNG in pending/kept/rejected decodes whole,
  holds the pixels of one sequence number, and has its exact caption beside it when it has one;
  no name is in two folders;
- after the next use (which repairs): no staging file is left; every sequence number whose add was
  confirmed (and whose removal never started) is in the pool exactly once ("nothing lost"), none is
  there twice ("nothing doubled"), and none whose removal was confirmed is there;
  a name once seen for a sequence number never holds another one (numbers are never reused).

Run as a worker: python tests/pool_crashkit.py BASE POOL FIRST_SEQ SEED SIZE
"""

from __future__ import annotations

import os
import random
import sys

import numpy as np

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gates import imaging, pools  # noqa: E402
from gates.constants import POOL_STAGING_PREFIX, POOL_STATES  # noqa: E402


def frame_for(seq: int, size: int) -> np.ndarray:
    """Noise (so PNGs are big and writes take a while) with the sequence number in the first pixel."""
    pixels = np.random.default_rng(seq).integers(0, 256, (size, size, 3), dtype=np.uint8)
    pixels[0, 0] = (seq % 256, (seq // 256) % 256, (seq // 65536) % 256)
    return pixels


def caption_for(seq: int) -> str | None:
    return None if seq % 3 == 0 else f"caption of frame {seq} ✓"


def seq_of(pixels: np.ndarray) -> int:
    r, g, b = (int(v) for v in pixels[0, 0, :3])
    return r + 256 * g + 65536 * b


def work(base: str, pool: str, first_seq: int, seed: int, size: int) -> None:
    """Forever: add a batch (the same numbers again after a kill: skip_duplicates sorts it out), decide a
    page, and move some decided items back to pending so there is always something to decide."""
    rng = random.Random(seed)
    seq = first_seq
    first = True
    print("ready", flush=True)
    while True:
        action = 0.0 if first else rng.random()
        first = False
        if action < 0.4:
            count = rng.randint(1, 4)
            seqs = list(range(seq, seq + count))
            result = pools.add_frames(base, pool, [frame_for(s, size) for s in seqs], [caption_for(s) for s in seqs])
            print("added", " ".join(map(str, seqs)), flush=True)
            seq += count
            del result
        elif action < 0.7:
            page = pools.pending_page(base, pool, rng.randint(1, 8))
            names = [item.name for item in page.items]
            keep = [name for name in names if rng.random() < 0.5]
            pools.decide(base, pool, keep, [name for name in names if name not in keep])
            print("decided", len(names), flush=True)
        elif action < 0.8:
            found = pools.scan(base, pool)
            decided = [name for name, item in found.items.items() if item.state != "pending"]
            back = rng.sample(decided, min(len(decided), rng.randint(1, 4)))
            pools.move(base, pool, dict.fromkeys(back, "pending"))
            print("moved back", len(back), flush=True)
        else:
            # Removals keep the pool small (so the checks stay quick) and are killed half-way too.
            found = pools.scan(base, pool)
            doomed = rng.sample(sorted(found.items), min(len(found.items), rng.randint(1, 8)))
            seqs = [seq_of(pools.read_pixels(found, found.items[name])) for name in doomed]
            print("removing", " ".join(map(str, seqs)), flush=True)
            pools.remove_items(base, pool, doomed)
            print("removed", flush=True)


class Problems(list):
    def add(self, message: str) -> None:
        self.append(message)


def check_raw(base: str, pool: str) -> tuple[Problems, dict[str, int]]:
    """The files as the kill left them (no repair): name -> sequence number, and what is wrong."""
    problems = Problems()
    found: dict[str, int] = {}
    where: dict[str, str] = {}
    folder = os.path.join(base, pool)
    for state in POOL_STATES:
        path = os.path.join(folder, state)
        if not os.path.isdir(path):
            continue
        names = set(os.listdir(path))
        for name in sorted(names):
            if name.startswith(".") or not name.endswith(".png"):
                continue
            stem = name[:-4]
            if stem in where:
                problems.add(f"{stem} is in {where[stem]}/ and {state}/")
            where[stem] = state
            with open(os.path.join(path, name), "rb") as handle:
                raw = handle.read()
            try:
                pixels = imaging.read_image_pixels(raw)
            except imaging.ImagingError as exc:
                problems.add(f"{state}/{name} is not whole: {exc}")
                continue
            seq = seq_of(pixels)
            if not np.array_equal(pixels, frame_for(seq, pixels.shape[0])):
                problems.add(f"{state}/{name} does not hold the pixels of frame {seq}")
                continue
            found[stem] = seq
            caption = caption_for(seq)
            txt = f"{stem}.txt"
            if caption is None:
                continue
            if txt not in names:
                problems.add(f"{state}/{name} (frame {seq}) has no caption beside it")
                continue
            with open(os.path.join(path, txt), "rb") as handle:
                if handle.read() != caption.encode():
                    problems.add(f"{state}/{txt} is not the exact caption of frame {seq}")
    return problems, found


def check_repaired(base: str, pool: str, confirmed: set[int], names_seen: dict[str, int],
                   removing: set[int] = frozenset(), removed: set[int] = frozenset()) -> Problems:
    """After the next use: no leftovers, nothing lost, nothing doubled, no number reused.

    `removing`: frames whose removal started (they may be there or not); `removed`: confirmed removed.
    """
    problems = Problems()
    try:
        with pools.opened(base, pool) as found:
            pass
    except pools.PoolNotFound:
        if confirmed:
            problems.add(f"the pool is gone, with {len(confirmed)} frames confirmed added")
        return problems
    folder = os.path.join(base, pool)
    seqs: dict[int, list[str]] = {}
    for state in POOL_STATES:
        path = os.path.join(folder, state)
        for name in sorted(os.listdir(path)) if os.path.isdir(path) else []:
            if name.startswith(POOL_STAGING_PREFIX):
                problems.add(f"{state}/{name} is a leftover after the next use")
            elif name.endswith(".txt") and name[:-4] not in found.pngs:
                problems.add(f"{state}/{name} is a caption without its image")
            elif name.endswith(".txt") and state not in found.pngs[name[:-4]]:
                problems.add(f"{state}/{name} is not beside its image")
    _problems, on_disk = check_raw(base, pool)
    problems.extend(_problems)
    for name, seq in on_disk.items():
        seqs.setdefault(seq, []).append(name)
        if names_seen.setdefault(name, seq) != seq:
            problems.add(f"name {name} held frame {names_seen[name]} and now holds frame {seq}: a number reused")
    for seq in sorted(confirmed - removing):
        if seq not in seqs:
            problems.add(f"frame {seq} was confirmed added and is lost")
    for seq in sorted(removed):
        if seq in seqs:
            problems.add(f"frame {seq} was confirmed removed and is still there: {seqs[seq]}")
    for seq, names in seqs.items():
        if len(names) > 1:
            problems.add(f"frame {seq} is in the pool {len(names)} times: {names}")
    return problems


if __name__ == "__main__":
    base_arg, pool_arg, first_arg, seed_arg, size_arg = sys.argv[1:6]
    work(base_arg, pool_arg, int(first_arg), int(seed_arg), int(size_arg))
