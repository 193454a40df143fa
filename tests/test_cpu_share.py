"""The agent and calibration share the box: thread budgets, and a lower priority on every thread."""

import subprocess
import sys

import torch

from vad_edge import cpu_share


def test_thread_budgets_leave_room_for_the_other_job(monkeypatch):
    monkeypatch.setattr(cpu_share, "cores", lambda: 2)
    assert cpu_share.agent_threads() == 1 and cpu_share.calibration_threads() == 1
    monkeypatch.setattr(cpu_share, "cores", lambda: 8)
    assert cpu_share.agent_threads() == 7 and cpu_share.calibration_threads() == 4
    assert cpu_share.agent_threads(3) == 3  # configured
    monkeypatch.setattr(cpu_share, "physical_cores", lambda: 4)
    assert cpu_share.graph_threads() == 4 and cpu_share.graph_threads(3) == 3  # OpenVINO's: every physical core
    assert cpu_share.calibration_threads(beside_agent=False) == 8  # alone on the box: every core
    before = torch.get_num_threads()
    try:
        assert cpu_share.use_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_physical_cores_count_a_cores_hyper_threads_once(tmp_path, monkeypatch):
    """Four CPUs, two cores of two hyper-threads each; the process may run on three of them."""
    for cpu, (package, core) in enumerate([(0, 0), (0, 1), (0, 0), (0, 1)]):
        topology = tmp_path / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(f"{package}\n")
        (topology / "core_id").write_text(f"{core}\n")
    monkeypatch.setattr(cpu_share.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert cpu_share.physical_cores(str(tmp_path)) == 2
    monkeypatch.setattr(cpu_share.os, "sched_getaffinity", lambda pid: {0, 2})  # both threads of core 0
    assert cpu_share.physical_cores(str(tmp_path)) == 1
    monkeypatch.setattr(cpu_share.os, "sched_getaffinity", lambda pid: {0, 1, 5})  # cpu5's topology unreadable
    assert cpu_share.physical_cores(str(tmp_path)) == 3


def test_agent_running_finds_the_agent_however_it_was_started(tmp_path):
    def process(pid, *argv):
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")

    process("1", "/sbin/init")
    process("20", "/opt/vad-edge/venv/bin/python3", "/opt/vad-edge/venv/bin/vad-edge", "calibrate", "--camera", "run")
    (tmp_path / "self").mkdir()  # not a process directory
    assert not cpu_share.agent_running(str(tmp_path))
    process("30", "/opt/vad-edge/venv/bin/python3", "/opt/vad-edge/venv/bin/vad-edge", "run", "--config", "c.yaml")
    assert cpu_share.agent_running(str(tmp_path))


def test_lower_priority_reaches_threads_started_before_it():
    """os.nice() changes only the calling thread on Linux: threads already running (torch's pool, a reader)
    kept normal priority. Run in a child process: a test must not lower pytest's own priority."""
    script = """
import os, threading
from vad_edge.cpu_share import lower_priority
started, done = threading.Event(), threading.Event()
worker = threading.Thread(target=lambda: (started.set(), done.wait()))
worker.start(); started.wait()
base = os.getpriority(os.PRIO_PROCESS, 0)
lower_priority(7)
later = threading.Thread(target=done.wait); later.start()
nices = [int(open(f"/proc/self/task/{t}/stat").read().rsplit(")", 1)[1].split()[16]) for t in os.listdir("/proc/self/task")]
done.set(); worker.join(); later.join()
print(base, sorted(set(nices)), len(nices))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split(maxsplit=1)
    base, rest = int(out[0]), out[1]
    assert base <= 12, "run from a process that was already lowered"
    assert rest.startswith(f"[{base + 7}]")  # every thread, the early one and the later one included
    assert int(rest.split()[-1]) >= 3
