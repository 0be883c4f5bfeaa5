"""8. Pool add: what Add to Image Pool does for 1,000 frames (convert, hash against the pool, write each
item crash-safe with its caption: staged, flushed, renamed) against ComfyUI's SaveImage saving the same
frames, batch by batch, interleaved so both folders grow alike.
9. Grid page: what the Grid Pool Gate does before it waits on a page (read and decode the page's items
from the pool, write small thumbnails, arm, serialize the event) against ComfyUI's PreviewImage of the
same frames; and the bytes the browser fetches for the page (thumbnails against PreviewImage's PNGs).

With COMFYUI_DIR and COMFYUI_PYTHON set, the references are ComfyUI's real nodes.SaveImage and
nodes.PreviewImage, run in a subprocess of ComfyUI's interpreter; without them, exact replicas.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from functools import partial

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from bench.common import interleaved, photo_like
from bench.preview import replica_preview_image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FULL = {"items": 1000, "batch": 4, "side": 512, "pages": ((64, 512), (16, 1024)), "page_repeats": 5}
QUICK = {"items": 12, "batch": 4, "side": 48, "pages": ((8, 48),), "page_repeats": 2}


def replica_save_image(images, output_dir: str, filename_prefix: str = "pool_bench") -> None:
    """ComfyUI 0.3.6x nodes.SaveImage.save_images with folder_paths.get_save_image_path, line for line
    (no %vars% in the prefix, prompt and extra_pnginfo None)."""
    prefix_len = len(filename_prefix)

    def map_filename(filename):
        prefix = filename[:prefix_len + 1]
        try:
            digits = int(filename[prefix_len + 1:].split("_")[0])
        except ValueError:
            digits = 0
        return digits, prefix

    try:
        counter = max(filter(lambda a: os.path.normcase(a[1][:-1]) == os.path.normcase(filename_prefix)
                             and a[1][-1] == "_", map(map_filename, os.listdir(output_dir))))[0] + 1
    except ValueError:
        counter = 1
    for image in images:
        i = 255. * image.cpu().numpy()
        img = Image.fromarray(np.clip(i, 0, 255).astype(np.uint8))
        img.save(os.path.join(output_dir, f"{filename_prefix}_{counter:05}_.png"), pnginfo=PngInfo(), compress_level=4)
        counter += 1


class Frames:
    """Distinct photo-like frames without making a thousand of them: 16 bases, each batch with its own patch."""

    def __init__(self, side: int):
        self.bases = photo_like(side, side, 16, seed=3)
        self.side = side

    def batch(self, index: int, size: int) -> torch.Tensor:
        frames = self.bases[[(index * size + k) % 16 for k in range(size)]].clone()
        noise = torch.Generator().manual_seed(1000 + index)
        patch = min(16, self.side)
        frames[:, :patch, :patch] = torch.rand((size, patch, patch, 3), generator=noise)
        return frames


def gate_add(base: str, images: torch.Tensor, captions: str) -> None:
    """Exactly the node's steps: convert, split the captions, add (duplicates checked)."""
    from gates import imaging, pools

    frames = imaging.image_to_uint8(images)
    pools.add_frames(base, "bench", frames, pools.split_captions(captions, int(frames.shape[0])), True)


def measure_add(config: dict, reference: str, work: str) -> dict:
    base = os.path.join(work, "gate_pool")
    output = os.path.join(work, "output")
    os.makedirs(output)
    frames = Frames(config["side"])
    if reference == "comfy":
        import folder_paths
        import nodes

        folder_paths.set_output_directory(output)
        node = nodes.SaveImage()

        def save(images):
            node.save_images(images, "pool_bench")
    else:
        def save(images):
            replica_save_image(images, output)

    ours, theirs = [], []
    batches = config["items"] // config["batch"]
    for index in range(batches):
        images = frames.batch(index, config["batch"])
        captions = "\n".join(f"frame {index * config['batch'] + k}, a photo" for k in range(config["batch"]))
        pair = [("ours", partial(gate_add, base, images, captions)), ("theirs", partial(save, images))]
        for name, fn in pair if index % 2 == 0 else reversed(pair):
            started = time.perf_counter()
            fn()
            (ours if name == "ours" else theirs).append(time.perf_counter() - started)
    from gates import pools

    added = pools.scan(base, "bench").counts()["pending"]
    assert added == batches * config["batch"], f"the pool holds {added} items, expected {batches * config['batch']}"
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    return {"items": added, "side": config["side"], "ours_s": sum(ours), "reference_s": sum(theirs),
            "ratio": sum(ours) / sum(theirs), "median_batch_ratio": statistics.median(ratios),
            "last_100_ratio": sum(ours[-25:]) / sum(theirs[-25:]), "reference": reference,
            "pool_bytes": _folder_bytes(os.path.join(base, "bench")), "reference_bytes": _folder_bytes(output)}


def _folder_bytes(folder: str) -> int:
    return sum(entry.stat().st_size for root, _dirs, files in os.walk(folder)
               for entry in os.scandir(root) if entry.is_file())


def gate_page(base: str, pool: str, count: int, temp: str, bus) -> list[dict]:
    """Exactly the gate's steps between "it runs" and "waiting": read the page, thumbnails, arm, the event."""
    from gates import grid, pools
    from gates.constants import EVENT_PREVIEW, KIND_GRID

    page = pools.pending_page(base, pool, count)
    pixels = [item.pixels for item in page.items]
    thumbs = grid.save_thumbnails(pixels, temp)
    fulls = [{"filename": item.file, "subfolder": f"gate_pool/{pool}/pending", "type": "input"} for item in page.items]
    items = grid.page_items([item.name for item in page.items], thumbs, fulls, [item.caption for item in page.items],
                            [(int(p.shape[1]), int(p.shape[0])) for p in pixels])
    pause = bus.arm("bench", 0, images=thumbs, source="pool", frames=len(items), kind=KIND_GRID,
                    details={"items": items, "pool": pool, "pending": page.pending, "remaining": 0})
    json.dumps({"type": EVENT_PREVIEW, "data": pause.entry()})
    bus.discard(pause)
    return thumbs


def measure_page(count: int, side: int, repeats: int, reference: str, work: str) -> dict:
    from gates import imaging, pools
    from gates.pause import GateBus

    base = os.path.join(work, f"pages_{side}")
    temp = os.path.join(work, f"temp_{side}")
    os.makedirs(temp)
    images = photo_like(side, side, count, seed=9)
    pools.add_frames(base, "page", imaging.image_to_uint8(images), [f"caption {n}" for n in range(count)])
    if reference == "comfy":
        import folder_paths
        import nodes

        folder_paths.set_temp_directory(temp)
        node = nodes.PreviewImage()

        def preview():
            node.save_images(images)
    else:
        def preview():
            replica_preview_image(images, temp)

    bus = GateBus()

    def clear():
        for name in os.listdir(temp):
            os.remove(os.path.join(temp, name))

    stats = interleaved(lambda: gate_page(base, "page", count, temp, bus), preview, repeats, setup=clear)
    clear()
    gate_page(base, "page", count, temp, bus)
    thumb_bytes = _folder_bytes(temp)
    clear()
    preview()
    preview_bytes = _folder_bytes(temp)
    clear()
    return {"tiles": count, "side": side, "reference": reference, **stats,
            "thumb_bytes": thumb_bytes, "preview_bytes": preview_bytes, "bytes_ratio": thumb_bytes / preview_bytes}


def measure(quick: bool, reference: str, backend: str | None = None) -> dict:
    from gates import imaging

    previous = imaging.PNG_BACKEND
    if backend:
        imaging.PNG_BACKEND = backend
    config = QUICK if quick else FULL
    work = tempfile.mkdtemp(prefix="bench-pool-")
    try:
        added = measure_add(config, reference, work)
        pages = [measure_page(count, side, config["page_repeats"], reference, work) for count, side in config["pages"]]
        return {"backend": imaging.png_backend(), "add": added, "pages": pages}
    finally:
        imaging.PNG_BACKEND = previous
        shutil.rmtree(work, ignore_errors=True)


def run(quick: bool, comfy: tuple[str, str] | None, backend: str | None = None) -> dict:
    """Real SaveImage and PreviewImage in ComfyUI's interpreter when available, else the replicas here."""
    if comfy is None:
        return measure(quick, "replica", backend)
    comfy_dir, python = comfy
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO_ROOT, comfy_dir, os.environ.get("PYTHONPATH", "")]))
    command = [python, "-m", "bench.pool", "--worker"]
    if quick:
        command.append("--quick")
    if backend:
        command += ["--backend", backend]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"pool worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _worker() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend")
    args = parser.parse_args()
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # as the test server runs it; there is no GPU here
    print(json.dumps(measure(args.quick, "comfy", args.backend)))


if __name__ == "__main__":
    _worker()
