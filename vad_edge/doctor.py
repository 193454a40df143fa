"""`vad-edge doctor`: is this box ready? Build, disk, clock, broker, cameras, then kernels and models.

The checks that need no torch come first and are printed as they finish, so the answer starts at once;
without a device config the box itself is still checked (build, kernels, disk, clock).
"""

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from vad_edge.config import Config

OK, WARN, FAIL = "ok", "warn", "FAIL"
DEFAULT_CONFIG = Path("/etc/vad-edge/config.yaml")
DEFAULT_STATE_DIR: Path = Config.model_fields["state_dir"].default
Row = tuple[str, str, str]


def check_build() -> list[Row]:
    import vad_edge

    info = vad_edge.build_info()
    archs = ",".join(info["cuda_archs"]) or "none"
    return [("build", OK, f"vad-edge {info['version']}, torch {info['torch']}, OpenMP {info['openmp']}, "
                          f"CUDA kernels {info['cuda']} (architectures {archs})")]


def check_kernels(config: Config | None) -> list[Row]:
    import torch

    from vad_edge import ops
    from vad_edge.cpu_share import agent_threads, cores, graph_threads
    from vad_edge.runtime.hardware import choose_placement, pick_device

    info = ops.backend()
    requested = config.model.threads if config else 0
    model = config.model if config else Config.model_fields["model"].default
    rows = [("threads", OK, f"the agent scores with {agent_threads(requested)} of {cores()} cores in torch, "
                            f"{graph_threads(requested)} in OpenVINO or ONNX Runtime (model.threads); "
                            f"vad-edge calibrate takes its own share at lower priority")]
    try:
        runtime, scoring = choose_placement(model.precision, model.runtime, pick_device(model.device).type)
        rows.append(("precision", OK, f"clips are scored in {scoring.name} by {runtime.name} ({runtime.reason}; "
                                      f"{scoring.reason}; model.precision, model.runtime)"))
    except ValueError as exc:
        rows.append(("precision", FAIL, str(exc)))
    z, centers = torch.randn(1, 16, 4, 4), torch.randn(5, 16)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        try:
            got = ops.cluster_distance(z.to(device), centers.to(device))[0].cpu()
            want = ops.reference.cluster_distance(z, centers)[0]
            good = torch.allclose(got, want, atol=1e-4)
            rows.append((f"kernels on {device}", OK if good else FAIL, "match the reference" if good else "WRONG results"))
        except Exception as exc:  # report, never crash the doctor
            rows.append((f"kernels on {device}", FAIL, str(exc)))
    if info["cuda_driver_problem"]:
        rows.append(("GPU", FAIL, info["cuda_driver_problem"]))
    elif not torch.cuda.is_available():
        rows.append(("GPU", WARN, "no CUDA device visible to torch: scoring runs on the CPU"))
    elif not info["cuda"]:
        rows.append(("GPU", WARN, f"{torch.cuda.get_device_name()} present but the kernels were built without CUDA"))
    return rows


def check_models(config: Config) -> list[Row]:
    from vad_edge.runtime.bundle import camera_bundle_path, load_bundle
    from vad_edge.runtime.hardware import pick_device

    rows = []
    for cam in config.cameras:
        try:
            bundle = load_bundle(camera_bundle_path(config, cam), pick_device(config.model.device),
                                 config.model.precision, config.model.runtime)
            kind = "calibrated " + bundle.calibration["created"] if bundle.calibration["id"] else "not calibrated"
            rows.append((f"model {cam.name}", OK if bundle.calibration["id"] else WARN,
                         f"{bundle.path.name}: {bundle.model_info['name']} at {bundle.fps:g} fps, {kind}"))
            if mismatch := bundle.precision_mismatch():
                rows.append((f"model {cam.name}", WARN, mismatch))
        except ValueError as exc:
            rows.append((f"model {cam.name}", FAIL, str(exc)))
    return rows


def check_cameras(config: Config, timeout: float = 10.0) -> list[Row]:
    from vad_edge.data.sources import mask_password, probe

    rows = []
    for cam in config.cameras:
        started = time.monotonic()
        problem = probe(cam.source)
        took = time.monotonic() - started
        if problem:
            rows.append((f"camera {cam.name}", FAIL, problem))
        else:
            rows.append((f"camera {cam.name}", OK if took < timeout else FAIL,
                         f"{mask_password(cam.source)}: a frame in {took:.1f} s"))
    return rows


def check_broker(config: Config) -> list[Row]:
    from vad_edge.agent.mqtt import make_client

    m = config.mqtt
    try:
        with socket.create_connection((m.host, m.port), timeout=5):
            pass
    except OSError as exc:
        return [("broker", FAIL, f"{m.host}:{m.port} unreachable ({exc.strerror or exc})")]
    client = make_client(config)
    result = {}
    client.on_connect = lambda c, u, f, rc, p=None: result.setdefault("rc", rc)
    try:
        client.connect(m.host, m.port, 10)
        client.loop_start()
        deadline = time.monotonic() + 10
        while "rc" not in result and time.monotonic() < deadline:
            time.sleep(0.05)
    except (OSError, ValueError) as exc:
        return [("broker", FAIL, f"{m.host}:{m.port}: {exc}")]
    finally:
        client.loop_stop()
        client.disconnect()
    rc = result.get("rc")
    if rc is None:
        return [("broker", FAIL, f"{m.host}:{m.port}: no MQTT answer in 10 s")]
    good = not rc.is_failure
    return [("broker", OK if good else FAIL, f"{m.host}:{m.port} MQTT {m.protocol}: {rc}")]


def check_disk(state_dir: Path, minimum_gb: float = 1.0) -> list[Row]:
    path = state_dir
    while not path.exists():  # not created yet (before the first run): the disk it will be on
        path = path.parent
    free = shutil.disk_usage(path).free / 2**30
    return [("disk", OK if free >= minimum_gb else FAIL, f"{free:.1f} GiB free at {path}")]


def check_clock() -> list[Row]:
    try:
        synced = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"], capture_output=True,
                                text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return [("clock", WARN, "cannot ask timedatectl; event times need a synchronised clock")]
    if synced == "yes":
        return [("clock", OK, "NTP synchronised")]
    return [("clock", WARN, "not NTP-synchronised: event times may be off (timedatectl set-ntp true)")]


def run_doctor(config: Config | None, report: Callable[[Row], None], config_note: str = "") -> bool:
    """Runs every check, the ones without torch first, reporting each row as it comes; True if none failed."""
    checks: list[Callable[[], list[Row]]] = [check_build]
    if config is None:
        checks += [lambda: [("config", WARN, config_note)], lambda: check_disk(DEFAULT_STATE_DIR)]
    else:
        checks += [lambda: check_disk(config.state_dir), lambda: check_broker(config), lambda: check_cameras(config)]
    checks += [check_clock, lambda: check_kernels(config)]
    if config is not None:
        checks.append(lambda: check_models(config))
    healthy = True
    for check in checks:
        for row in check():
            report(row)
            healthy = healthy and row[1] != FAIL
    return healthy
