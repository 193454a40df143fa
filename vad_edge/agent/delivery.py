"""Events on their way out: each is stored in the outbox in the order it happened (Delivery), then published
at QoS 1 and deleted from the outbox once the broker acknowledges it (EventSender, the PUBACK bookkeeping);
every (re)connect replays what is pending, in seq order.

While the state disk cannot be written (full, failing) events wait in memory, in order, and are stored
again on every pass of the agent's loop; beyond MAX_IN_MEMORY the oldest update goes first. At shutdown
what still cannot be stored is published straight from memory when the broker is connected (with `seq`
null: only the outbox hands out sequence numbers); what can be neither stored nor sent, the acknowledgements
the outbox could not record and the ends it could not store are kept in the spill file (spill.py) for the
next start, which stores them before anything newer. Only what cannot be kept there either is lost, counted
and logged by number and id. Nothing leaves this queue silently.
"""

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import paho.mqtt.client as paho

from vad_edge.agent.mqtt import MqttClient
from vad_edge.agent.outbox import Outbox, Pending, StorageError
from vad_edge.agent.events import anomaly_of
from vad_edge.agent.spill import Spill, SpillFile

log = logging.getLogger("vad_edge.agent")

MAX_IN_MEMORY = 1000  # events kept in memory while the outbox cannot be written


class EventSender:
    """Publishes stored events at QoS 1 and deletes each from the outbox once its PUBACK comes.

    Each event publish is tied to its own PUBACK by message id. paho's 16-bit ids wrap (every 65,535
    publishes, stats and retained state included), so an id means nothing beyond the publish it was given to:
    acks seen while no event publish is under way are never remembered, and a new connection forgets them."""

    def __init__(self, outbox: Outbox, mqtt: MqttClient):
        self.outbox = outbox
        self.mqtt = mqtt
        self._map_lock = threading.Lock()  # guards the four below; never held while calling paho
        self._inflight: dict[int, tuple[int, str]] = {}  # mid -> (seq, event_id) of a publish awaiting its PUBACK
        self._publishing = False  # an event publish is under way: its PUBACK may beat its mid to the map
        self._acked_early: set[int] = set()  # acks seen during that publish
        # Events the broker acknowledged that the outbox could not delete yet, seq -> event_id: never replayed.
        self._ack_later: dict[int, str] = {}
        self.storage_problem: str | None = None
        # Events stored before the first connect that no run has sent yet (the ends of events a killed run
        # left open): their first sending is not a replay.
        self.never_sent: set[str] = set()
        mqtt.on_new_connection.append(self._forget_inflight)
        mqtt.replays.append(self._replay_pending)
        mqtt.on_puback = self._on_puback

    def send(self, pending: Pending, replayed: bool = False) -> None:
        """Publishes a committed event now if connected; otherwise the next connect replays it."""
        with self.mqtt.lock:
            if self.mqtt.connected:
                self._publish_event(pending, replayed)

    def send_unstored(self, events: list[tuple[str, dict]], deadline: float) -> list[bool]:
        """Publishes (topic, event) pairs the outbox could not store (a failing disk at shutdown) and waits
        for their PUBACKs until `deadline` (monotonic); returns for each whether the broker acknowledged it."""
        with self.mqtt.lock:
            if not self.mqtt.connected:
                return [False] * len(events)
            sent = [self.mqtt.publish(topic, json.dumps({**event, "seq": None, "replayed": False}), qos=1)
                    for topic, event in events]
        for info in sent:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass  # not queued, or the connection dropped: it counts as not acknowledged
        return [info.is_published() for info in sent]

    def _replay_pending(self) -> None:
        """At a connect, with the client's lock held: every event still in the outbox, in seq order."""
        pending = self.outbox.pending()  # read outside the map lock: the network thread's PUBACKs need it
        with self._map_lock:
            pending = [item for item in pending if item.seq not in self._ack_later]
        if pending:
            log.info("replaying %d pending events", len(pending))
        for item in pending:
            event_id = item.event.get("event_id")
            self._publish_event(item, replayed=event_id not in self.never_sent)
            self.never_sent.discard(event_id)

    def _forget_inflight(self) -> None:
        with self._map_lock:
            self._inflight.clear()
            self._acked_early.clear()

    def _publish_event(self, pending: Pending, replayed: bool) -> None:
        """Called with the client's lock held: one event publish at a time."""
        payload = json.dumps({**pending.event, "replayed": replayed})
        with self._map_lock:
            self._publishing = True
        info = None
        try:
            info = self.mqtt.publish(pending.topic, payload, qos=1)
        finally:
            with self._map_lock:
                self._publishing = False
                sent = info is not None and info.rc == paho.MQTT_ERR_SUCCESS
                acked = sent and info.mid in self._acked_early  # the PUBACK beat us to the map
                self._acked_early.clear()
                if sent and not acked:
                    self._inflight[info.mid] = (pending.seq, pending.event["event_id"])
        if acked:
            self._ack(pending.seq, pending.event["event_id"])
        # Not sent: it stays in the outbox for the next connect.

    def _on_puback(self, mid: int) -> None:
        """paho's network thread (or, for QoS 0, the publishing one): a message was acknowledged."""
        with self._map_lock:
            event = self._inflight.pop(mid, None)
            if event is None and self._publishing:
                self._acked_early.add(mid)
        if event is not None:
            self._ack(*event)  # never raises

    def _ack(self, seq: int, event_id: str) -> bool:
        """Deletes an acknowledged event. On a storage failure it is remembered (not replayed) and retried
        (retry_acks); a stop keeps what is left in the spill file. False when it could not be deleted."""
        try:
            self.outbox.ack(seq, event_id)
        except StorageError as exc:
            if self.storage_problem is None:
                log.error("%s; retried", exc)
            self.storage_problem = str(exc)
            with self._map_lock:
                self._ack_later[seq] = event_id
            return False
        with self._map_lock:
            self._ack_later.pop(seq, None)
        self.storage_problem = None
        return True

    def acked_undeleted(self) -> list[tuple[int, str]]:
        """Events the broker acknowledged that the outbox could not delete yet (a full disk): (seq, event_id)."""
        with self._map_lock:
            return sorted(self._ack_later.items())

    def hold_acks(self, delivered: list[tuple[int, str]]) -> None:
        """Acknowledgements a stop kept outside the outbox: not replayed, deleted as soon as the disk lets."""
        with self._map_lock:
            self._ack_later.update(delivered)

    def retry_acks(self) -> None:
        """Called from the agent's loop: the deletions that failed, again, until one fails. Each stays
        remembered until it succeeds, so a replay at a connect meanwhile still passes it over."""
        with self._map_lock:
            waiting = sorted(self._ack_later.items())
        for seq, event_id in waiting:
            if not self._ack(seq, event_id):
                return


class Delivery:
    def __init__(self, outbox: Outbox, sender: EventSender, spill: SpillFile,
                 on_stored: Callable[[dict], None] | None = None):
        self.outbox = outbox
        self.sender = sender
        self.spill = spill
        self.on_stored = on_stored  # each event once it is in the outbox (the demo prints it)
        self.waiting: deque[tuple[str, dict]] = deque()  # (topic, event) not yet in the outbox, oldest first
        self.restoring: Spill | None = None  # what the last stop kept, while the outbox cannot take it yet
        self.problem: str | None = None  # why the outbox cannot be written, while it cannot
        self.lost = 0  # events dropped from memory, or never stored, sent nor kept by shutdown
        self._at_stop = Spill(spill.state_dir)  # what the stop could neither store nor have acknowledged

    def put(self, topic: str, event: dict) -> None:
        self.waiting.append((topic, event))

    def restore(self) -> set[str]:
        """At start: stores what the last stop kept in the spill file, before anything newer; while the disk
        cannot take it yet, its acknowledgements keep those events from being sent again and it is retried
        with every flush. Returns the anomalies it ends, which must not be ended again."""
        spill = self.spill.read()
        if spill is None:
            return set()
        if self.outbox.restored(spill):  # the last start stored it and died before removing the file
            self.spill.remove()
            return set()
        log.info("the last stop kept %s in %s", spill.summary(), self.spill.path)
        self.restoring = spill
        self.sender.hold_acks(spill.delivered)
        self.sender.never_sent.update(event["event_id"] for _, event in spill.unsent
                                      if event["event_id"] not in spill.published)
        self._store_restoring()
        return spill.ended_anomalies()

    def _store_restoring(self) -> bool:
        try:
            stored = self.outbox.restore(self.restoring)
        except StorageError as exc:
            self._cannot_store(exc)
            return False
        spill, self.restoring = self.restoring, None
        self.spill.remove()
        log.info("stored what the last stop kept: %d event(s) to send, acknowledged ones deleted", len(stored))
        for pending in stored:
            self._stored(pending, replayed=pending.event["event_id"] in spill.published)
        return True

    def flush(self) -> None:
        """Stores the waiting events in order and sends each; stops at the first that cannot be stored."""
        if self.restoring and not self._store_restoring():
            return  # what the last stop kept goes first
        while self.waiting:
            topic, event = self.waiting[0]
            try:
                pending = self.outbox.add(topic, event)
            except StorageError as exc:
                self._cannot_store(exc)
                return
            self.waiting.popleft()
            if self.problem is not None:
                log.warning("storage works again: storing the %d event(s) that waited", len(self.waiting) + 1)
                self.problem = None
            self._stored(pending)

    def _stored(self, pending: Pending, replayed: bool = False) -> None:
        self.sender.send(pending, replayed)
        if self.on_stored:
            self.on_stored(pending.event)

    def _cannot_store(self, exc: StorageError) -> None:
        if self.problem is None:
            log.error("%s; %d event(s) wait in memory and are retried", exc, len(self.waiting))
        self.problem = str(exc)
        self._bound()

    def _bound(self) -> None:
        """Beyond MAX_IN_MEMORY events the oldest update goes first (start and end events matter more),
        then the oldest event; every loss is logged and counted."""
        while len(self.waiting) > MAX_IN_MEMORY:
            drop = next((i for i, (_, e) in enumerate(self.waiting) if e["type"] == "update"), 0)
            _, lost = self.waiting[drop]
            del self.waiting[drop]
            self.lost += 1
            log.error("event %s lost: storage has failed for %d events", lost["event_id"], MAX_IN_MEMORY)

    def close(self, deadline: float) -> None:
        """At shutdown: stores what waits if storage works again, else publishes it straight and waits for
        the broker's acknowledgements until `deadline` (monotonic). What is left goes to the spill file with
        keep() once the last acknowledgements are in."""
        self.flush()
        held = (self.restoring.unsent if self.restoring else []) + list(self.waiting)
        self.waiting.clear()
        if not held:
            return
        acked = self.sender.send_unstored(held, deadline)
        self._at_stop.unsent = [item for item, ok in zip(held, acked) if not ok]
        self._at_stop.ended = [(event["camera"], event["event_id"]) for (_, event), ok in zip(held, acked)
                               if ok and event["type"] == "end"]
        if any(acked):
            log.warning("the outbox could not store the last events (%s); %d were sent from memory and acknowledged "
                        "by the broker, without a seq", self.problem, sum(acked))
        earlier = set(self.restoring.published) if self.restoring else set()
        self._at_stop.published = [event["event_id"] for _, event in self._at_stop.unsent
                                   if self.sender.mqtt.connected or event["event_id"] in earlier]

    def keep(self) -> Spill | None:
        """The very end of a stop: what the outbox could not take goes to the spill file for the next start;
        what cannot be kept there is lost, and said so by id. Returns what was kept, if anything."""
        spill = self._at_stop
        spill.delivered = self.sender.acked_undeleted()
        # The ends that went out while their camera's open record stayed in the outbox (it reads on a full disk)
        still_open = {anomaly_of(stale.event["event_id"]) for stale in self.outbox.open_events()}
        spill.ended = [(camera, end) for camera, end in spill.ended + (self.restoring.ended if self.restoring else [])
                       if anomaly_of(end) in still_open]
        if not spill:
            self.spill.remove()  # a spill this start could not store yet went out from memory in full
            return None
        try:
            self.spill.write(spill)
        except OSError as exc:
            self._cannot_keep(spill, exc)
            return None
        log.warning("kept for the next start in %s: %s (a restart of the agent finds them, a reboot of the box "
                    "does not)", self.spill.path, spill.summary())
        return spill

    def _cannot_keep(self, spill: Spill, exc: OSError) -> None:
        self.lost += len(spill.unsent)
        if spill.unsent:
            log.error("LOST %d event(s) at shutdown: the outbox could not store them (%s), the broker did not "
                      "acknowledge them and they could not be kept for the next start (%s): %s", len(spill.unsent),
                      self.problem, exc, ", ".join(e["event_id"] for _, e in spill.unsent))
        if spill.delivered or spill.ended:
            log.warning("could not keep %d acknowledgement(s) and %d end(s) sent from memory for the next start "
                        "(%s): it sends those events once more, and ends those events again", len(spill.delivered),
                        len(spill.ended), exc)

    def stats(self) -> dict:
        return {"ok": self.problem is None, "problem": self.problem, "events_in_memory": len(self.waiting),
                "events_lost": self.lost, "spill": self.spill.where()}
