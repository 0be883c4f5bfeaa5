"""The pool rows of the benchmark at tiny sizes, so they cannot rot: each runs, checks what it
measures (every frame added, a page read) and writes its rows. No timing is asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_the_pool_rows_run_and_report(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_DIR", "COMFYUI_PYTHON")}
    output = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "pool", "--output", str(output)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(output.read_text())["rows"]
    names = {row["measurement"].split(" (")[0] for row in rows}
    assert names == {"10 pool add", "11 grid page", "11 grid page bytes"}
    for row in rows:
        assert row["ours"] != "failed", row
        assert row["ratio"] is not None and row["ratio"] > 0 and row["met"] in (True, False)
    add = next(row for row in rows if row["measurement"] == "10 pool add")["detail"]
    assert add["items"] == 12 and add["reference"] == "replica"
    page = next(row for row in rows if row["measurement"] == "11 grid page")["detail"]
    assert page["thumb_bytes"] > 0 and page["preview_bytes"] > 0
