"""python -m gates.bus and python -m gates.pool on an object store: DATASETE_GATES_STORE alone (no
--input-dir) points them at the slots and pools the servers share. Subprocesses, as a person runs them,
against moto's server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


def run(module: str, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the fixtures set the store and AWS_*
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, env=env)


def png(path: Path, seed: int) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(path)
    return path


def test_a_bad_setting_fails_the_cli_clearly(monkeypatch):
    monkeypatch.setenv("DATASETE_GATES_STORE", "ftp://x")
    done = run("gates.bus", "list")
    assert done.returncode == 2 and "DATASETE_GATES_STORE='ftp://x' is not supported" in done.stderr


def test_bus_cli_on_the_store(s3_store, tmp_path):
    image = png(tmp_path / "a.png", 1)
    assert run("gates.bus", "put", "cp1", image).returncode == 0
    listed = run("gates.bus", "list", "--json")
    assert json.loads(listed.stdout) == {"ids": ["cp1"]}
    shown = json.loads(run("gates.bus", "show", "cp1", "--json").stdout)
    assert shown["folder"].startswith(f"s3://{s3_store.bucket}/studio/gates/gate_bus/")
    assert shown["frames"] == 1 and shown["width"] == 8
    assert run("gates.bus", "rm", "cp1").returncode == 0
    assert json.loads(run("gates.bus", "list", "--json").stdout) == {"ids": []}


def test_pool_cli_on_the_store(s3_store, tmp_path):
    images = [png(tmp_path / f"{k}.png", k) for k in range(3)]
    (tmp_path / "0.txt").write_text("a cat", encoding="utf-8")
    added = run("gates.pool", "add", "p", *images)
    assert added.returncode == 0, added.stderr
    assert run("gates.pool", "move", "p", "000001", "000002", "--to", "kept").returncode == 0
    details = json.loads(run("gates.pool", "show", "p", "--json").stdout)
    assert (details["pending"], details["kept"], details["rejected"]) == (1, 2, 0)
    assert [(i["name"], i["state"], i["caption"]) for i in details["items"]] == [
        ("000003", "pending", None), ("000001", "kept", "a cat"), ("000002", "kept", None)]
    out = tmp_path / "train"
    exported = run("gates.pool", "export", "p", out, "--repeats", "2", "--concept", "cat")
    assert exported.returncode == 0, exported.stderr
    assert sorted(os.listdir(out / "2_cat")) == ["000001.png", "000001.txt", "000002.png"]
    assert (out / "2_cat" / "000001.txt").read_text(encoding="utf-8") == "a cat"
    refused = run("gates.pool", "rm", "p")
    assert refused.returncode == 7 and "kept" in refused.stderr
    assert run("gates.pool", "rm", "p", "--force").returncode == 0
    assert json.loads(run("gates.pool", "list", "--json").stdout) == {"pools": []}


def test_the_store_check_passes_on_a_store_that_honours_conditions(s3_store):
    done = run("gates.storage")
    assert done.returncode == 0, done.stderr
    assert "conditional writes honoured" in done.stdout


def test_the_store_check_says_what_is_wrong(monkeypatch):
    monkeypatch.setenv("DATASETE_GATES_STORE", "s3://x")
    done = run("gates.storage")
    assert done.returncode == 2 and "not a valid bucket name" in done.stderr
    monkeypatch.delenv("DATASETE_GATES_STORE")
    assert "is not set" in run("gates.storage").stdout
