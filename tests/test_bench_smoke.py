"""The benchmark at tiny sizes, so it cannot rot: every measurement runs and reports a number.

No timing is asserted here (speed belongs in `python -m bench`); only that each measurement
runs, checks what it measures, and writes its row. The unit tier runs everything that needs
no ComfyUI; the comfy tier runs the two measurements that do (the real PreviewImage and the
prompts through a real server).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_bench(tmp_path, *args, env_extra=None, drop_comfy=True):
    env = dict(os.environ)
    if drop_comfy:
        env.pop("COMFYUI_DIR", None)
        env.pop("COMFYUI_PYTHON", None)
    env.update(env_extra or {})
    output = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--output", str(output), *args],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done, json.loads(output.read_text())


def rows_of(result, prefix):
    return [row for row in result["rows"] if row["measurement"].startswith(prefix)]


def test_every_measurement_without_comfyui_runs_and_reports(tmp_path):
    done, result = run_bench(tmp_path)
    if result["backend"] == "libdeflate":  # and also as a ComfyUI without the deflate package
        assert {row["detail"]["backend"] for row in result["rows"]
                if "(without deflate)" in row["measurement"]} == {"stdlib"}
    assert result["quick"] is True and result["comfyui"] is False
    for prefix in ("1 preview", "2 publish", "3 load", "6 memory"):
        rows = rows_of(result, prefix)
        assert rows, f"no {prefix} row"
        for row in rows:
            assert row["ours"] != "failed", row
            assert row["ratio"] is not None and row["ratio"] >= 0, row
            assert row["met"] in (True, False)
    for row in rows_of(result, "1 preview"):
        assert row["detail"]["reference"] == "replica"  # no ComfyUI: the replica of PreviewImage
    resume = rows_of(result, "4 resume")[0]["detail"]
    assert resume["pauses"] == 10 and 0 < resume["median_s"] <= resume["p99_s"] <= resume["max_s"]
    listing = result["list_ids"]
    assert listing["hand_written_slot_listed"] is True
    assert [row["entries"] for row in listing["rows"]] == [110, 1100, 1100]
    codecs = result["codecs"]
    assert "Pillow 4" in codecs["curve"] and codecs["curve"]["Pillow 4"]["size_vs_pillow4_max"] == 1.0
    assert all(entry["exact"] for entry in codecs["decode"].values())
    throughput = rows_of(result, "7 throughput")[0]
    assert throughput["ours"] == "skipped" and "COMFYUI_DIR" in throughput["reference"]
    loader = rows_of(result, "9 loader rescan")[0]
    assert loader["ours"] != "failed" and loader["detail"]["images"] == 1000
    assert 0 < loader["detail"]["warm_s"] and 0 < loader["detail"]["full_relisting_s"]
    assert "| measurement" in done.stdout and "7 throughput" in done.stdout
    assert "replica of PreviewImage" in done.stderr


def test_the_bench_runs_with_pillow_only(tmp_path):
    done, result = run_bench(tmp_path, "--only", "publish_load,memory",
                             env_extra={"DATASETE_GATES_PNG_BACKEND": "pillow"})
    assert result["backend"] == "pillow"
    assert {row["detail"]["backend"] for row in result["rows"]} == {"pillow"}
    assert not any("(without deflate)" in row["measurement"] for row in result["rows"])  # nothing to compare


def test_an_unknown_measurement_is_refused_by_name(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench", "--only", "preview,speed"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "speed" in done.stderr


@pytest.mark.comfy
def test_the_measurements_that_need_comfyui_run_against_a_real_one(tmp_path):
    done, result = run_bench(tmp_path, "--only", "preview,throughput", drop_comfy=False)
    previews = rows_of(result, "1 preview")
    assert previews and all(row["detail"]["reference"] == "comfy" for row in previews)
    throughput = rows_of(result, "7 throughput")[0]
    assert throughput["ours"] != "skipped" and throughput["detail"]["prompts"] == 10
    assert throughput["detail"]["gated_s"] > 0 and throughput["detail"]["plain_s"] > 0
