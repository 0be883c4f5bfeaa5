"""Shared helpers: deterministic test images, interleaved A/B timing, result rows."""

from __future__ import annotations

import gc
import os
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

FULL_SIZES = ((512, 512, 1), (2048, 2048, 1), (4096, 4096, 1), (1024, 1024, 8))
QUICK_SIZES = ((32, 32, 1), (48, 40, 2))


def size_label(height: int, width: int, batch: int) -> str:
    return f"{width}x{height}" + (f" x{batch}" if batch > 1 else "")


def photo_like(height: int, width: int, batch: int = 1, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """A (B,H,W,C) float image with the statistics of a generated photo: smooth structure over
    several scales, a few hard edges and fine grain. Pure noise or flat colour would make
    every PNG encoder look either hopeless or magical."""
    generator = torch.Generator().manual_seed(seed)
    frames = []
    for _ in range(batch):
        acc = torch.zeros(1, channels, height, width)
        amplitude = 1.0
        for octave in range(2, 9):
            scale = 2 ** octave
            low = torch.rand(1, channels, max(2, height * scale // 1024), max(2, width * scale // 1024),
                             generator=generator)
            acc += amplitude * torch.nn.functional.interpolate(low, size=(height, width), mode="bicubic",
                                                               align_corners=False)
            amplitude *= 0.55
        acc = (acc - acc.amin()) / (acc.amax() - acc.amin()).clamp_min(1e-6)
        for _ in range(6):
            top, left = (int(v) for v in torch.randint(0, max(1, height), (2,), generator=generator))
            acc[..., top:top + max(1, height // 5), left:left + max(1, width // 7)] *= 0.6
        acc += torch.randn(acc.shape, generator=generator) * (1.5 / 255)
        frames.append(acc.clamp(0, 1)[0].permute(1, 2, 0))
    return torch.stack(frames).contiguous()


def painted_mask(height: int, width: int, batch: int = 1) -> torch.Tensor:
    """A (B,H,W) mask like one painted at the gate: a soft-edged blob."""
    ys = torch.linspace(-1, 1, height)[:, None]
    xs = torch.linspace(-1, 1, width)[None, :]
    blob = (1.0 - ((ys * 1.3) ** 2 + (xs + 0.2) ** 2).sqrt() * 2).clamp(0, 1)
    return blob.expand(batch, height, width).contiguous()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(ours, reference, repeats: int, setup=None, warmup: int = 1) -> dict:
    """Time `ours` and `reference` alternately (A B B A ...) so load from other processes hits both alike.

    Returns the medians and the median of the per-pair ratios, which is robust to load
    that drifts during the run.
    """
    for _ in range(warmup):
        if setup:
            setup()
        ours()
        if setup:
            setup()
        reference()
    ours_times, reference_times, ratios = [], [], []
    for index in range(repeats):
        pair = {}
        for name, fn in ((("ours", ours), ("reference", reference)) if index % 2 == 0
                         else (("reference", reference), ("ours", ours))):
            if setup:
                setup()
            gc.collect()
            pair[name] = timed(fn)
        ours_times.append(pair["ours"])
        reference_times.append(pair["reference"])
        ratios.append(pair["ours"] / pair["reference"])
    return {"ours_s": statistics.median(ours_times), "reference_s": statistics.median(reference_times),
            "ratio": statistics.median(ratios), "repeats": repeats}


def repeats_for(pixels: int, quick: bool) -> int:
    """Pairs per case: enough for a stable median, few enough for the whole run to take under 5 minutes."""
    if quick:
        return 2
    if pixels >= 2048 * 2048:
        return 3
    return 7


def warmup_for(pixels: int) -> int:
    """The smallest case runs first and warms imports and caches; big cases need no extra pass."""
    return 0 if pixels >= 2048 * 2048 else 1


@dataclass
class Row:
    measurement: str
    case: str
    ours: str
    reference: str
    ratio: float | None
    target: str
    met: bool | None
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def comfy_env() -> tuple[str, str] | None:
    comfy_dir, python = os.environ.get("COMFYUI_DIR"), os.environ.get("COMFYUI_PYTHON")
    if comfy_dir and python:
        return comfy_dir, python
    return None


COMFY_SKIP = "skipped: set COMFYUI_DIR (ComfyUI source tree) and COMFYUI_PYTHON (its interpreter)"
