"""The DATASETE_GATES_STORE setting and the object-store requests (If-None-Match / If-Match) against
moto's server on 127.0.0.1 (tests/s3_testkit.py)."""

from __future__ import annotations

import sys

import pytest

from gates.storage import StoreConfigError, objects, parse_store

# --- the setting -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, fragment", [
    ("/data/gates", "not supported"),
    ("gs://bucket/x", "not supported"),
    ("s3://Bad_Bucket/x", "not a valid bucket name"),
    ("s3://bucket/a/../b", "not allowed"),
    ("s3://bucket/a//b", "empty part"),
])
def test_a_bad_setting_is_refused_naming_the_value(value, fragment):
    with pytest.raises(StoreConfigError) as caught:
        parse_store(value)
    assert fragment in str(caught.value) and repr(value) in str(caught.value)


def test_good_settings():
    assert parse_store(None) is None and parse_store("  ") is None
    assert parse_store("s3://my-bucket") == parse_store("s3://my-bucket/")
    assert str(parse_store("s3://my-bucket/a/b/")) == "s3://my-bucket/a/b/"


def test_conditional_writes_are_honoured_by_the_endpoint(s3_store):
    store = objects.store_for(s3_store)
    etag = store.put("probe", b"1", if_none_match=True)
    with pytest.raises(objects.Conflict):
        store.put("probe", b"2", if_none_match=True)
    with pytest.raises(objects.Conflict):
        store.put("probe", b"2", if_match='"0000"')
    store.put("probe", b"3", if_match=etag)
    assert store.get("probe")[0] == b"3"



def test_the_store_refuses_a_missing_s3fs_clearly(monkeypatch):
    monkeypatch.setitem(sys.modules, "s3fs", None)
    with pytest.raises(objects.StoreUnavailable, match="pip install"):
        objects.ObjectStore("bucket")


def test_a_bad_setting_does_not_stop_the_pack_from_loading(monkeypatch, tmp_path, caplog):
    import types

    from gates import slots

    monkeypatch.setitem(sys.modules, "folder_paths", types.SimpleNamespace(get_input_directory=lambda: str(tmp_path)))
    monkeypatch.setenv("DATASETE_GATES_STORE", "s3://Bad_Bucket")
    with caplog.at_level("ERROR", logger="datasete_gates"):
        assert slots.sweep_bus_at_start() == 0
    assert "Bad_Bucket" in caplog.text
