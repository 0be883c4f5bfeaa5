"""1. Preview: what the gate does before it waits (tensor -> preview PNGs + the event), against
ComfyUI's PreviewImage saving the same batch (Pillow, compress level 1).

With COMFYUI_DIR and COMFYUI_PYTHON set, the reference is ComfyUI's real nodes.PreviewImage,
run in a subprocess of ComfyUI's interpreter; without them, an exact replica of its code path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from functools import partial

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from bench.common import (
    FULL_SIZES,
    QUICK_SIZES,
    interleaved,
    photo_like,
    repeats_for,
    warmup_for,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gate_preview(image, temp: str, bus):
    """Exactly the gate's steps between "the image arrived" and "waiting": convert, write, arm, send."""
    from gates import imaging, previews
    from gates.constants import EVENT_PREVIEW

    frames = imaging.image_to_uint8(image)
    batch, height, width = frames.shape[:3]
    previews = previews.save_previews(frames, temp)
    pause = bus.arm("bench", 2, prompt_id=None, images=previews, source="input",
                    width=width, height=height, frames=batch)
    json.dumps({"type": EVENT_PREVIEW, "data": pause.entry()})  # what PromptServer.send_sync serializes
    bus.discard(pause)


def replica_preview_image(images, temp: str) -> None:
    """ComfyUI 0.3.6x nodes.PreviewImage.save_images, line for line (prompt and extra_pnginfo None)."""
    os.listdir(temp)  # folder_paths.get_save_image_path scans the folder for the next counter
    counter = 1
    for batch_number, image in enumerate(images):  # noqa: B007 - ComfyUI's line, kept as it is
        i = 255. * image.cpu().numpy()
        img = Image.fromarray(np.clip(i, 0, 255).astype(np.uint8))
        metadata = PngInfo()
        file = f"ComfyUI_temp_bench_{counter:05}_.png"
        img.save(os.path.join(temp, file), pnginfo=metadata, compress_level=1)
        counter += 1


def _clear(folder: str) -> None:
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))


def measure(sizes, quick: bool, reference: str, backend: str | None = None) -> list[dict]:
    from gates import imaging
    from gates.pause import GateBus

    previous = imaging.PNG_BACKEND
    if backend:
        imaging.PNG_BACKEND = backend
    temp = tempfile.mkdtemp(prefix="bench-preview-")
    try:
        if reference == "comfy":
            import comfy.cli_args

            comfy.cli_args.args.cpu = True  # as the test server runs it; there is no GPU here
            import folder_paths
            import nodes

            folder_paths.set_temp_directory(temp)
            node = nodes.PreviewImage()

            def run_reference(image):
                node.save_images(image)
        else:
            def run_reference(image):
                replica_preview_image(image, temp)
        bus = GateBus()
        results = []
        for height, width, batch in sizes:
            image = photo_like(height, width, batch)
            stats = interleaved(partial(gate_preview, image, temp, bus), partial(run_reference, image),
                                repeats_for(height * width * batch, quick), setup=lambda: _clear(temp),
                                warmup=warmup_for(height * width * batch))
            results.append({"size": [height, width, batch], "backend": imaging.png_backend(),
                            "reference": reference, **stats})
        return results
    finally:
        imaging.PNG_BACKEND = previous
        shutil.rmtree(temp, ignore_errors=True)


def run(quick: bool, comfy: tuple[str, str] | None, backend: str | None = None,
        skip_largest: bool = False) -> list[dict]:
    """Real PreviewImage in ComfyUI's interpreter when available, else the replica in this process."""
    sizes = QUICK_SIZES if quick else FULL_SIZES
    if skip_largest and not quick:
        sizes = tuple(size for size in sizes if size[2] == 1 and size[0] < 4096)  # keeps the run under 5 minutes
    if comfy is None:
        return measure(sizes, quick, "replica", backend)
    comfy_dir, python = comfy
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO_ROOT, comfy_dir, os.environ.get("PYTHONPATH", "")]))
    command = [python, "-m", "bench.preview", "--worker", "--sizes", json.dumps(sizes)]
    if quick:
        command.append("--quick")
    if backend:
        command += ["--backend", backend]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"preview worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _worker() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", required=True)
    parser.add_argument("--backend")
    args = parser.parse_args()
    sizes = [tuple(size) for size in json.loads(args.sizes)]
    print(json.dumps(measure(sizes, args.quick, "comfy", args.backend)))


if __name__ == "__main__":
    _worker()
