"""Part 2: hypothesis fuzzing of every route while a gate waits."""

from __future__ import annotations

import json

import pytest

from gates.constants import ROUTE_CANCEL, ROUTE_CHOOSE

from . import http_fuzz
from .harness import uniform_mask_base64


def _request(path, body, framing="length", encoding="none"):
    return http_fuzz.FuzzRequest("POST", path, "HTTP/1.1", [], json.dumps(body).encode(), framing, encoding)


def test_the_oracle_knows_a_good_request_and_defuses_it():
    """Without a sound oracle, a "released" gate could be the fuzzer's own good request."""
    gate = http_fuzz.Gate("tok", routes=3, width=5, height=4, stale=["old"])
    good = [
        _request(ROUTE_CHOOSE, {"token": "tok", "route": 3}),
        _request("/api" + ROUTE_CHOOSE, {"token": "tok", "route": 1, "mask": uniform_mask_base64(5, 4, 9)}),
        _request(ROUTE_CANCEL, {"token": "tok"}, framing="chunked", encoding="gzip"),
        http_fuzz.FuzzRequest("POST", ROUTE_CANCEL, "HTTP/0.9", [], b'{"token": "tok"}', "length", "none"),
    ]
    bad = [
        _request(ROUTE_CHOOSE, {"token": "tok", "route": 4}),
        _request(ROUTE_CHOOSE, {"token": "tok", "route": True}),
        _request(ROUTE_CHOOSE, {"token": "tok", "route": 1, "mask": uniform_mask_base64(4, 5, 9)}),
        _request(ROUTE_CANCEL, {"token": "tok"}, framing="long"),
        _request(ROUTE_CANCEL, {"token": "tok"}, encoding="bogus-gzip"),
        _request(ROUTE_CANCEL, {"token": "old"}),
        http_fuzz.FuzzRequest("POST", ROUTE_CANCEL, "HTTP/1.1 x", [], b'{"token": "tok"}', "length", "none"),
    ]
    assert all(http_fuzz.would_decide(r, gate) for r in good)
    assert not any(http_fuzz.would_decide(r, gate) for r in bad)
    assert not any(http_fuzz.would_decide(http_fuzz.defuse(r, gate), gate) for r in good)


def test_fuzz_the_pack_handlers_in_process():
    http_fuzz.run_in_process(gates=3, per_gate=120, seed_value=11, strict=True, oversize=True).assert_passed()


@pytest.mark.comfy
def test_fuzz_a_real_comfyui(rel_comfy):
    http_fuzz.run_comfy(rel_comfy, gates=2, per_gate=120, seed_value=12, strict=True, oversize=False).assert_passed()


@pytest.mark.comfy
@pytest.mark.heavy
def test_fuzz_a_real_comfyui_full_size(rel_comfy):
    http_fuzz.run_comfy(rel_comfy, gates=20, per_gate=250, seed_value=13, strict=True).assert_passed()
