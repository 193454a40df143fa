"""Events on their way out: each is stored in the outbox in the order it happened (Delivery), then published
at QoS 1 and deleted from the outbox once the broker acknowledges it (EventSender, the PUBACK bookkeeping);
every (re)connect replays what is pending, in seq order.

While the state disk cannot be written (full, failing) events wait in memory, in order, and are stored
again on every pass of the agent's loop; beyond MAX_IN_MEMORY the oldest update goes first. At shutdown
what still cannot be stored is published straight from memory when the broker is connected (with `seq`
null: only the outbox hands out sequence numbers), and whatever can be neither stored nor sent is counted
and logged as lost, by number and id. Nothing leaves this queue silently.
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
        self._inflight: dict[int, int] = {}  # mid -> seq of an event publish awaiting its PUBACK
        self._publishing = False  # an event publish is under way: its PUBACK may beat its mid to the map
        self._acked_early: set[int] = set()  # acks seen during that publish
        self._ack_later: set[int] = set()  # seqs acknowledged by the broker that the outbox could not delete yet
        self.storage_problem: str | None = None
        # Events stored before the first connect that no run has sent yet (the ends of events a killed run
        # left open): their first sending is not a replay.
        self.never_sent: set[str] = set()
        mqtt.on_new_connection.append(self._forget_inflight)
        mqtt.replays.append(self._replay_pending)
        mqtt.on_puback = self._on_puback

    def send(self, pending: Pending) -> None:
        """Publishes a committed event now if connected; otherwise the next connect replays it."""
        with self.mqtt.lock:
            if self.mqtt.connected:
                self._publish_event(pending, replayed=False)

    def send_unstored(self, events: list[tuple[str, dict]], deadline: float) -> list[tuple[str, dict]]:
        """Publishes (topic, event) pairs the outbox could not store (a failing disk at shutdown) and waits
        for their PUBACKs until `deadline` (monotonic); returns those not acknowledged, in order."""
        with self.mqtt.lock:
            if not self.mqtt.connected:
                return events
            sent = [self.mqtt.publish(topic, json.dumps({**event, "seq": None, "replayed": False}), qos=1)
                    for topic, event in events]
        for info in sent:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass  # not queued, or the connection dropped: it counts as not acknowledged
        return [item for item, info in zip(events, sent) if not info.is_published()]

    def _replay_pending(self) -> None:
        """At a connect, with the client's lock held: every event still in the outbox, in seq order."""
        pending = self.outbox.pending()
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
                    self._inflight[info.mid] = pending.seq
        if acked:
            self._ack(pending.seq)
        # Not sent: it stays in the outbox for the next connect.

    def _on_puback(self, mid: int) -> None:
        """paho's network thread (or, for QoS 0, the publishing one): a message was acknowledged."""
        with self._map_lock:
            seq = self._inflight.pop(mid, None)
            if seq is None and self._publishing:
                self._acked_early.add(mid)
        if seq is not None:
            self._ack(seq)  # never raises

    def _ack(self, seq: int) -> None:
        """Deletes an acknowledged event. On a storage failure the seq is kept and retried (retry_acks); were
        the agent to die first, the event is sent once more on the next start (subscribers dedupe)."""
        try:
            self.outbox.ack(seq)
        except StorageError as exc:
            if self.storage_problem is None:
                log.error("%s; retried", exc)
            self.storage_problem = str(exc)
            with self._map_lock:
                self._ack_later.add(seq)
            return
        self.storage_problem = None

    def acked_undeleted(self) -> int:
        """Events the broker acknowledged that the outbox could not delete yet (a full disk)."""
        with self._map_lock:
            return len(self._ack_later)

    def retry_acks(self) -> None:
        """Called from the agent's loop: the deletions that failed, again."""
        with self._map_lock:
            waiting, self._ack_later = sorted(self._ack_later), set()
        for seq in waiting:
            self._ack(seq)


class Delivery:
    def __init__(self, outbox: Outbox, sender: EventSender, on_stored: Callable[[dict], None] | None = None):
        self.outbox = outbox
        self.sender = sender
        self.on_stored = on_stored  # each event once it is in the outbox (the demo prints it)
        self.waiting: deque[tuple[str, dict]] = deque()  # (topic, event) not yet in the outbox, oldest first
        self.problem: str | None = None  # why the outbox cannot be written, while it cannot
        self.lost = 0  # events dropped from memory, or never stored nor sent by shutdown

    def put(self, topic: str, event: dict) -> None:
        self.waiting.append((topic, event))

    def flush(self) -> None:
        """Stores the waiting events in order and sends each; stops at the first that cannot be stored."""
        while self.waiting:
            topic, event = self.waiting[0]
            try:
                pending = self.outbox.add(topic, event)
            except StorageError as exc:
                if self.problem is None:
                    log.error("%s; %d event(s) wait in memory and are retried", exc, len(self.waiting))
                self.problem = str(exc)
                self._bound()
                return
            self.waiting.popleft()
            if self.problem is not None:
                log.warning("storage works again: storing the %d event(s) that waited", len(self.waiting) + 1)
                self.problem = None
            self.sender.send(pending)
            if self.on_stored:
                self.on_stored(pending.event)

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
        the broker's acknowledgements until `deadline` (monotonic); what is left is lost, and said so."""
        self.flush()
        if not self.waiting:
            return
        unacknowledged = self.sender.send_unstored(list(self.waiting), deadline)
        self.lost += len(unacknowledged)
        self.waiting.clear()
        if unacknowledged:
            log.error("LOST %d event(s) at shutdown: the outbox could not store them (%s) and the broker did "
                      "not acknowledge them: %s", len(unacknowledged), self.problem,
                      ", ".join(e["event_id"] for _, e in unacknowledged))
        else:
            log.warning("the outbox could not store the last events (%s); they were sent from memory and "
                        "acknowledged by the broker, without a seq", self.problem)

    def stats(self) -> dict:
        return {"ok": self.problem is None, "problem": self.problem, "events_in_memory": len(self.waiting),
                "events_lost": self.lost}
