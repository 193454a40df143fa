"""`vad-edge events` end to end against a real mosquitto: a persistent session keeps events for the
watcher while it is away, each message is shown once, replays are marked, other boxes are filtered out."""

import json
import threading

import paho.mqtt.client as paho

from mqtt_helpers import Broker
from vad_edge.cli import main


def event(kind: str, seq: int, replayed: bool = False, device: str = "box") -> dict:
    return {"event_id": f"e1:{kind}", "seq": seq, "type": kind, "device_id": device, "camera": "door",
            "frame_time": f"2026-11-27T10:00:0{seq}+00:00", "score": 1.5, "peak_score": 2.0,
            "region": {"x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4}, "replayed": replayed}


def publish(port: int, messages: list[tuple[str, dict]]) -> None:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-publisher")
    client.connect("127.0.0.1", port)
    client.loop_start()
    for topic, payload in messages:
        client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(60)
    client.loop_stop()
    client.disconnect()


def test_events_waits_for_the_watcher_dedups_and_marks_replays(tmp_path, capsys):
    broker = Broker(tmp_path / "broker").start()
    watch = ["events", "--broker", "127.0.0.1", "--port", str(broker.port), "--device", "box", "--client-id", "w1"]
    try:
        assert main([*watch, "--idle", "0.5"]) == 0  # first run: the broker now keeps a session for w1
        assert capsys.readouterr().out.splitlines() == [f"# events of box box on 127.0.0.1:{broker.port}"]

        start, end = event("start", 1), event("end", 2, replayed=True)
        publish(broker.port, [("vad-edge/box/cameras/door/events", start),
                              ("vad-edge/box/cameras/door/events", start),  # QoS 1 may deliver twice
                              ("vad-edge/other/cameras/door/events", event("start", 7, device="other")),
                              ("vad-edge/box/cameras/door/events", end)])
        assert main([*watch, "--count", "2"]) == 0  # the two kept while away, each once
        lines = capsys.readouterr().out.splitlines()[1:]
        assert len(lines) == 2
        assert lines[0].startswith("box  2026-11-27T10:00:01+00:00  start") and "replayed" not in lines[0]
        assert " end " in lines[1] and "seq=2" in lines[1] and "(replayed" in lines[1]

        # --follow: new events as they come; --count ends it here.
        done = threading.Event()
        follower = threading.Thread(target=lambda: (main([*watch, "--follow", "--count", "1"]), done.set()))
        follower.start()
        publish(broker.port, [("vad-edge/box/cameras/door/events", {**event("update", 3), "event_id": "e1:update:1"})])
        follower.join(120)
        assert done.is_set()
        assert " update " in capsys.readouterr().out
    finally:
        broker.stop()


def test_events_names_an_unset_password_variable(capsys, monkeypatch):
    monkeypatch.delenv("NO_SUCH_PASSWORD", raising=False)
    assert main(["events", "--broker", "127.0.0.1", "--username", "u", "--password-env", "NO_SUCH_PASSWORD"]) == 1
    assert "NO_SUCH_PASSWORD: that variable is not set" in capsys.readouterr().err


def test_the_readme_subscriber_example_is_valid_python():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    compile(block, "README.md (receiving alerts)", "exec")
    assert "clean_session=False" in block and "qos=1" in block and "event_id" in block


def test_events_save_fetches_each_end_events_clip_and_says_what_it_could_not(tmp_path, capsys):
    """--save DIR: an end's clip comes from the box's health server (a real HTTP server here, serving a file
    as the agent's does), whole; a clip the server does not have, or an end without one, is said."""
    import functools
    import http.server

    served = tmp_path / "served" / "clips"
    served.mkdir(parents=True)
    (served / "e1.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served.parent))
    handler.log_message = lambda *args: None
    http_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    broker = Broker(tmp_path / "broker").start()
    size = (served / "e1.mp4").stat().st_size
    ends = [{**event("end", 2), "clip": {"file": "e1.mp4", "url": "/clips/e1.mp4", "bytes": size, "duration": 4.2}},
            {**event("end", 3), "event_id": "e2:end", "clip": {"file": "e2.mp4", "url": "/clips/e2.mp4",
                                                              "bytes": 10, "duration": 1.0}},
            {**event("end", 4), "event_id": "e3:end", "clip": {"error": "the stream broke"}}]
    watch = ["events", "--broker", "127.0.0.1", "--port", str(broker.port), "--device", "box", "--client-id", "w3",
             "--save", str(tmp_path / "saved"), "--clips-from", f"http://127.0.0.1:{http_server.server_port}"]
    try:
        assert main([*watch, "--idle", "0.5"]) == 0  # the session, kept while away
        capsys.readouterr()
        publish(broker.port, [("vad-edge/box/cameras/door/events", e) for e in ends])
        assert main([*watch, "--count", "3"]) == 0
    finally:
        broker.stop()
        http_server.shutdown()
    out = capsys.readouterr().out
    assert (tmp_path / "saved" / "e1.mp4").read_bytes() == (served / "e1.mp4").read_bytes()
    assert f"# clip saved: {tmp_path / 'saved' / 'e1.mp4'} ({size} bytes, 4.2 s)" in out
    assert f"# clip e2.mp4 not saved: http://127.0.0.1:{http_server.server_port}/clips/e2.mp4: File not found" in out
    assert "# no clip: the stream broke" in out
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["e1.mp4"]
