"""The embedded store shared by several worker processes (``shared=True``):
each copy sees the others' writes within a poll, and writes through any copy
are made against the latest file under the lock, so none is lost and
duplicates are refused whichever copy wrote first. Two store objects on one
file stand for two workers; the poll runs on a ``task.Clock``."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest
from twisted.internet import task

from twisted_gw.config.embedded import EmbeddedStore
from twisted_gw.config.interfaces import DuplicateError

MODEL = {"name": "m", "model": "mock/x", "provider_config": {}}


def result(d):
    out = []
    d.addBoth(out.append)
    assert out
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def pair(tmp_path):
    path = str(tmp_path / "store.json")
    clock = task.Clock()
    stores = [EmbeddedStore(path, shared=True, reactor=clock) for _ in range(2)]
    for store in stores:
        store.load()
        result(store.start())
    return clock, stores


def key(value: str) -> dict:
    return {"key": value, "allowed_models": ["m"]}


def test_a_write_through_one_copy_reaches_the_other_within_one_poll(tmp_path):
    clock, (a, b) = pair(tmp_path)
    seen = []
    b.add_listener(seen.append)
    result(a.put("apikeys", "k1", key("sk-1")))
    assert result(b.list("apikeys")) == []  # not before its next look at the file
    clock.advance(EmbeddedStore.POLL_INTERVAL)
    assert len(seen) == 1 and seen[0].revision == 1
    assert [e.key for e in result(b.list("apikeys"))] == ["/apikeys/k1"]
    clock.advance(EmbeddedStore.POLL_INTERVAL)
    assert len(seen) == 1  # nothing changed: no reload


def test_writes_through_both_copies_between_polls_lose_nothing(tmp_path):
    clock, (a, b) = pair(tmp_path)
    result(a.put("apikeys", "k1", key("sk-1")))
    result(b.put("apikeys", "k2", key("sk-2")))  # b has not polled: it re-reads under the lock
    result(a.put("models", "m1", MODEL))
    for store in (a, b):
        clock.advance(EmbeddedStore.POLL_INTERVAL)
        assert [e.key for e in result(store.list("apikeys"))] == ["/apikeys/k1", "/apikeys/k2"]
        assert [e.key for e in result(store.list("models"))] == ["/models/m1"]
    with open(a.path) as f:
        doc = json.load(f)
    assert doc["revision"] == 3
    assert sorted(e["modified_index"] for e in doc["entries"].values()) == [1, 2, 3]


def test_a_duplicate_is_refused_against_the_other_copys_write(tmp_path):
    _, (a, b) = pair(tmp_path)
    result(a.put("apikeys", "k1", key("sk-same")))
    with pytest.raises(DuplicateError):
        result(b.put("apikeys", "k2", key("sk-same")))


def test_a_delete_through_one_copy_is_not_undone_by_the_other(tmp_path):
    clock, (a, b) = pair(tmp_path)
    result(a.put("apikeys", "k1", key("sk-1")))
    clock.advance(EmbeddedStore.POLL_INTERVAL)
    result(b.delete("apikeys", "k1"))
    result(a.put("apikeys", "k2", key("sk-2")))  # a's memory still had k1
    clock.advance(EmbeddedStore.POLL_INTERVAL)
    for store in (a, b):
        assert [e.key for e in result(store.list("apikeys"))] == ["/apikeys/k2"]


def test_a_corrupt_file_keeps_the_last_good_snapshot(tmp_path):
    clock, (a, b) = pair(tmp_path)
    result(a.put("apikeys", "k1", key("sk-1")))
    clock.advance(EmbeddedStore.POLL_INTERVAL)
    with open(a.path, "w") as f:
        f.write("{not json")
    clock.advance(EmbeddedStore.POLL_INTERVAL)
    assert [e.key for e in result(b.list("apikeys"))] == ["/apikeys/k1"]


def test_one_process_store_neither_polls_nor_locks(tmp_path):
    store = EmbeddedStore(str(tmp_path / "store.json"))
    store.load()
    result(store.start())
    result(store.put("apikeys", "k1", key("sk-1")))
    assert store._poll is None
    assert not os.path.exists(store.path + ".lock")


def _writer(path: str, prefix: str, count: int) -> None:
    store = EmbeddedStore(path, shared=True)
    store.load()
    for i in range(count):
        result(store.put("apikeys", f"{prefix}{i}", key(f"sk-{prefix}{i}")))


def test_processes_writing_at_once_lose_no_write(tmp_path):
    path = str(tmp_path / "store.json")
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_writer, args=(path, p, 25)) for p in "abc"]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
        assert w.exitcode == 0
    with open(path) as f:
        doc = json.load(f)
    assert len(doc["entries"]) == 75 and doc["revision"] == 75
