"""12. The object store against the local disk: publish, load, pool add and a 64-tile page, each on
ComfyUI's input folder and on S3 (moto's server on 127.0.0.1, started here), with the number of
requests each operation sends. On a remote store the requests, not these loopback milliseconds, are
what is billed and what the network's latency multiplies: multiply them by the round trip to yours.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

FULL = {"side": 1024, "tile": 256, "repeats": 7, "adds": 16}
QUICK = {"side": 48, "tile": 24, "repeats": 2, "adds": 3}


def _moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    command = [exe] if Path(exe).exists() else [sys.executable, "-m", "moto.server"]
    process = subprocess.Popen(command + ["-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.05)


def _measure(fn, repeats: int) -> tuple[float, Counter]:
    """Median seconds of `fn` and the requests of one call (the last)."""
    from gates.storage import objects

    times, used = [], Counter()
    for _ in range(repeats):
        before = objects.request_counts()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
        used = objects.request_counts() - before
    return statistics.median(times), used


def _operations(bus_base, pool_base, cfg, seed: int) -> dict:
    from gates import pools, slots

    rng = np.random.default_rng(seed)
    side, tile = cfg["side"], cfg["tile"]
    frames = rng.integers(0, 256, (1, side, side, 3), dtype=np.uint8)
    mask = rng.integers(0, 256, (1, side, side), dtype=np.uint8)
    out = {}
    out["publish"] = _measure(lambda: slots.bus_write(bus_base, "bench", frames, mask), cfg["repeats"])
    out["load"] = _measure(lambda: slots.bus_read(bus_base, "bench"), cfg["repeats"])
    counter = iter(range(10**6))

    def add_one():
        pixels = rng.integers(0, 256, (tile, tile, 3), dtype=np.uint8)
        pools.add_frames(pool_base, "bench", [pixels], [f"caption {next(counter)}"])

    out["pool add"] = _measure(add_one, cfg["adds"])
    tiles = [rng.integers(0, 256, (tile, tile, 3), dtype=np.uint8) for _ in range(64)]
    pools.add_frames(pool_base, "page", tiles, [f"c{k}" for k in range(64)])
    pools.pool_counts(pool_base, "page")
    out["64-tile page"] = _measure(lambda: pools.pending_page(pool_base, "page", 64), cfg["repeats"])
    return out


def run(quick: bool) -> dict:
    cfg = QUICK if quick else FULL
    try:
        import moto  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError:
        return {"skipped": "moto[server] and s3fs are not installed (pip install -r requirements-dev.txt)"}
    from gates.storage import STORE_ENV, parse_store

    folder = tempfile.mkdtemp(prefix="datasete-bench-store-")
    process, url = _moto()
    saved = {key: os.environ.get(key) for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
                                                   "AWS_DEFAULT_REGION", STORE_ENV)}
    try:
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_ENDPOINT_URL=url,
                          AWS_DEFAULT_REGION="us-east-1")
        import botocore.session

        bucket = f"bench-{secrets.token_hex(4)}"
        botocore.session.get_session().create_client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(
            Bucket=bucket)
        location = parse_store(f"s3://{bucket}/bench")
        local = _operations(os.path.join(folder, "gate_bus"), os.path.join(folder, "gate_pool"), cfg, 1)
        remote = _operations(location.child("gate_bus"), location.child("gate_pool"), cfg, 1)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(folder, ignore_errors=True)
    rows = []
    for name, (seconds, used) in remote.items():
        local_seconds = local[name][0]
        case = {"publish": f"{cfg['side']}x{cfg['side']} + mask", "load": f"{cfg['side']}x{cfg['side']} + mask",
                "pool add": f"1 item {cfg['tile']}x{cfg['tile']} with caption",
                "64-tile page": f"64 items {cfg['tile']}x{cfg['tile']} with captions"}[name]
        rows.append({"operation": name, "case": case, "s3_s": seconds, "local_s": local_seconds,
                     "ratio": seconds / local_seconds if local_seconds else None,
                     "requests": dict(sorted(used.items())), "request_total": sum(used.values())})
    return {"rows": rows, "endpoint": "moto on 127.0.0.1"}
