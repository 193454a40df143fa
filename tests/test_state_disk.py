"""The outbox on a small state disk (issue 21): its own log must not fill the disk, it recovers by itself when
another file filled it, and events it cannot store are sent or counted lost at shutdown, never dropped
silently. Real mosquitto, and a real 2 MB tmpfs where this machine lets the tests mount one (as root)."""

import errno
import os
import subprocess

import pytest

from mqtt_helpers import Broker, Subscriber, wait_for
from test_hardening import fill_the_disk, publisher_config, start_event
from vad_edge.agent import status
from vad_edge import config


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB filesystem, as a box's small state partition."""
    if os.geteuid() != 0:
        pytest.skip("mounting a 2 MB tmpfs needs root (CI runs as root)")
    mount = tmp_path / "state-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def agent_on(tmp_path, state_dir, port, tiny_checkpoint):
    from vad_edge.agent.runner import Agent

    cfg = publisher_config(tmp_path, port).model_copy(
        update={"state_dir": state_dir, "model": config.Model(checkpoint=tiny_checkpoint, device="cpu")})
    return Agent(cfg)


def event_of_the_usual_size(n: int) -> dict:
    """About the size of a real event (1 KB of JSON)."""
    return {"event_id": f"e{n}:update:1", "type": "update", "camera": "door", "peak_score": 2.0, "n": n,
            "region": {"x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4}, "model": {"name": "lite", "sha256": "f" * 64},
            "notes": "x" * 700}


def fill_with_another_file(directory) -> "os.PathLike":
    """Writes a file until the filesystem has no room left."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_2mb_state_disk_carries_a_long_run_and_recovers_after_another_file_filled_it(
        tmp_path, small_disk, broker, tiny_checkpoint):
    """Before: the WAL grew ~23 KB an event, was never checkpointed, and filled the disk after ~98 events;
    from then on no write could succeed, also after space was freed elsewhere."""
    sub = Subscriber(broker.port)
    agent = agent_on(tmp_path, small_disk / "state", broker.port, tiny_checkpoint)
    agent.start()
    state = agent.cameras["door"]
    try:
        wait_for(lambda: agent.mqtt.connected, 20, "the agent to connect")
        largest = 0
        for batch in range(40):  # 400 events, each acknowledged and deleted
            agent._commit(state, [event_of_the_usual_size(10 * batch + i) for i in range(10)])
            wait_for(lambda: agent.outbox.depth() == 0, 30, "the batch acknowledged")
            assert status.health(agent)["healthy"], status.health(agent)
            largest = max(largest, status.stats(agent)["outbox"]["bytes"])
        usage = status.stats(agent)["outbox"]
        assert largest < 640 * 1024 and usage["wal_bytes"] < 400 * 1024, (largest, usage)

        filler = fill_with_another_file(small_disk)
        agent._commit(state, [event_of_the_usual_size(n) for n in range(400, 430)])
        agent.step()
        os.remove(filler)  # space returns: the outbox recovers by itself
        wait_for(lambda: (agent.step(), not agent.delivery.waiting and agent.outbox.depth() == 0)[1], 30,
                 "every event stored and acknowledged")
        assert status.health(agent)["healthy"] and status.stats(agent)["storage"]["events_lost"] == 0
        wait_for(lambda: len(sub.events()) >= 430, 30, "all 430 events")
        got = sub.events()
        assert sorted(e["n"] for e in got) == list(range(430))  # each once: none lost, none sent twice
        assert not any(e["replayed"] for e in got)
    finally:
        agent.shutdown(flush_timeout=1)
        sub.close()


def test_events_storage_refused_at_shutdown_are_sent_from_memory(tmp_path, broker, tiny_checkpoint, caplog):
    sub = Subscriber(broker.port)
    agent = agent_on(tmp_path, tmp_path / "state", broker.port, tiny_checkpoint)
    agent.start()
    try:
        wait_for(lambda: agent.mqtt.connected, 20, "the agent to connect")
        fill_the_disk(agent.outbox)
        agent._commit(agent.cameras["door"], [start_event(n) for n in range(4)])
        assert len(agent.delivery.waiting) == 4
    finally:
        with caplog.at_level("INFO", logger="vad_edge.agent"):
            agent.shutdown(flush_timeout=5)
    wait_for(lambda: len(sub.events()) == 4, 20, "the four events")
    sub.close()
    assert [e["n"] for e in sub.events()] == [0, 1, 2, 3] and all(e["seq"] is None for e in sub.events())
    assert agent.delivery.lost == 0 and "sent from memory" in caplog.text and "0 lost" in caplog.text


def test_events_neither_stored_sent_nor_kept_at_shutdown_are_counted_and_named(
        tmp_path, broker, tiny_checkpoint, runtime_directory, caplog):
    """Before: shutdown said "stopped; 0 events left" and these events vanished with events_lost 0. Kept
    nowhere either here: the runtime directory is writable by others, so no spill is trusted to it."""
    runtime_directory.chmod(0o777)
    agent = agent_on(tmp_path, tmp_path / "state", broker.port, tiny_checkpoint)
    agent.start()
    try:
        wait_for(lambda: agent.mqtt.connected, 20, "the agent to connect")
        broker.stop()
        wait_for(lambda: not agent.mqtt.connected, 20, "the agent to lose the broker")
        fill_the_disk(agent.outbox)
        agent._commit(agent.cameras["door"], [start_event(n) for n in range(3)])
    finally:
        with caplog.at_level("INFO", logger="vad_edge.agent"):
            agent.shutdown(flush_timeout=1)
    assert agent.delivery.lost == 3 and agent.delivery.stats()["events_lost"] == 3
    lost_line = next(r.getMessage() for r in caplog.records if "LOST" in r.getMessage())
    assert "LOST 3 event(s)" in lost_line and all(f"e{n}:start" in lost_line for n in range(3))
    assert f"{runtime_directory} is not a directory of this user's that only it can write to" in lost_line
    assert "3 lost" in caplog.text and not list(runtime_directory.iterdir())


def anomaly(n: int, kind: str) -> dict:
    """One message of anomaly n, as the tracker makes them (what an open record is read back from)."""
    at = f"2026-12-07T10:{n // 60:02d}:{n % 60:02d}.000Z"  # no end_time: no clip is cut, the end goes out at once
    return {**event_of_the_usual_size(n), "event_id": f"a{n}:{kind}", "type": kind, "frame_time": at, "start_time": at}


def test_a_full_disk_with_the_broker_down_at_a_clean_stop_loses_nothing_and_ends_each_event_once(
        tmp_path, small_disk, broker, tiny_checkpoint, caplog):
    """Before: with the state disk full and the broker down, a clean stop logged the events as LOST, and the
    next start sent a second end ("agent restarted") for an event whose end had gone out from memory."""
    state_dir = small_disk / "state"
    agent = agent_on(tmp_path, state_dir, broker.port, tiny_checkpoint)
    agent.start()
    assert (state_dir / "outbox.sqlite.reserve").exists() and agent.outbox.disk_usage()["reserve_bytes"] == 512 * 1024
    try:
        wait_for(lambda: agent.mqtt.connected, 20, "the agent to connect")
        broker.stop()
        wait_for(lambda: not agent.mqtt.connected, 20, "the agent to lose the broker")
        filler = fill_with_another_file(small_disk)
        with caplog.at_level("WARNING", logger="vad_edge.outbox"):
            for n in range(40):  # forty anomalies, start to end, while the disk is full
                agent._commit(agent.cameras["door"], [anomaly(n, "start"), anomaly(n, "end")])
        assert "gave back its 512 KiB reserve" in caplog.text
        assert not agent.delivery.waiting and agent.outbox.depth() == 80
        # Stored in the reserve: healthy still, with a warning that the next outage has no room left.
        health = status.health(agent)
        assert health["healthy"] and "KiB free" in health["warnings"][0] and "given back" in health["warnings"][0]
        status.health(agent)
        assert sum("KiB free: events go out now" in r.getMessage() for r in caplog.records) == 1  # logged once
    finally:
        with caplog.at_level("INFO", logger="vad_edge.agent"):
            agent.shutdown(flush_timeout=1)
    assert agent.delivery.lost == 0 and "LOST" not in caplog.text

    os.remove(filler)  # the disk freed, the broker back, the agent started again
    broker.start()
    sub = Subscriber(broker.port)
    caplog.clear()
    with caplog.at_level("WARNING", logger="vad_edge.agent"):
        agent = agent_on(tmp_path, state_dir, broker.port, tiny_checkpoint)
    agent.start()
    try:
        wait_for(lambda: len(sub.events()) >= 80 and agent.outbox.depth() == 0, 30, "the 80 stored messages")
    finally:
        agent.shutdown(flush_timeout=5)
        sub.close()
    ids = [e["event_id"] for e in sub.events()]
    assert sorted(ids) == sorted(f"a{n}:{kind}" for n in range(40) for kind in ("start", "end"))  # each once
    assert "never ended" not in caplog.text and not any(e.get("reason") for e in sub.events())
    assert (state_dir / "outbox.sqlite.reserve").exists()  # set aside again


def anomalies_until_events_wait_in_memory(agent, first: int = 0) -> int:
    """Whole anomalies, start and end, until the outbox refuses one (its reserve spent); returns the next n."""
    n = first
    while not agent.delivery.waiting:
        agent._commit(agent.cameras["door"], [anomaly(n, "start"), anomaly(n, "end")])
        n += 1
    return n


def sentinel_seen(agent, sub, name: str) -> None:
    """Publishes a marker on the agent's own connection and waits for it: whatever the agent published before
    on that connection (its replays at the connect) has reached the subscriber by then."""
    agent.mqtt.publish(f"vad-edge/test/{name}", b"1", qos=1)
    wait_for(lambda: sub.on(f"test/{name}"), 30, f"the marker {name}")


def test_with_the_reserve_spent_a_clean_stop_keeps_the_rest_and_the_next_start_sends_each_event_once(
        tmp_path, small_disk, tiny_checkpoint, runtime_directory, caplog):
    """Before: once the reserve was spent, a clean stop with the broker down logged the waiting events LOST,
    and the events the broker had acknowledged but the full disk could not delete were sent again at the
    next start. The broker keeps its subscriber's session across its restarts, as a production one does."""
    broker = Broker(tmp_path / "broker", persistent=True).start()
    sub = Subscriber(broker.port, session="spill-watcher")
    state_dir = small_disk / "state"
    agent = agent_on(tmp_path, state_dir, broker.port, tiny_checkpoint)
    agent.start()
    try:
        wait_for(lambda: agent.mqtt.connected and sub.client.is_connected(), 20, "the agent and the subscriber")
        broker.stop()
        wait_for(lambda: not agent.mqtt.connected, 20, "the agent to lose the broker")
        filler = fill_with_another_file(small_disk)
        n = anomalies_until_events_wait_in_memory(agent)
        broker.start()  # what the outbox holds goes out and is acknowledged; the full disk lets none be deleted
        wait_for(lambda: agent.outbox.depth() == len(agent.sender.acked_undeleted()), 60,
                 "every stored event acknowledged")  # the WAL's room lets a few be deleted, no more
        stored = agent.outbox.depth()
        broker.stop()  # and down again at the stop
        wait_for(lambda: not agent.mqtt.connected, 20, "the agent to lose the broker")
        for extra in range(n, n + 3):
            agent._commit(agent.cameras["door"], [anomaly(extra, "start"), anomaly(extra, "end")])
        total, waiting = n + 3, len(agent.delivery.waiting)
    finally:
        with caplog.at_level("INFO", logger="vad_edge.agent"):
            agent.shutdown(flush_timeout=1)
    assert agent.delivery.lost == 0 and "LOST" not in caplog.text
    stop_line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("stopped;"))
    assert (f"stopped; {stored} events left in the outbox for the next start (0 never delivered; {stored} delivered "
            f"already, which the full state disk would not let it delete: recorded for the next start, not sent "
            f"again), {waiting} kept beside it in {runtime_directory}") in stop_line, stop_line
    assert len(list(runtime_directory.glob("spill-*.json"))) == 1

    os.remove(filler)  # the disk freed, the broker back, the agent started again
    broker.start()
    caplog.clear()
    with caplog.at_level("INFO", logger="vad_edge.agent"):
        agent = agent_on(tmp_path, state_dir, broker.port, tiny_checkpoint)
        agent.start()
        try:
            wait_for(lambda: agent.mqtt.connected and agent.outbox.depth() == 0, 30, "the kept events sent")
            sentinel_seen(agent, sub, "after-restart")
        finally:
            agent.shutdown(flush_timeout=5)
            sub.close()
            broker.stop()
    assert f"the last stop kept {waiting} event(s) not yet stored, {stored} acknowledgement(s)" in caplog.text
    ids = sorted(e["event_id"] for e in sub.events())
    assert ids == sorted(f"a{n}:{kind}" for n in range(total) for kind in ("start", "end"))  # each exactly once
    assert "never ended" not in caplog.text and not any(e.get("reason") for e in sub.events())
    assert not list(runtime_directory.glob("spill-*.json"))  # applied, and removed


def test_ends_sent_from_memory_are_not_ended_again_even_when_the_disk_is_still_full_at_the_next_start(
        tmp_path, small_disk, broker, tiny_checkpoint, runtime_directory, caplog):
    """Before: an end that went out from memory at the stop left its camera's open record in the outbox, and
    the next start sent a second end, "agent restarted", with another time. The broker is up throughout."""
    sub = Subscriber(broker.port)
    state_dir = small_disk / "state"
    agent = agent_on(tmp_path, state_dir, broker.port, tiny_checkpoint)
    agent.start()
    try:
        wait_for(lambda: agent.mqtt.connected and sub.client.is_connected(), 20, "the agent and the subscriber")
        filler = fill_with_another_file(small_disk)
        agent._commit(agent.cameras["door"], [anomaly(0, "start")])  # stored in the reserve: the record is open
        n = 0
        while not agent.delivery.waiting:
            n += 1
            agent._commit(agent.cameras["door"], [{**anomaly(0, "update"), "event_id": f"a0:update:{n}"}])
        agent._commit(agent.cameras["door"], [anomaly(0, "end")])
        wait_for(lambda: len(agent.sender.acked_undeleted()) == agent.outbox.depth(), 30, "the stored ones acked")
    finally:
        agent.shutdown(flush_timeout=5)  # the waiting updates and the end go out from memory
    assert agent.delivery.lost == 0
    sent = sorted(e["event_id"] for e in sub.events())
    assert sent.count("a0:end") == 1 and len(sent) == n + 2

    caplog.clear()  # the disk still full at the next start
    with caplog.at_level("INFO", logger="vad_edge.agent"):
        agent = agent_on(tmp_path, state_dir, broker.port, tiny_checkpoint)
    agent.start()
    try:
        wait_for(lambda: agent.mqtt.connected, 20, "the agent to connect")
        sentinel_seen(agent, sub, "disk-still-full")
        assert sorted(e["event_id"] for e in sub.events()) == sent  # nothing again, and no second end
        assert [stale.event["event_id"] for stale in agent.outbox.open_events()] == [f"a0:update:{n - 1}"]
        assert agent.delivery.restoring is not None and "never ended" not in caplog.text
        os.remove(filler)
        agent.delivery.flush()  # the loop's next pass, now that the disk has room
        assert agent.delivery.restoring is None and agent.outbox.depth() == 0 and not agent.outbox.open_events()
        assert not list(runtime_directory.glob("spill-*.json"))
    finally:
        agent.shutdown(flush_timeout=5)
        sub.close()
    assert sorted(e["event_id"] for e in sub.events()) == sent


def test_what_the_last_stop_kept_goes_out_from_memory_at_the_next_stop_when_the_disk_never_took_it(
        tmp_path, small_disk, broker, tiny_checkpoint, runtime_directory):
    """A spill the start could not store (the disk still full), sent and acknowledged from memory at that
    start's own stop, must not be applied again at the start after."""
    from vad_edge.agent.spill import Spill, SpillFile

    state_dir = small_disk / "state"
    agent_on(tmp_path, state_dir, broker.port, tiny_checkpoint).shutdown(flush_timeout=1)  # an outbox exists
    topic = "vad-edge/box/cameras/door/events"  # more than the reserve takes: 600 events of 1 KB
    kept = [(topic, anomaly(n, kind)) for n in range(300) for kind in ("start", "end")]
    SpillFile(state_dir).write(Spill(str(state_dir.resolve()), kept))
    filler = fill_with_another_file(small_disk)
    sub = Subscriber(broker.port)
    agent = agent_on(tmp_path, state_dir, broker.port, tiny_checkpoint)
    agent.start()
    try:
        assert agent.delivery.restoring is not None  # the disk took none of it
        wait_for(lambda: agent.mqtt.connected and sub.client.is_connected(), 20, "the agent and the subscriber")
    finally:
        agent.shutdown(flush_timeout=60)
    wait_for(lambda: len(sub.events()) == len(kept), 30, "the kept anomalies, sent from memory")
    assert not list(runtime_directory.glob("spill-*.json"))  # nothing left to keep

    os.remove(filler)
    agent = agent_on(tmp_path, state_dir, broker.port, tiny_checkpoint)
    agent.start()
    try:
        wait_for(lambda: agent.mqtt.connected, 20, "the agent to connect")
        sentinel_seen(agent, sub, "third-start")
    finally:
        agent.shutdown(flush_timeout=5)
        sub.close()
    assert sorted(e["event_id"] for e in sub.events()) == sorted(event["event_id"] for _, event in kept)  # once each


def test_an_outbox_opens_on_a_full_disk_with_its_reserve_and_says_why_not_without_one(small_disk):
    from vad_edge.agent.outbox import Outbox, StorageError

    path = small_disk / "state" / "outbox.sqlite"
    Outbox(path).close()  # a clean stop removes SQLite's log files: the next open creates them again
    filler = fill_with_another_file(small_disk)
    Outbox(path).close()  # the reserve given back for it
    assert not path.with_name("outbox.sqlite.reserve").exists()
    os.remove(filler)
    Outbox(path).close()  # set aside again
    path.with_name("outbox.sqlite.reserve").unlink()  # and spent elsewhere
    fill_with_another_file(small_disk)
    with pytest.raises(StorageError, match="cannot open the outbox .*; the state disk is full: free space there"):
        Outbox(path)
