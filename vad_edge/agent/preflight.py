"""Before the agent starts: what the configuration points at must exist and be usable (the state folder,
TLS files, the compute device). Every problem is named by its key, in one ConfigError, instead of a
traceback from deep inside SQLite, ssl or torch. Risky but allowed choices (a readable secret, health
served beyond the box) are warned about."""

import logging
import os
import stat
from pathlib import Path

import torch

from vad_edge.config import LOOPBACK, Config, ConfigError

log = logging.getLogger("vad_edge.preflight")

def _state_dir(path: Path) -> list[str]:
    """The folder exists, is the agent's alone (outbox, settings, calibration bundles: mode 0700) and usable."""
    if path.exists() and not path.is_dir():
        return [f"state_dir: {path} exists and is not a folder"]
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.stat().st_uid == os.geteuid():  # one an older build made 0755 (the unit sets it under systemd)
            path.chmod(0o700)
    except OSError as exc:
        return [f"state_dir: cannot create {path} ({exc.strerror})"]
    return []


def _tls_files(config: Config) -> list[str]:
    tls = config.mqtt.tls
    if not tls.enabled:
        return []
    return [f"mqtt.tls.{key}: {path} does not exist" for key, path in
            (("ca_file", tls.ca_file), ("cert_file", tls.cert_file), ("key_file", tls.key_file))
            if path is not None and not path.is_file()]


def _device(name: str) -> list[str]:
    if name in ("auto", "cpu"):
        return []
    try:
        device = torch.device(name)
    except RuntimeError:
        return [f"model.device: {name!r} is not a device (auto, cpu, cuda or cuda:N)"]
    if device.type != "cuda":
        return [f"model.device: {name!r}: expected auto, cpu, cuda or cuda:N"]
    if not torch.cuda.is_available():
        return [f"model.device: {name}, but torch sees no CUDA device on this box (use auto or cpu)"]
    if device.index is not None and device.index >= torch.cuda.device_count():
        return [f"model.device: {name}, but this box has {torch.cuda.device_count()} CUDA device(s)"]
    return []


def _warnings(config: Config) -> None:
    secret = config.mqtt.password_file
    if secret is not None and secret.is_file() and secret.stat().st_mode & stat.S_IRWXO:
        log.warning("mqtt.password_file %s can be read by every user (mode %o): chmod o-rwx it", secret,
                    stat.S_IMODE(secret.stat().st_mode))
    if config.health.port and config.health.host not in LOOPBACK:
        log.warning("health.host %s: /healthz and /metrics are served beyond this box (allow_remote)",
                    config.health.host)


def check(config: Config) -> None:
    problems = _state_dir(config.state_dir) + _tls_files(config) + _device(config.model.device)
    if problems:
        raise ConfigError("\n".join(problems))
    _warnings(config)
