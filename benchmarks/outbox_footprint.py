"""What the outbox takes of a small state disk: the agent's outbox and event sender on a real mosquitto, with
the state folder on a tmpfs of --disk-mb (root: it mounts one).

Three phases, one table:
- delivered: --events events, each acknowledged before the next (the broker is up): the largest footprint
  of the outbox's files, its log (WAL) among them;
- backlog: the broker is away and events pile up until the outbox's own bound (a quarter of the disk by
  default) trims the oldest: how many it holds, and what that takes;
- another file fills the disk: events still stored in the room the log holds, and recovery once it is gone.

    sudo python benchmarks/outbox_footprint.py [--disk-mb 2] [--events 5000]
"""

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from vad_edge.agent.delivery import EventSender
from vad_edge.agent.mqtt import MqttClient
from vad_edge.agent.outbox import Outbox, StorageError, default_max_bytes
from vad_edge.config import Config
from vad_edge.demo import LocalBroker


def event(n: int) -> dict:
    """The size of a real event (about 1 KB of JSON)."""
    return {"event_id": f"e{n}:update:1", "type": "update", "camera": "door", "peak_score": 2.0, "n": n,
            "region": {"x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4}, "model": {"name": "lite", "sha256": "f" * 64},
            "notes": "x" * 700}


def wait(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("timed out: the broker did not acknowledge")
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--disk-mb", type=int, default=2)
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vad-edge-outbox-"))
    disk = work / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.disk_mb}m", "tmpfs", str(disk)], check=True)
    broker = LocalBroker(work)
    cfg = Config.model_validate({"device_id": "bench", "state_dir": str(disk), "health": {"port": 0},
                                 "mqtt": {"host": "127.0.0.1", "port": broker.port}, "cameras": [
                                     {"name": "door", "source": "x.mp4"}]})
    outbox = Outbox(disk / "outbox.sqlite", max_bytes=default_max_bytes(disk))
    mqtt = MqttClient(cfg, lambda *a: None)
    sender = EventSender(outbox, mqtt)
    mqtt.start()
    rows = []
    try:
        wait(lambda: mqtt.connected)
        largest = largest_wal = 0
        for n in tqdm(range(args.events), desc="delivered one by one", unit="event"):
            sender.send(outbox.add("vad-edge/bench/cameras/door/events", event(n)))
            wait(lambda: outbox.depth() == 0)
            usage = outbox.disk_usage()
            largest, largest_wal = max(largest, usage["bytes"]), max(largest_wal, usage["wal_bytes"])
        rows.append(("delivered", f"{args.events} events acknowledged", largest, largest_wal))

        mqtt.stop()  # the broker is away from now on: events pile up
        n0 = args.events
        for n in tqdm(range(n0, n0 + 4 * args.events), desc="backlog", unit="event"):
            outbox.add("t", event(n))
        usage = outbox.disk_usage()
        rows.append(("backlog", f"{outbox.depth()} held, {outbox.dropped()} oldest dropped (limit "
                     f"{outbox.max_bytes / 2**20:.2f} MiB)", usage["bytes"], usage["wal_bytes"]))

        filler = disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)  # until it is full
        stored = failed = 0
        for n in range(100):
            try:
                outbox.add("t", event(10**6 + n))
                stored += 1
            except StorageError:
                failed += 1
        filler.unlink()
        outbox.add("t", event(2 * 10**6))  # space is back: this must succeed
        usage = outbox.disk_usage()
        rows.append(("disk filled by another file", f"{stored} of 100 still stored, {failed} refused; "
                     "recovered once it was removed", usage["bytes"], usage["wal_bytes"]))
    finally:
        outbox.close()
        broker.stop()
        subprocess.run(["umount", str(disk)], check=True)

    print(f"\nOutbox on a {args.disk_mb} MB tmpfs (page 4 KiB; events of ~1 KB JSON)\n")
    print("| phase | what happened | outbox files, KiB | of which WAL, KiB |\n|---|---|---:|---:|")
    for phase, what, total, wal in rows:
        print(f"| {phase} | {what} | {total / 1024:.0f} | {wal / 1024:.0f} |")


if __name__ == "__main__":
    main()
