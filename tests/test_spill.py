"""The spill file (vad_edge/agent/spill.py): what a stop could not store, kept in the runtime directory. It is
published at the next start, so it is trusted only when it is this user's, in a directory only this user can
write to; a bad one is set aside by name, and one applied already is never applied twice."""

import json
import logging
import os

import pytest

from vad_edge.agent.outbox import Outbox
from vad_edge.agent.spill import Spill, SpillFile, runtime_dir


def anomaly(n: int) -> list[tuple[str, dict]]:
    return [("vad-edge/box/cameras/door/events", {"event_id": f"a{n}:{kind}", "type": kind, "camera": "door"})
            for kind in ("start", "end")]


@pytest.fixture
def spill_file(tmp_path, runtime_directory):
    return SpillFile(tmp_path / "state")


def test_a_spill_comes_back_as_it_was_written(spill_file, runtime_directory):
    kept = Spill(spill_file.state_dir, anomaly(1), [(7, "a0:end")], [("door", "a2:end")], ["a1:start"])
    spill_file.write(kept)
    assert spill_file.path.parent == runtime_directory and oct(spill_file.path.stat().st_mode & 0o777) == "0o600"
    back = spill_file.read()
    assert back == kept and back.ended_anomalies() == {"a1", "a2"}
    assert not list(runtime_directory.glob("*.part"))


def test_the_runtime_directory_is_systemds_then_the_users_and_never_tmp(monkeypatch, tmp_path):
    monkeypatch.setenv("RUNTIME_DIRECTORY", f"{tmp_path}/a:{tmp_path}/b")
    assert runtime_dir() == tmp_path / "a"
    monkeypatch.delenv("RUNTIME_DIRECTORY")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "user"))
    assert runtime_dir() == tmp_path / "user" / "vad-edge"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert runtime_dir() == (__import__("pathlib").Path("/run/vad-edge") if os.geteuid() == 0 else None)


def test_two_state_directories_keep_two_spills(tmp_path):
    assert SpillFile(tmp_path / "one").path != SpillFile(tmp_path / "two").path


def test_a_spill_in_a_directory_others_can_write_to_is_neither_written_nor_read(spill_file, runtime_directory, caplog):
    spill_file.write(Spill(spill_file.state_dir, anomaly(1)))
    runtime_directory.chmod(0o777)
    with pytest.raises(OSError, match="only it can write to"):
        spill_file.write(Spill(spill_file.state_dir, anomaly(2)))
    with caplog.at_level(logging.ERROR):
        assert spill_file.read() is None
    assert "SPILL IGNORED" in caplog.text and spill_file.path.exists()  # left where it is, unread


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_spill_another_user_planted_is_not_read(spill_file, caplog):
    spill_file.write(Spill(spill_file.state_dir, anomaly(1)))
    os.chown(spill_file.path, 12345, 12345)
    with caplog.at_level(logging.ERROR):
        assert spill_file.read() is None
    assert "is not this user's file" in caplog.text


def test_a_symlink_in_the_spills_place_is_not_followed(spill_file, tmp_path, caplog):
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("{}")
    spill_file.path.parent.mkdir(parents=True, exist_ok=True)
    spill_file.path.symlink_to(elsewhere)
    with caplog.at_level(logging.ERROR):
        assert spill_file.read() is None
    assert "cannot be read" in caplog.text
    spill_file.write(Spill(spill_file.state_dir, anomaly(1)))  # replaces the link, never writes through it
    assert elsewhere.read_text() == "{}" and not spill_file.path.is_symlink()


@pytest.mark.parametrize("body, why", [
    ("{not json", "Expecting property name"),
    (json.dumps({"version": 99}), "expected version 1"),
    (json.dumps({"version": 1, "state_dir": "/somewhere/else"}), "expected version 1 for"),
    (None, "an unsent event has no event_id"),
])
def test_a_spill_that_cannot_be_read_is_set_aside_by_name(spill_file, runtime_directory, body, why, caplog):
    if body is None:  # right version and place, an event without its id
        body = json.dumps({"version": 1, "id": "x", "state_dir": spill_file.state_dir, "unsent": [["t", {"type": "end"}]],
                           "delivered": [], "ended": [], "published": []})
    spill_file.path.parent.mkdir(parents=True, exist_ok=True)
    spill_file.path.write_text(body)
    with caplog.at_level(logging.ERROR):
        assert spill_file.read() is None
    assert why in caplog.text and "SPILL IGNORED" in caplog.text
    assert not spill_file.path.exists() and len(list(runtime_directory.glob("spill-*.json.bad-*"))) == 1


def test_restoring_deletes_the_delivered_closes_the_ended_and_stores_the_unsent_once(tmp_path):
    outbox = Outbox(tmp_path / "state" / "outbox.sqlite")
    delivered = outbox.add("t", {"event_id": "a0:start", "type": "start", "camera": "door", "frame_time": "x"})
    other = outbox.add("t", {"event_id": "a9:start", "type": "start", "camera": "yard", "frame_time": "x"})
    spill = Spill(str(tmp_path), anomaly(1), [(delivered.seq, "a0:start"), (other.seq, "not-its-id")],
                  [("door", "a0:end"), ("yard", "a8:end")])
    stored = outbox.restore(spill)
    assert [p.event["event_id"] for p in stored] == ["a1:start", "a1:end"] and outbox.restored(spill)
    assert [p.event["event_id"] for p in outbox.pending()] == ["a9:start", "a1:start", "a1:end"]  # a seq's id checked
    # door's record was a0's (closed by its end); yard's is a9's, which a8's end does not close
    assert [p.event["event_id"] for p in outbox.open_events()] == ["a9:start"]
    assert outbox.restore(spill) == []  # stored once, whatever happens twice
