"""The PNG backends (libdeflate when installed; Python's zlib for previews; Pillow) give bit-identical
pixels, and the fast paths never change what the public imaging functions mean."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from gates import imaging

BACKENDS = ["libdeflate", "stdlib", "pillow"]
LEVELS = [imaging.PREVIEW_COMPRESS_LEVEL, imaging.BUS_COMPRESS_LEVEL]


def force(monkeypatch, name):
    if name == "libdeflate" and imaging._libdeflate is None:
        pytest.skip("the optional deflate package is not installed")
    monkeypatch.setattr(imaging, "PNG_BACKEND", "auto" if name == "libdeflate" else name)
    assert imaging.png_backend() == name


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    force(monkeypatch, request.param)
    return request.param


def random_pixels(height, width, channels, seed=0):
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(rng.integers(-3, 4, (height, width, channels)), axis=1)
    return (smooth % 256).astype(np.uint8)


def pillow_pixels(data: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)))


SHAPES = [(1, 1, 3), (7, 5, 3), (33, 17, 4), (64, 48, 1), (5, 300, 3)]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("shape", SHAPES)
def test_encoded_png_decodes_bit_exact_in_pillow(backend, shape, level):
    pixels = random_pixels(*shape)
    data = imaging.encode_png(pixels, level)
    decoded = pillow_pixels(data)
    assert np.array_equal(decoded.reshape(shape), pixels)


def test_each_backend_uses_its_own_writer_where_it_should(monkeypatch):
    pixels = random_pixels(16, 16, 3)
    force(monkeypatch, "stdlib")
    assert imaging._compressor(imaging.PREVIEW_COMPRESS_LEVEL)[0] is zlib.compress
    assert imaging._compressor(imaging.BUS_COMPRESS_LEVEL) is None  # Pillow: size within 10% of level 4
    assert imaging.encode_png(pixels, imaging.PREVIEW_COMPRESS_LEVEL) != imaging.encode_png(
        pixels, imaging.BUS_COMPRESS_LEVEL)
    force(monkeypatch, "pillow")
    assert imaging._compressor(imaging.PREVIEW_COMPRESS_LEVEL) is None


@pytest.mark.parametrize("shape", SHAPES)
def test_files_of_either_backend_read_the_same_in_either(monkeypatch, shape):
    if imaging._libdeflate is None:
        pytest.skip("the optional deflate package is not installed")
    pixels = random_pixels(*shape, seed=3)
    files = {}
    for name in BACKENDS:
        force(monkeypatch, name)
        files[name] = imaging.encode_png(pixels)
        files[name + " preview"] = imaging.encode_png(pixels, imaging.PREVIEW_COMPRESS_LEVEL)
    expected = np.repeat(pixels, 3, axis=2) if shape[2] == 1 else pixels
    for writer in files:
        for reader in BACKENDS:
            force(monkeypatch, reader)
            assert np.array_equal(imaging.read_image_pixels(files[writer]), expected), (writer, reader)
            if shape[2] == 1:
                assert np.array_equal(imaging.read_mask_pixels(files[writer]), pixels[..., 0])


def test_the_fast_backend_writes_smaller_or_close_files_and_a_plain_png():
    if imaging._libdeflate is None:
        pytest.skip("the optional deflate package is not installed")
    pixels = random_pixels(128, 128, 3)
    data = imaging.encode_png(pixels)
    image = Image.open(io.BytesIO(data))
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (128, 128))
    assert image.info.get("interlace", 0) == 0


def test_image_to_uint8_matches_the_float_formula_on_any_input(backend):
    generator = torch.Generator().manual_seed(5)
    image = torch.rand(2, 37, 23, 3, generator=generator) * 1.4 - 0.2  # out of range on both sides
    image[0, 0, 0, 0] = 0.5 / 255  # a tie: rounds half to even, like torch.round
    expected = image.mul(255.0).clamp(0, 255).round().to(torch.uint8).numpy()
    assert np.array_equal(imaging.image_to_uint8(image), expected)
    transposed = image.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    assert np.array_equal(imaging.image_to_uint8(transposed), expected)
    half = image.to(torch.float16)
    assert np.array_equal(imaging.image_to_uint8(half),
                          half.float().mul(255.0).clamp(0, 255).round().to(torch.uint8).numpy())
    mask = image[..., 0]
    assert np.array_equal(imaging.mask_to_uint8(mask), expected[..., 0])


@pytest.mark.parametrize("level", LEVELS)
def test_writing_a_frame_leaves_its_pixels_unchanged(backend, tmp_path, level):
    image = torch.rand(3, 40, 30, 4, generator=torch.Generator().manual_seed(9))
    frames = imaging.image_to_uint8(image)
    masks = imaging.mask_to_uint8(image[..., 0])
    before, masks_before = frames.copy(), masks.copy()
    for index in range(3):
        imaging.write_png(str(tmp_path / f"f{index}.png"), frames[index], level)
        imaging.write_png(str(tmp_path / f"m{index}.png"), masks[index], level)
        assert np.array_equal(imaging.read_image_pixels(str(tmp_path / f"f{index}.png")), before[index])
        assert np.array_equal(imaging.read_mask_pixels(str(tmp_path / f"m{index}.png")), masks_before[index])
    assert np.array_equal(frames, before) and np.array_equal(masks, masks_before)


def test_write_pngs_writes_every_file_and_reports_a_failure(backend, tmp_path):
    arrays = [random_pixels(20, 10 + index, 3, seed=index) for index in range(5)]
    imaging.write_pngs([(str(tmp_path / f"{index}.png"), array) for index, array in enumerate(arrays)])
    for index, array in enumerate(arrays):
        assert np.array_equal(imaging.read_image_pixels(str(tmp_path / f"{index}.png")), array)
    with pytest.raises(OSError):
        imaging.write_pngs([(str(tmp_path / "ok.png"), arrays[0]),
                            (str(tmp_path / "missing" / "x.png"), arrays[1])])


def test_uint8_to_image_is_comfyuis_load_image_conversion_bit_for_bit(backend):
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    expected = torch.from_numpy(pixels.astype(np.float32) / 255.0)
    assert torch.equal(imaging.uint8_to_image(pixels), expected)


def _pillow_png(pixels, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", **options)
    return buffer.getvalue()


def _la_png(rgb) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]]).copy(), mode="LA").save(buffer, format="PNG")
    return buffer.getvalue()


def _foreign_pngs():
    rgb = random_pixels(31, 29, 3, seed=11)
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", "{}")
    palette = Image.fromarray(rgb).quantize(16)
    palette_buffer = io.BytesIO()
    palette.save(palette_buffer, format="PNG", transparency=0)
    sixteen = io.BytesIO()
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(sixteen, format="PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the EXIF orientation must be applied
    rotated = io.BytesIO()
    Image.fromarray(rgb).save(rotated, format="PNG", exif=exif)
    return {
        "adaptive filters (Pillow 9)": _pillow_png(rgb, compress_level=9),
        "text chunk (ComfyUI SaveImage)": _pillow_png(rgb, pnginfo=info),
        "palette with transparency": palette_buffer.getvalue(),
        "16-bit gray": sixteen.getvalue(),
        "EXIF orientation": rotated.getvalue(),
        "RGBA": _pillow_png(np.dstack([rgb, rgb[..., :1]]).copy()),
        "gray + alpha": _la_png(rgb),
    }


@pytest.mark.parametrize("name", list(_foreign_pngs()))
def test_any_other_png_reads_exactly_as_pillow_reads_it(monkeypatch, name):
    data = _foreign_pngs()[name]
    results = {}
    for choice in BACKENDS:
        if choice == "libdeflate" and imaging._libdeflate is None:
            continue
        force(monkeypatch, choice)
        results[choice] = (imaging.read_image_pixels(data), imaging.read_mask_pixels(data))
    reference = results["pillow"]
    for image, mask in results.values():
        assert np.array_equal(image, reference[0]) and np.array_equal(mask, reference[1])


def _with_bad_crc(data: bytes) -> bytes:
    broken = bytearray(data)
    broken[-20] ^= 0xFF  # inside the last IDAT chunk
    return bytes(broken)


@pytest.mark.parametrize("damage", ["crc", "truncated", "inflated_wrong"])
def test_a_damaged_png_is_an_imaging_error_in_both_backends(backend, damage):
    pixels = random_pixels(40, 40, 3)
    data = imaging.encode_png(pixels)
    if damage == "crc":
        data = _with_bad_crc(data)
    elif damage == "truncated":
        data = data[: len(data) // 2]
    else:  # a valid stream of the wrong length under a correct CRC
        start = data.index(b"IDAT") - 4
        payload = zlib.compress(b"\x00" * 10)
        chunk = len(payload).to_bytes(4, "big") + b"IDAT" + payload + zlib.crc32(b"IDAT" + payload).to_bytes(4, "big")
        data = data[:start] + chunk + data[data.index(b"IEND") - 4:]
    with pytest.raises(imaging.ImagingError):
        imaging.read_image_pixels(data)


@pytest.mark.parametrize("name", ["stdlib", "pillow"])
def test_the_environment_variable_chooses_the_backend(name):
    code = "from gates import imaging; print(imaging.png_backend())"
    env = dict(os.environ, DATASETE_GATES_PNG_BACKEND=name)
    done = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__)), env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == name, done.stderr


def test_without_the_deflate_package_the_pack_falls_back_and_round_trips(tmp_path):
    """A platform where deflate has no wheel: the import fails, the stdlib and Pillow paths do the work."""
    code = (
        "import sys; sys.modules['deflate'] = None\n"
        "import numpy as np\n"
        "from gates import imaging\n"
        "assert imaging._libdeflate is None, 'deflate still imported'\n"
        "pixels = (np.arange(40 * 30 * 3) % 251).astype(np.uint8).reshape(40, 30, 3)\n"
        "for level in (imaging.PREVIEW_COMPRESS_LEVEL, imaging.BUS_COMPRESS_LEVEL):\n"
        "    assert np.array_equal(imaging.read_image_pixels(imaging.encode_png(pixels, level)), pixels)\n"
        "print(imaging.png_backend())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__)),
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "stdlib", done.stderr


@pytest.mark.parametrize("height", [1, 2, 7, 15, 16, 17, 63, 64, 65, 100, 1000])
def test_the_in_place_up_filter_is_the_png_up_filter_and_undoes_exactly(height):
    rng = np.random.default_rng(height)
    rows = rng.integers(0, 256, (height, 1 + 3 * 5), dtype=np.uint8)
    original = rows.copy()
    expected = imaging._up_filtered_copy(original[:, 1:].reshape(height, 5, 3))
    kept = imaging._up_filter_in_place(rows)
    assert np.array_equal(rows, expected)
    imaging._up_unfilter_in_place(rows, kept)
    assert np.array_equal(rows[:, 1:], original[:, 1:])
