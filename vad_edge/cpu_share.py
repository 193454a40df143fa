"""How the agent and `vad-edge calibrate` share one box: thread budgets and priority.

Torch's default of one compute thread per core collapses when anything else runs on the box: its threads
spin at every barrier while one of them waits for a core (on 2 busy cores, scoring fell from 27 to 0.5
clips/s; docs/research/precision-and-threads.md). Each command therefore takes a budget of threads that leaves room for the
other, and calibration lowers its priority on every thread it has, not only the one that asked. A graph
runtime's threads sleep when they wait, so the agent gives OpenVINO every physical core (graph_threads).
"""

import os


def cores() -> int:
    """CPUs this process may run on (a cgroup or taskset limit counts, not the machine's total)."""
    return len(os.sched_getaffinity(0))


def physical_cores(sysfs: str = "/sys/devices/system/cpu") -> int:
    """The physical cores among the CPUs this process may run on: hyper-threads of one core count once (read
    from sysfs; every CPU counts as a core where the topology cannot be read)."""
    seen = set()
    for cpu in os.sched_getaffinity(0):
        try:
            with open(f"{sysfs}/cpu{cpu}/topology/physical_package_id") as package, \
                    open(f"{sysfs}/cpu{cpu}/topology/core_id") as core:
                seen.add((package.read().strip(), core.read().strip()))
        except OSError:
            seen.add(("cpu", str(cpu)))
    return max(1, len(seen))


def agent_threads(requested: int = 0) -> int:
    """The agent's budget: as requested, or one less than the cores (at least 1)."""
    return requested or max(1, cores() - 1)


def graph_threads(requested: int = 0) -> int:
    """The agent's budget for a graph runtime's threads (OpenVINO, ONNX Runtime): as requested, or every
    physical core (a hyper-thread adds little to convolutions, and both runtimes' own defaults take one thread
    per physical core). Their threads sleep while they wait instead of spinning at a barrier, so beside another job they
    slow down rather than collapse (two busy loops on 2 cores: OpenVINO 23 clips/s on 2 threads against 27 on
    1, ONNX Runtime 21 on 2 asleep against 14 on 1), and torch's own threads stay at agent_threads: the kernels before and
    after the graph are short, and a torch thread spinning after them would hold up the graph's second
    thread (docs/research/graph-threads.md)."""
    return requested or physical_cores()


def calibration_threads(requested: int = 0, beside_agent: bool = True) -> int:
    """Calibration's budget: as requested; else half the cores (at least 1) beside a running agent, and all
    of them when it has the box to itself (a technician waiting, nothing live to starve)."""
    return requested or (max(1, cores() // 2) if beside_agent else cores())


def agent_running(proc: str = "/proc") -> bool:
    """Whether a `vad-edge run` process (the agent, as its systemd unit starts it) is alive on this box."""
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            with open(f"{proc}/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue  # ended meanwhile, or not ours to read
        # `vad-edge run ...`, however started: the console script directly, or by its interpreter.
        if any(os.path.basename(a) == b"vad-edge" and b == b"run" for a, b in zip(argv, argv[1:])):
            return True
    return False


def use_threads(count: int) -> int:
    """Sets torch's (and so the kernels') compute threads; returns the count in force."""
    import torch  # here: `vad-edge info` reads the budgets without paying for torch's import

    torch.set_num_threads(count)
    return torch.get_num_threads()


def lower_priority(increment: int) -> int:
    """Raises the nice value of every thread of this process by `increment` (Linux keeps one per thread,
    and threads made later inherit it from their creator); returns the new nice value of this thread."""
    target = os.getpriority(os.PRIO_PROCESS, 0) + increment
    tasks = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else [str(os.getpid())]
    for tid in tasks:
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), max(target, os.getpriority(os.PRIO_PROCESS, int(tid))))
        except (ProcessLookupError, PermissionError):
            pass  # a thread that just ended; a priority we may not lower is left as it is
    return os.getpriority(os.PRIO_PROCESS, 0)
