"""python -m bench --only store at tiny sizes: the object-store rows run, check what they measure and
report requests per operation (the figure the issue asks for: requests, not milliseconds)."""

from __future__ import annotations

import pytest
from s3_testkit import have_s3_tools
from test_bench_smoke import rows_of, run_bench


@pytest.mark.skipif(not have_s3_tools(), reason="moto[server] and s3fs are not installed")
def test_store_rows_report_requests_for_each_operation(tmp_path):
    _done, result = run_bench(tmp_path, "--only", "store")
    rows = {row["measurement"]: row for row in rows_of(result, "12 store")}
    assert set(rows) == {"12 store publish", "12 store load", "12 store pool add", "12 store 64-tile page"}
    detail = {name: row["detail"] for name, row in rows.items()}
    # One version's files, the pointer read and written, the replaced version deleted.
    assert detail["12 store publish"]["requests"] == {"DELETE": 1, "GET": 1, "PUT": 4}
    assert detail["12 store load"]["requests"] == {"GET": 4}
    # A 64-tile page lists only the page (and moves/), never the whole pool, and reads each PNG and caption.
    page = detail["12 store 64-tile page"]["requests"]
    assert page["LIST"] == 2 and page["GET"] == 128
    assert all(row["detail"]["local_s"] > 0 and row["detail"]["s3_s"] > 0 for row in rows.values())
