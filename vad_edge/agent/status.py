"""What the agent says about itself: the stats it publishes (and /metrics' gauges, brought up to date with
them) and /healthz."""

import time
from typing import TYPE_CHECKING

import torch

import vad_edge
from vad_edge import ops

if TYPE_CHECKING:
    from vad_edge.agent.runner import Agent


def stats(agent: "Agent") -> dict:
    """The stats message: versions, kernels, outbox, storage, broker, and per camera its rate, latency,
    scores and what it scores with."""
    cameras = {}
    for name, s in agent.cameras.items():
        fps = (len(s.times) - 1) / (s.times[-1] - s.times[0]) if len(s.times) > 1 and s.times[-1] > s.times[0] else 0.0
        lat = sorted(s.latencies)
        reader = agent.readers[name]
        cameras[name] = {
            "status": s.status, "detect": s.detect, "model_fps": s.bundle.fps, "scored_fps": round(fps, 2),
            "frames": s.frames, "clips_skipped": s.inbox.skipped, "window_restarts": reader.window_restarts,
            "latency_ms": {"p50": round(1e3 * lat[len(lat) // 2], 1), "p95": round(1e3 * lat[int(len(lat) * 0.95)], 1)}
            if lat else None,
            "score": s.last_score, "raw_score": s.last_raw, "threshold": s.threshold,
            "above_normal_p99": round(s.above_normal / s.with_bundle, 4) if s.with_bundle else None,
            "runtime": s.bundle.scorer.runtime, "precision": s.bundle.scorer.precision.name,
            "fitted_precision": s.bundle.fitted_precision,
            "anomaly": s.tracker.active is not None,
            "tamper": s.tampered, "clips_tampered": s.withheld,
            **schedule(s),
        }
    for name, problem in agent.unusable.items():
        cameras[name] = {"status": "offline", "problem": problem}
    outbox, metrics = agent.outbox, agent.metrics
    depth, disk = outbox.depth(), outbox.disk_usage()
    metrics.outbox_depth.set(depth)
    metrics.outbox_dropped.set(outbox.dropped())
    metrics.outbox_bytes.set(disk["bytes"])
    metrics.events_lost.set(agent.delivery.lost)
    metrics.mqtt_connected.set(1 if agent.mqtt.connected else 0)
    kept, clip_bytes = agent.clip_store.usage()
    clips = {"kept": kept, "bytes": clip_bytes, "removed_for_budget": agent.clip_store.removed,
             "failed": agent.recorder.failed, "waiting": agent.recorder.waiting()}
    metrics.clips_kept.set(kept)
    metrics.clips_bytes.set(clip_bytes)
    metrics.clips_removed.set(agent.clip_store.removed)
    metrics.clips_failed.set(agent.recorder.failed)
    return {
        "device_id": agent.config.device_id, "uptime_s": round(time.monotonic() - agent.started, 1),
        "versions": {"vad_edge": vad_edge.__version__, "torch": torch.__version__},
        "kernels": {"cuda": ops.backend()["cuda"], "device": str(agent.device), "threads": agent.threads,
                    "graph_threads": agent.graph_threads,
                    "precision": agent.precision.name, "precision_why": agent.precision.reason,
                    "runtime": agent.runtime.name, "runtime_why": agent.runtime.reason},
        "outbox": {"depth": depth, "dropped": outbox.dropped(), **disk},
        "storage": agent.delivery.stats(),
        "clips": clips,
        "mqtt": {"connected": agent.mqtt.connected, "connects": agent.mqtt.connects},
        "cameras": cameras,
    }


def schedule(state) -> dict:
    """A camera's schedule for people: the window in force ("mon-fri 07:00-19:00, detect off"; None outside
    every window) and when the next edge comes (ISO 8601 in the box's zone; None without a schedule)."""
    if state.schedule is None or state.slot is None:
        return {"schedule": None, "schedule_next_edge": None}
    return {"schedule": state.schedule.describe(state.slot),
            "schedule_next_edge": state.schedule.local_iso(state.slot.next_edge)}


def health(agent: "Agent") -> dict:
    """/healthz. Healthy: the loop runs, the outbox can be written, and every enabled camera can score
    (it may be offline for a reason outside the box, a camera that is down). The broker may be away:
    events then wait in the outbox, which is what it is for."""
    stalled = time.monotonic() - agent.last_loop > 10
    storage_problem = agent.delivery.problem or agent.sender.storage_problem
    problems = [f"camera {cam.name} {agent.unusable[cam.name]}" for cam in agent.config.cameras
                if cam.name in agent.unusable and agent.settings.detect(cam)]
    problems += ["the scoring loop has stalled"] if stalled else []
    problems += [f"storage: {storage_problem}"] if storage_problem else []
    problems += ["stopping"] if agent.stop_event.is_set() else []
    warnings = [warning] if (warning := agent.outbox.disk_warning()) else []
    return {"healthy": not problems, "problems": problems, "warnings": warnings, "loop_stalled": stalled,
            "storage_problem": storage_problem,
            "mqtt_connected": agent.mqtt.connected, "outbox_depth": agent.outbox.depth(),
            "cameras": {**{name: s.status for name, s in agent.cameras.items()},
                        **{name: "offline" for name in agent.unusable}},
            "schedules": {name: schedule(s) for name, s in agent.cameras.items()},
            "tamper": {name: s.tampered for name, s in agent.cameras.items() if s.tamper is not None}}
