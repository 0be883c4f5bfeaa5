"""Several real ComfyUI servers sharing one bus and one pool on an object store (moto's S3 server on
127.0.0.1): publish on A and load on B; two generators filling one pool while a person reviews on a
third; two servers publishing one slot at once; and ComfyUI killed with SIGKILL in the middle of adds
and decisions, with the pool checked on the store after every kill.

Each server has its own base folder (its own input folder): what one sees of another comes only from
the store that DATASETE_GATES_STORE and the AWS_* variables point all of them at.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import numpy as np
import pytest
from comfy_server import ComfyServer, status_messages
from s3_testkit import have_s3_tools
from test_comfy_bus import choose, gate_prompt, new_slot, new_tag, pause_of, saved, stripes
from test_pool_comfy import add_prompt, caption_for, grid_prompt, pause, run

from gates import imagebus, imaging, pools, slots
from gates.constants import BUS_DIR_NAME, POOL_DIR_NAME, ROUTE_BUS_LIST, ROUTE_CHOOSE, ROUTE_POOL_LIST
from gates.storage import STORE_ENV, parse_store, s3pools

pytestmark = pytest.mark.comfy

SETTLE = 120.0


def start_servers(count: int, env: dict, tmp_factory) -> list[ComfyServer]:
    servers = []
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        try:
            for index in range(count):
                servers.append(ComfyServer(base_dir=tmp_factory.mktemp(f"server{index}")).start())
        except BaseException:
            for server in servers:
                server.stop()
            raise
    return servers


@pytest.fixture(scope="module")
def shared(moto_server, tmp_path_factory):
    """Three ComfyUI servers on one store: (servers, store location, env)."""
    if not have_s3_tools():
        pytest.skip("moto[server] and s3fs are not installed")
    bucket = moto_server.make_bucket()
    env = {**moto_server.env(), STORE_ENV: f"s3://{bucket}/farm"}
    servers = start_servers(3, env, tmp_path_factory)
    try:
        yield servers, parse_store(env[STORE_ENV]), env
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def farm(shared, monkeypatch):
    servers, location, env = shared
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # this process reads the same store to check what the servers did
    yield servers, location
    for server in servers:
        server.settle(SETTLE)


def flat(colour: int, height: int, width: int) -> np.ndarray:
    return np.broadcast_to(np.array([(colour >> 16) & 255, (colour >> 8) & 255, colour & 255], np.uint8),
                           (height, width, 3))


# --- the bus ----------------------------------------------------------------------------------------

def test_publish_on_a_and_load_on_b(farm):
    (a, b, _c), location = farm
    slot, painted = new_slot(), stripes()
    prompt_id = a.queue(gate_prompt(new_tag(), [0x3366CC], send_id=slot))
    choose(a, pause_of(a, prompt_id)["token"], 1, painted)
    assert a.wait_done(prompt_id, SETTLE)["status"]["status_str"] == "success"
    assert not (a.input_dir / BUS_DIR_NAME / slot).exists()  # on the store, not on A's disk
    assert slot in b.get_json(ROUTE_BUS_LIST)["ids"]
    assert slot in imagebus.list_ids(location.child(BUS_DIR_NAME))

    prompt_id = b.queue(gate_prompt(new_tag(), None, get_id=slot))
    entry = pause_of(b, prompt_id)
    assert entry["source"] == "bus" and entry["slot"] == slot
    choose(b, entry["token"], 1)
    history = b.wait_done(prompt_id, SETTLE)
    assert history["status"]["status_str"] == "success", status_messages(history)
    [routed] = saved(b, history, "21")
    assert np.array_equal(routed, flat(0x3366CC, routed.shape[0], routed.shape[1]))
    [mask] = saved(b, history, "31")
    assert np.array_equal(mask[..., 0], painted)


def test_two_servers_publishing_one_slot_at_once_end_with_one_whole_version(farm):
    """A and B publish batches to one slot over and over while this process reads it: every read is one
    publish's frames with that publish's mask, and the end is one complete version."""
    (a, b, _c), location = farm
    slot, base = new_slot(), location.child(BUS_DIR_NAME)
    colours = {a: [0xAA0000 + 10 + k for k in range(6)], b: [0x00AA00 + 100 + k for k in range(6)]}
    # Each publish paints its mask flat at its colour's blue value, so a frame and a mask can be matched.
    stop, torn, reads = threading.Event(), [], []

    def reader():
        while not stop.is_set():
            try:
                contents = slots.bus_read(base, slot)
            except imagebus.SlotNotFound:
                continue
            frames = {tuple(int(v) for v in frame[0, 0]) for frame in contents.frames}
            levels = set(np.unique(contents.masks)) if contents.masks is not None else set()
            expected = {int(contents.frames[0, 0, 0, 2])}
            if len(frames) != 1 or levels != expected:
                torn.append((frames, levels))
            reads.append(1)

    def publisher(server):
        for colour in colours[server]:
            level = colour & 255
            prompt_id = server.queue(gate_prompt(new_tag(), [colour, colour], send_id=slot))
            choose(server, pause_of(server, prompt_id)["token"], 1, np.full((16, 24), level, np.uint8))
            assert server.wait_done(prompt_id, SETTLE)["status"]["status_str"] == "success"

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        workers = [threading.Thread(target=publisher, args=(server,)) for server in (a, b)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(600)
    finally:
        stop.set()
        thread.join(60)
    assert not torn, torn[:3]
    assert reads
    final = slots.bus_read(base, slot)
    assert final.frames.shape[0] == 2 and len({tuple(f[0, 0]) for f in final.frames}) == 1


# --- the pool ---------------------------------------------------------------------------------------

def test_two_generators_fill_one_pool_while_a_third_reviews(farm):
    (a, b, c), location = farm
    pool = f"shared_{uuid.uuid4().hex[:8]}"
    base = location.child(POOL_DIR_NAME)
    made = {a: [0x100000 * (k + 1) + 0x11 for k in range(8)], b: [0x001000 * (k + 1) + 0x22 for k in range(8)]}
    reviewed: dict[str, bool] = {}
    errors: list[str] = []

    def generate(server):
        try:
            for start in range(0, 8, 2):  # four prompts of two frames each
                history = run(server, add_prompt(pool, made[server][start:start + 2], 24, 16), SETTLE)
                assert history["status"]["status_str"] == "success"
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"{server.url}: {exc!r}")

    workers = [threading.Thread(target=generate, args=(server,)) for server in (a, b)]
    for worker in workers:
        worker.start()
    # The person on C: a page whenever something is pending; keeps every other item.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        generating = any(worker.is_alive() for worker in workers)
        if not pools.exists(base, pool) or pools.pending_page(base, pool, 1).items == []:
            if not generating:
                break
            time.sleep(0.2)
            continue
        prompt_id, entry = pause(c, grid_prompt(pool, 4), SETTLE)
        names = [item["name"] for item in entry["items"]]
        assert not set(names) & set(reviewed), f"a page showed decided items again: {names}"
        keep = [i for i, name in enumerate(names) if int(name) % 2]
        assert c.post_json(ROUTE_CHOOSE, {"token": entry["token"], "keep": keep})[0] == 200
        assert c.wait_done(prompt_id, SETTLE)["status"]["status_str"] == "success"
        reviewed.update({name: int(name) % 2 == 1 for name in names})
        # The decision made on C is what the next page on A sees.
        shown_on_a = pools.pending_page(base, pool, 64)
        assert not {item.name for item in shown_on_a.items} & set(names)
    for worker in workers:
        worker.join(60)
    assert not errors, errors
    # Every frame is in the pool exactly once, under its own unique name, with its own caption.
    listed = s3pools.items(base, pool)
    colours = {}
    for item, _size, caption in listed:
        pixels = imaging.read_image_pixels(s3pools.read_item_png(base, pool, item))
        colour = (int(pixels[0, 0, 0]) << 16) | (int(pixels[0, 0, 1]) << 8) | int(pixels[0, 0, 2])
        assert caption == caption_for(colour), item.name
        assert colour not in colours, f"{colour:06x} twice: {colours[colour]} and {item.name}"
        colours[colour] = item.name
        assert item.state == ("kept" if reviewed[item.name] else "rejected"), item.name
    assert sorted(colours) == sorted(made[a] + made[b])
    assert len({item.name for item, _s, _c in listed}) == 16
    # Counts come from a listing at most COUNT_SECONDS old plus a server's own changes: A, which only
    # added, catches up with C's decisions within that time (the items on a page never lag; see above).
    deadline = time.monotonic() + s3pools.COUNT_SECONDS + 15
    while True:
        counts = {entry["id"]: entry for entry in a.get_json(ROUTE_POOL_LIST)["pools"]}[pool]
        if (counts["pending"], counts["kept"] + counts["rejected"]) == (0, 16) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (counts["pending"], counts["kept"], counts["rejected"]) == (
        0, sum(reviewed.values()), 16 - sum(reviewed.values()))


# --- kills ------------------------------------------------------------------------------------------

def inspect(base, pool) -> tuple[list[str], dict[int, list[str]]]:
    problems, found = [], {}
    for item, _size, caption in s3pools.items(base, pool):
        try:
            pixels = imaging.read_image_pixels(s3pools.read_item_png(base, pool, item))
        except (imaging.ImagingError, pools.PoolError) as exc:
            problems.append(f"{item.name} is not whole: {exc}")
            continue
        first = pixels[0, 0, :3]
        colour = (int(first[0]) << 16) | (int(first[1]) << 8) | int(first[2])
        if not (pixels[..., :3] == first).all():
            problems.append(f"{item.name} is not one colour")
        if caption != caption_for(colour):
            problems.append(f"{item.name}: caption {caption!r} is not its own")
        found.setdefault(colour, []).append(f"{item.state}/{item.name}")
    problems += [f"{colour:06x} is in the pool {len(where)} times: {where}"
                 for colour, where in found.items() if len(where) > 1]
    return problems, found


def test_kill_during_adds_and_decisions_on_the_store(moto_server, tmp_path, monkeypatch):
    bucket = moto_server.make_bucket()
    env = {**moto_server.env(), STORE_ENV: f"s3://{bucket}/crash"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    base, pool = parse_store(env[STORE_ENV]).child(POOL_DIR_NAME), "crash"
    rng = random.Random(7)
    colours = [0x030000 * (i + 1) + 0x000101 * (i % 7) + 0x10 for i in range(16)]
    server = ComfyServer(base_dir=tmp_path / "crash-base")
    try:
        server.start()
        run(server, add_prompt(pool, colours[:8], 256, 256), 300)
        confirmed = set(colours[:8])
        for kill in range(2):
            batch = colours[: 8 + 4 * (kill + 1)]
            server.queue(add_prompt(pool, batch, 256, 256))
            time.sleep(rng.uniform(0.5, 2.5))  # somewhere in the prompt: its upload and commit steps
            server.stop(kill=True)
            problems, found = inspect(base, pool)
            assert not problems, f"after add kill {kill + 1}: {problems}"
            assert confirmed <= set(found), f"confirmed items lost: {confirmed - set(found)}"
            server.start()
            run(server, add_prompt(pool, batch, 256, 256), 300)  # finish the batch: nothing doubled
            confirmed = set(batch)
            problems, found = inspect(base, pool)
            assert not problems and set(found) == confirmed, problems
            prompt_id, entry = pause(server, grid_prompt(pool, 12), 300)
            keep = sorted(rng.sample(range(len(entry["items"])), len(entry["items"]) // 2))
            server.post_json(ROUTE_CHOOSE, {"token": entry["token"], "keep": keep})
            time.sleep(rng.uniform(0.0, 0.2))
            server.stop(kill=True)
            problems, found = inspect(base, pool)
            assert not problems, f"after decision kill {kill + 1}: {problems}"
            assert set(found) == confirmed, "a decision lost or added an item"
            server.start()
            history = run(server, add_prompt(pool, colours[:1], 256, 256), 300)
            assert history["outputs"]["10"]["datasete_pool"][0]["duplicates"] == 1
    finally:
        server.cleanup()
