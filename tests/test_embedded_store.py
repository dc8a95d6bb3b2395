"""CONTRACT 1 (store) and 2: the embedded store persists atomically and keeps
monotonic revisions; a bad file is a clear error naming the file."""

import json
import os

import pytest

from twisted_gw.config.embedded import EmbeddedStore, StoreFileError
from twisted_gw.config.interfaces import DuplicateError, StoreError

MODEL = {"name": "m", "model": "mock/x", "provider_config": {}}


def result(d):
    out = []
    d.addBoth(out.append)
    assert out, "embedded store calls fire synchronously"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def test_writes_persist_across_a_new_store_object(tmp_path):
    path = str(tmp_path / "store.json")
    store = EmbeddedStore(path)
    assert store.load() is False
    entry, created = result(store.put("models", "a", MODEL))
    assert created and entry.created_index == entry.modified_index == 1
    entry, created = result(store.put("models", "a", dict(MODEL, timeout=5)))
    assert not created and (entry.created_index, entry.modified_index) == (1, 2)
    result(store.put("apikeys", "k", {"key": "sk", "allowed_models": ["m"]}))

    again = EmbeddedStore(path)
    assert again.load() is True
    entries = result(again.list("models"))
    assert [(e.key, e.value["timeout"], e.created_index, e.modified_index) for e in entries] == [
        ("/models/a", 5, 1, 2)
    ]
    assert again.snapshot.models_by_name["m"].timeout_ms == 5
    assert again.snapshot.keys_by_key["sk"].id == "k"
    # revisions keep growing after a restart and a delete
    assert result(again.delete("apikeys", "k")).key == "/apikeys/k"
    entry, _ = result(again.put("models", "b", dict(MODEL, name="m2")))
    assert entry.created_index == 5


def test_duplicate_unique_field_is_refused_but_same_id_may_keep_it(tmp_path):
    store = EmbeddedStore(str(tmp_path / "s.json"))
    result(store.put("models", "a", MODEL))
    with pytest.raises(DuplicateError, match="^Model name already exists$"):
        result(store.put("models", "b", MODEL))
    result(store.put("models", "a", MODEL))  # same id keeps its own name
    result(store.put("apikeys", "k1", {"key": "sk", "allowed_models": []}))
    with pytest.raises(DuplicateError, match="^API key already exists$"):
        result(store.put("apikeys", "k2", {"key": "sk", "allowed_models": []}))


def test_listeners_see_every_swap(tmp_path):
    store = EmbeddedStore(str(tmp_path / "s.json"))
    seen = []
    store.add_listener(seen.append)
    result(store.put("models", "a", MODEL))
    result(store.delete("models", "a"))
    assert [len(s.models_by_name) for s in seen] == [1, 0]
    assert seen[-1] is store.snapshot


def test_failed_write_changes_nothing(tmp_path):
    path = tmp_path / "s.json"
    store = EmbeddedStore(str(path))
    result(store.put("models", "a", MODEL))
    before = store.snapshot
    path.unlink()
    path.mkdir()  # the rename onto it now fails, as a full or broken disk would
    with pytest.raises(StoreError, match="store write failed"):
        result(store.put("models", "b", dict(MODEL, name="m2")))
    assert store.snapshot is before
    assert [e.key for e in result(store.list("models"))] == ["/models/a"]
    assert sorted(os.listdir(tmp_path)) == ["s.json"]  # no temp file left


def test_no_temp_files_left_behind(tmp_path):
    store = EmbeddedStore(str(tmp_path / "s.json"))
    for i in range(5):
        result(store.put("models", f"id{i}", dict(MODEL, name=f"m{i}")))
    assert sorted(os.listdir(tmp_path)) == ["s.json"]


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "not JSON"),
        ("[]", "expected an object"),
        ('{"revision": "x", "entries": {}}', "'revision'"),
        ('{"revision": 1, "entries": {"models/a": {"value": {}}}}', "bad key"),
        (
            '{"revision": 1, "entries": {"/models/a": {"value": {}, "created_index": 7, "modified_index": 7}}}',
            "created_index",
        ),
    ],
)
def test_corrupt_file_is_a_clear_error_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "s.json"
    path.write_text(content)
    with pytest.raises(StoreFileError) as info:
        EmbeddedStore(str(path)).load()
    assert str(path) in str(info.value) and problem in str(info.value)


def test_hand_edited_invalid_document_is_skipped_others_load(tmp_path):
    path = tmp_path / "s.json"
    doc = {
        "revision": 2,
        "entries": {
            "/models/a": {
                "value": {"name": "ok", "model": "mock/x", "provider_config": {}},
                "created_index": 1,
                "modified_index": 1,
            },
            "/models/b": {"value": {"name": "bad"}, "created_index": 2, "modified_index": 2},
        },
    }
    path.write_text(json.dumps(doc))
    store = EmbeddedStore(str(path))
    store.load()
    assert list(store.snapshot.models_by_name) == ["ok"]
    # the Admin API still lists what is stored, as stored
    assert [e.key for e in result(store.list("models"))] == ["/models/a", "/models/b"]
