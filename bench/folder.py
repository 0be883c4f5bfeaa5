"""8. The Image Folder Loader in a folder of 10,000 images: what a `next` run pays to find its image.

- full re-listing: os.scandir of the folder and the natural sort, what a loader without a cache pays on
  every run (the reference);
- warm: folders.list_images while the folder is unchanged (one stat);
- after a caption: the first call after a Text Gate saved a caption beside the images (the folder
  changed, its images did not: the names are read again, the listing is kept);
- after an image: the first call after an image was added (merged into the listing);
- cold: the very first call;
- pick: everything a `next` run does before decoding (listing, the position file, the bisect);
- subfolders: the warm call with the same images spread over 100 subfolders (one stat per folder).
Files are empty: the listing never opens them."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

from bench.common import timed


def _populate(base: str, count: int, subfolders: int = 0) -> None:
    for index in range(count):
        folder = base if not subfolders else os.path.join(base, f"part{index % subfolders:03d}")
        os.makedirs(folder, exist_ok=True)
        open(os.path.join(folder, f"img_{index}.png"), "wb").close()
        if index % 2:
            open(os.path.join(folder, f"img_{index}.txt"), "wb").close()


def _age(base: str) -> None:
    """Age every folder's mtime past the listing cache's safety window, as between two real runs."""
    old = time.time_ns() - 5_000_000_000
    for root, _dirs, _files in os.walk(base):
        os.utime(root, ns=(old, old))


def _full_relisting(base: str) -> list[str]:
    from gates import folders

    with os.scandir(base) as entries:
        names = [e.name for e in entries if not e.name.startswith(".")
                 and os.path.splitext(e.name)[1].lower() in folders.IMAGE_EXTENSIONS and e.is_file()]
    return folders.natural_sorted(names)


def run(quick: bool, root: str | None = None) -> dict:
    from gates import folders, loader

    count = 1_000 if quick else 10_000
    repeats = 5 if quick else 15
    work = tempfile.mkdtemp(prefix="bench-folder-", dir=root)
    try:
        flat = os.path.join(work, "input", "datasets", "flat")
        os.makedirs(flat)
        _populate(flat, count)
        _age(flat)
        folders._listing_cache.clear()
        cold = timed(lambda: folders.list_images(flat))
        warm = [timed(lambda: folders.list_images(flat)) for _ in range(repeats)]
        full = [timed(lambda: _full_relisting(flat)) for _ in range(repeats)]
        from gates import captions

        captioned, changed = [], []
        for index in range(repeats):
            captions.write_caption(os.path.join(flat, f"img_{index * 2}.txt"), f"caption {index}")
            _age(flat)
            captioned.append(timed(lambda: folders.list_images(flat)))
        for index in range(repeats):
            open(os.path.join(flat, f"new_{index}.png"), "wb").close()
            _age(flat)
            changed.append(timed(lambda: folders.list_images(flat)))
        listing = folders.list_images(flat)
        if len(listing) != count + repeats:
            raise AssertionError(f"listed {len(listing)} images, expected {count + repeats}")

        # Everything a `next` run does before it decodes the picture.
        user = os.path.join(work, "user")
        store = loader.position_store(user)
        key = folders.position_key("datasets/flat", False)
        store.write(key, folders.Position(listing.paths[count // 2]), folder="datasets/flat", recursive=False)

        def pick():
            _key, path = folders.resolve_folder(os.path.join(work, "input"), "datasets/flat")
            found = folders.list_images(path)
            position = store.read(key)
            return loader.item_at(_key, path, found, found.index_after(position.last))

        picks = [timed(pick) for _ in range(repeats)]
        if pick().index != count // 2 + 1:
            raise AssertionError("the pick did not find the image after the position")

        nested = os.path.join(work, "input", "datasets", "nested")
        _populate(nested, count, subfolders=100)
        _age(nested)
        folders.list_images(nested, recursive=True)
        nested_warm = [timed(lambda: folders.list_images(nested, recursive=True)) for _ in range(repeats)]
        if len(folders.list_images(nested, recursive=True)) != count:
            raise AssertionError("the recursive listing lost images")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    warm_s, full_s = statistics.median(warm), statistics.median(full)
    return {"images": count, "cold_s": cold, "warm_s": warm_s, "full_relisting_s": full_s,
            "after_caption_s": statistics.median(captioned), "after_change_s": statistics.median(changed),
            "pick_s": statistics.median(picks),
            "subfolders_warm_s": statistics.median(nested_warm), "ratio": warm_s / full_s, "repeats": repeats}
