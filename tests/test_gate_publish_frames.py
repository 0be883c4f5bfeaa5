"""The gate publishes the uint8 frames it converted for the preview; the preview must leave them intact."""

import numpy as np
import pytest
import torch

from gates import imaging, previews, slots


@pytest.mark.parametrize("backend", ["auto", "stdlib", "pillow"])
def test_preview_leaves_frames_intact_for_the_publish(tmp_path, monkeypatch, backend):
    if backend != "auto":
        monkeypatch.setattr(imaging, "PNG_BACKEND", backend)
    generator = torch.Generator().manual_seed(7)
    image = torch.rand((2, 37, 53, 4), generator=generator)
    frames = imaging.image_to_uint8(image)
    before = np.array(frames, copy=True)

    previews.save_previews(frames, str(tmp_path / "temp"))
    assert np.array_equal(frames, before)

    mask = torch.rand((1, 37, 53), generator=generator)
    slots.bus_write(str(tmp_path / "gate_bus"), "cp1", frames, imaging.mask_to_uint8(mask))
    loaded, loaded_mask = slots.bus_load(str(tmp_path / "gate_bus"), "cp1")
    assert np.array_equal(imaging.image_to_uint8(loaded), before)
    assert np.array_equal(imaging.mask_to_uint8(loaded_mask)[0], imaging.mask_to_uint8(mask)[0])
