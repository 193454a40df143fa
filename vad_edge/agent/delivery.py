"""Events on their way out: each is stored in the outbox in the order it happened, then handed to the
publisher.

While the state disk cannot be written (full, failing) events wait in memory, in order, and are stored
again on every pass of the agent's loop; beyond MAX_IN_MEMORY the oldest update goes first. At shutdown
what still cannot be stored is published straight from memory when the broker is connected (with `seq`
null: only the outbox hands out sequence numbers), and whatever can be neither stored nor sent is counted
and logged as lost, by number and id. Nothing leaves this queue silently.
"""

import logging
from collections import deque
from collections.abc import Callable

from vad_edge.agent.mqtt import Publisher
from vad_edge.agent.outbox import Outbox, StorageError

log = logging.getLogger("vad_edge.agent")

MAX_IN_MEMORY = 1000  # events kept in memory while the outbox cannot be written


class Delivery:
    def __init__(self, outbox: Outbox, publisher: Publisher, on_stored: Callable[[dict], None] | None = None):
        self.outbox = outbox
        self.publisher = publisher
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
            self.publisher.send(pending)
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
        unacknowledged = self.publisher.send_unstored(list(self.waiting), deadline)
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
