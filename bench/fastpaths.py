"""What each cache and fast path of imaging and imagebus buys: each timed against the plain code it
replaces, interleaved, on the same arrays (python -m bench --only fastpaths)."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import tracemalloc
import zlib

import numpy as np
from PIL import Image

from bench.common import interleaved, photo_like


def _row_by_row_up_filter(rows: np.ndarray) -> None:
    pixels = rows[:, 1:]
    for index in range(pixels.shape[0] - 1, 0, -1):
        np.subtract(pixels[index], pixels[index - 1], out=pixels[index])


def _peak_bytes(fn) -> int:
    """Peak of the memory Python and numpy allocate while `fn` runs (libdeflate's output included)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run(quick: bool) -> list[dict]:
    from gates import imagebus, imaging

    side = 256 if quick else 2048
    repeats = 2 if quick else 7
    image = photo_like(side, side, 1, seed=7)
    frames = imaging.image_to_uint8(image)
    frame = frames[0]
    packed = np.ascontiguousarray(frame)
    rows = imaging._padded_rows(frame)
    results = []

    def add(name, ours, plain, what):
        r = interleaved(ours, plain, repeats)
        results.append({"name": name, "what": what, "ours_s": r["ours_s"], "plain_s": r["reference_s"],
                        "ratio": r["ratio"]})

    # 1. Filtering our padded buffer in place (and restoring it) instead of a filtered copy of the frame.
    add("in-place Up filter", lambda: imaging._up_unfilter_in_place(rows, imaging._up_filter_in_place(rows)),
        lambda: imaging._up_filtered_copy(packed), f"{side}x{side} RGB frame, filter (+ restore) vs copy")
    # 1b. What that buys in memory: writing our padded frame against writing a packed copy of it.
    folder = tempfile.mkdtemp(prefix="datasete-fastpaths-")
    try:
        target = os.path.join(folder, "f.png")
        padded_peak = _peak_bytes(lambda: imaging.write_png(target, frame))
        packed_peak = _peak_bytes(lambda: imaging.write_png(target, packed))
        add("in-place Up filter, whole write", lambda: imaging.write_png(target, frame),
            lambda: imaging.write_png(target, packed),
            f"write_png of the padded frame vs a packed one; peak memory {padded_peak / 2**20:.0f} vs "
            f"{packed_peak / 2**20:.0f} MiB")
        results[-1].update(peak_bytes=padded_peak, plain_peak_bytes=packed_peak)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    # 2. The block-wise in-place filter against the same filter one row per numpy call.
    scratch = rows.copy()
    add("block-wise Up filter", lambda: imaging._up_filter_in_place(scratch),
        lambda: _row_by_row_up_filter(scratch), "about 2*sqrt(H) numpy calls vs H")
    # 3. libdeflate's crc32 against zlib's on a compressed frame.
    data = imaging.encode_png(frame)
    if imaging._libdeflate is not None:
        add("libdeflate crc32", lambda: imaging._libdeflate.crc32(data), lambda: zlib.crc32(data),
            f"crc32 of a {len(data) / 2**20:.1f} MiB PNG")
    # 4. The numpy/libdeflate reader against Pillow on the pack's own file.
    if imaging._libdeflate is not None:
        add("fast PNG reader", lambda: imaging._fast_png_decode(data),
            lambda: np.array(Image.open(io.BytesIO(data)).convert("RGB")), "decode of the pack's own PNG")
    # 5. list_ids' cache against the full scan it saves (names, then one check per folder).
    base = tempfile.mkdtemp(prefix="datasete-fastpaths-bus-")
    try:
        count = 200 if quick else 11_000
        for index in range(count):
            os.mkdir(os.path.join(base, f"s{index}"))
            if index % 10 == 0:
                with open(os.path.join(base, f"s{index}", "image.png"), "wb") as handle:
                    handle.write(b"x")
        imagebus.list_ids(base)
        imagebus.list_ids(base)

        def full_scan():
            imagebus._holding_an_image(base, imagebus._candidate_folders(base))

        add("list_ids cache", lambda: imagebus.list_ids(base), full_scan, f"{count} folders, warm call vs full scan")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return results
