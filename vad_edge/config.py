"""The device configuration: one YAML file, validated by pydantic.

Unknown keys are errors, and every error names the key path and its line in the file. Secrets (the MQTT
password) come from an environment variable or a file and are never logged.
"""

import os
import socket
import zoneinfo
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration that cannot be used; the message lists each problem as `file:line: key.path: what`."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLS(Strict):
    enabled: bool = Field(False, description="connect with TLS")
    ca_file: Path | None = Field(None, description="CA bundle to trust; the system CAs when empty")
    cert_file: Path | None = Field(None, description="client certificate (PEM), for brokers that require one")
    key_file: Path | None = Field(None, description="key of the client certificate (PEM)")

    @model_validator(mode="after")
    def _cert_and_key(self):
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MQTT(Strict):
    host: str = Field("localhost", description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="broker port (8883 is usual with TLS)")
    protocol: Literal["3.1.1", "5"] = Field("3.1.1", description="MQTT protocol version")
    client_id: str | None = Field(None, description="client id; default vad-edge-<device_id>")
    keepalive: int = Field(30, ge=5, le=3600, description="keepalive in seconds")
    prefix: str = Field("vad-edge", pattern=r"^[^#+/][^#+]*$", description="topic prefix")
    tls: TLS = TLS()
    username: str | None = Field(None, description="user name for password authentication")
    password_env: str | None = Field(None, description="environment variable that holds the password")
    password_file: Path | None = Field(None, description="file that holds the password (first line)")
    reconnect_max_s: float = Field(30.0, gt=0, description="longest wait between reconnection attempts")

    @model_validator(mode="after")
    def _one_password_source(self):
        if self.password_env and self.password_file:
            raise ValueError("set password_env or password_file, not both")
        return self

    def password(self) -> SecretStr | None:
        """The password from its environment variable or file; a missing source is a ConfigError."""
        if self.password_env:
            if self.password_env not in os.environ:
                raise ConfigError(f"mqtt.password_env: environment variable {self.password_env} is not set")
            return SecretStr(os.environ[self.password_env])
        if self.password_file:
            try:
                return SecretStr(self.password_file.read_text().splitlines()[0] if self.password_file.stat().st_size else "")
            except OSError as exc:
                raise ConfigError(f"mqtt.password_file: cannot read {self.password_file} ({exc.strerror})") from exc
        return None


class Clip(Strict):
    enabled: bool = Field(True, description=(
        "cut a clip of each event: from an RTSP camera's own H.264/H.265 stream, not re-encoded; for other "
        "sources (files, V4L2), encoded from the frames the agent reads"))
    pre_roll: float = Field(5.0, ge=0, le=60, description="seconds before the event's first frame above the threshold")
    post_roll: float = Field(3.0, ge=0, le=60, description="seconds after its last frame above the threshold")


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Zone(Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_-]+$", description="the zone's name, given in the events it touches")
    points: list[tuple[float, float]] = Field(..., description=(
        "the polygon's corners as [x, y] in frame coordinates, 0..1 from the top left (vad-edge zones draws "
        "the grid); at least 3, not crossing itself"))
    ignore: bool = Field(False, description=(
        "nothing inside counts toward the score: a road, a swaying tree, a screen the site does not care about"))
    threshold_multiplier: float = Field(1.0, ge=0.05, le=20, description=(
        "multiplies the threshold for what happens inside: 0.5 makes the zone twice as sensitive (a fence line)"))

    @field_validator("points")
    @classmethod
    def _simple_polygon(cls, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if len(points) < 3:
            raise ValueError(f"a zone needs at least 3 points, got {len(points)}")
        outside = [i for i, (x, y) in enumerate(points) if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0)]
        if outside:
            raise ValueError(f"point {outside[0]} {list(points[outside[0]])} is outside the frame (x and y from 0 to 1)")
        crossing = _self_intersection(points)
        if crossing:
            raise ValueError(f"the polygon crosses itself: edges {crossing[0]} and {crossing[1]}")
        if abs(_area(points)) < 1e-6:
            raise ValueError("the polygon has no area")
        return points

    @model_validator(mode="after")
    def _ignore_has_no_multiplier(self):
        if self.ignore and self.threshold_multiplier != 1.0:
            raise ValueError("an ignore zone has no threshold_multiplier: nothing inside counts")
        return self


def _area(points: list[tuple[float, float]]) -> float:
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]))


def _self_intersection(points: list[tuple[float, float]]) -> tuple[int, int] | None:
    """The first two non-adjacent edges that cross or touch (edge i runs from point i to point i+1)."""
    def orient(a, b, c):
        value = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        return 0 if abs(value) < 1e-12 else (1 if value > 0 else -1)

    def on_segment(a, b, c):  # c collinear with a-b: is it between them?
        return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])

    edges = [(points[i], points[(i + 1) % len(points)]) for i in range(len(points))]
    for i in range(len(edges)):
        for j in range(i + 1, len(edges)):
            if j == i + 1 or (i == 0 and j == len(edges) - 1):
                continue  # neighbours share a corner
            (a, b), (c, d) = edges[i], edges[j]
            o1, o2, o3, o4 = orient(a, b, c), orient(a, b, d), orient(c, d, a), orient(c, d, b)
            if (o1 != o2 and o3 != o4) or (o1 == 0 and on_segment(a, b, c)) or (o2 == 0 and on_segment(a, b, d)) \
                    or (o3 == 0 and on_segment(c, d, a)) or (o4 == 0 and on_segment(c, d, b)):
                return i, j
    return None


class Window(Strict):
    days: list[Literal[DAYS]] = Field(list(DAYS), min_length=1, description="the days it starts on (mon ... sun); default every day")
    start: str = Field(..., pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM in the box's time zone")
    end: str = Field(..., pattern=r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$", description=(
        "HH:MM; at or before start: the next day (22:00 to 06:00 is a night)"))
    detect: bool = Field(True, description="score the camera in this window")
    threshold_multiplier: float | None = Field(None, ge=0.05, le=20, description=(
        "the threshold multiplier in this window; default the camera's"))


WEEK = 7 * 1440  # minutes


def _week_spans(window: Window) -> list[tuple[int, int]]:
    """The window's minutes of the week, [from, to) from Monday 00:00; one past Sunday 24:00 wraps to Monday."""
    start = int(window.start[:2]) * 60 + int(window.start[3:])
    end = int(window.end[:2]) * 60 + int(window.end[3:])
    length = end - start if end > start else end + 1440 - start
    spans = []
    for day in sorted({DAYS.index(d) for d in window.days}):
        begins = day * 1440 + start
        spans += [(begins, begins + length)] if begins + length <= WEEK else [(begins, WEEK), (0, begins + length - WEEK)]
    return spans


def _minute_of_week(minute: int, end: bool = False) -> tuple[str, str]:
    day, rest = divmod(minute, 1440)
    if end and rest == 0 and day > 0:  # an end on midnight is the day before's 24:00
        day, rest = day - 1, 1440
    return DAYS[day], f"{rest // 60:02d}:{rest % 60:02d}"


def _schedule_overlap(windows: list[Window]) -> tuple[int, int, str] | None:
    """The first two windows (by index) that share a minute of the week, and where: "tue 05:00-06:00"."""
    spans = [_week_spans(w) for w in windows]
    for i in range(len(windows)):
        for j in range(i + 1, len(windows)):
            shared = sorted((max(a0, b0), min(a1, b1)) for a0, a1 in spans[i] for b0, b1 in spans[j]
                            if max(a0, b0) < min(a1, b1))
            if shared:
                (from_day, from_time), (to_day, to_time) = (_minute_of_week(shared[0][0]),
                                                            _minute_of_week(shared[0][1], end=True))
                to = to_time if to_day == from_day else f"{to_day} {to_time}"
                return i, j, f"{from_day} {from_time}-{to}"
    return None


class Tamper(Strict):
    enabled: bool = Field(True, description=(
        "say when the camera itself is tampered with: covered or blinded, turned or moved, out of focus, frozen "
        "(events of type tamper, never an anomaly)"))
    after: float = Field(3.0, ge=0.5, le=60, description="seconds a tamper condition must last before it is said")


class Camera(Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_-]+$", description="camera name, used in topics")
    source: str = Field(..., description="video file, RTSP/HTTP URL, V4L2 device (/dev/video0) or device index")
    loop: bool = Field(False, description="video files: start again at the end")
    realtime: bool = Field(True, description="video files: play at their own frame rate, like a camera")
    fps: float | None = Field(None, gt=0, le=120, description=(
        "frames per second the clips are sampled at: always the model's own frame rate (10 for the shipped "
        "model), whatever the camera delivers; another value is refused. Leave it out"))
    bundle: Path | None = Field(None, description="calibration bundle or checkpoint; default: model.checkpoint")
    threshold_multiplier: float = Field(1.0, ge=0.05, le=20, description=(
        "multiplies the calibrated threshold (0.05 to 20; threshold/set changes it live)"))
    min_event_frames: int = Field(3, ge=1, description="consecutive frames above threshold to start an event")
    cooldown: float = Field(3.0, ge=0, description="seconds below threshold before an event ends")
    offline_after: float = Field(5.0, gt=0, description=(
        "seconds without a frame before the camera is offline; a stream also gets this long to connect and "
        "to deliver each frame before the agent reconnects"))
    enabled: bool = Field(True, description="score this camera (detect/set can change it live)")
    clip: Clip = Clip()
    zones: list[Zone] = Field([], description=(
        "where to look: ignore zones count for nothing, other zones multiply the threshold inside"))
    schedule: list[Window] = Field([], description=(
        "weekly windows that set detect and the threshold multiplier; outside them the camera's own settings. "
        "A detect/set or threshold/set holds until the next window edge"))
    tamper: Tamper = Tamper()

    @field_validator("zones")
    @classmethod
    def _unique_zones(cls, zones: list[Zone]) -> list[Zone]:
        names = [z.name for z in zones]
        if len(set(names)) != len(names):
            raise ValueError(f"zone names must be unique: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
        return zones

    @field_validator("schedule")
    @classmethod
    def _windows_apart(cls, schedule: list[Window]) -> list[Window]:
        overlap = _schedule_overlap(schedule)
        if overlap:
            i, j, where = overlap
            raise ValueError(f"schedule windows {i} and {j} overlap on {where}")
        return schedule


class Model(Strict):
    checkpoint: Path | None = Field(None, description="default model for cameras without a bundle; shipped lite")
    device: str = Field("auto", description="auto, cpu or cuda[:N]")
    threads: int = Field(0, ge=0, le=256, description=(
        "CPU threads for scoring; 0: for torch one less than the cores (at least 1), leaving room for camera "
        "decoding and a calibration beside the agent; for OpenVINO and ONNX Runtime every physical core (their threads "
        "sleep while they wait, so they leave room without a core kept back)"))
    precision: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description=(
        "the format clips are scored in; auto: bfloat16 on CPUs that run it natively (AMX, AVX-512 BF16, ARM "
        "BF16), float16 on CUDA, float32 elsewhere. A bundle with no fit in this precision is scored with its "
        "float32 fit, with a warning: recalibrate on the box"))
    runtime: Literal["auto", "torch", "onnxruntime", "openvino"] = Field("auto", description=(
        "what runs the networks: torch, or their ONNX export in ONNX Runtime (float32) or OpenVINO (bfloat16 on "
        "CPUs that run it natively, else float32), on the CPU, checked against torch on the bundled sample at "
        "load; auto: OpenVINO on an x86 CPU where it is installed (pip install 'vad-edge[export]'), torch "
        "elsewhere. The kernels score after the graph"))


LOOPBACK = ("127.0.0.1", "::1", "localhost")


class Health(Strict):
    host: str = Field("127.0.0.1", description="address of the /healthz and /metrics server")
    port: int = Field(9108, ge=0, le=65535, description="its port; 0 disables it")
    allow_remote: bool = Field(False, description=(
        "serve /healthz and /metrics beyond this box (a host other than loopback): they tell anyone who can "
        "reach the port the cameras, their state and the outbox depth"))
    public_url: str | None = Field(None, pattern=r"^https?://[^/\s]+/?$", description=(
        "where other machines reach this server (e.g. http://box.lan:9108), for the event clip links sent to "
        "Home Assistant; unset: http://<host>:<port>, with this box's host name for a wildcard host"))

    def base_url(self) -> str:
        """The health server's address as others should open it (clip links)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @model_validator(mode="after")
    def _loopback_unless_allowed(self):
        if self.host not in LOOPBACK and not self.allow_remote:
            raise ValueError(f"host {self.host!r} serves health and metrics beyond this box: set allow_remote: "
                             f"true to mean it, or keep 127.0.0.1")
        return self


class HomeAssistant(Strict):
    discovery: bool = Field(True, description=(
        "publish Home Assistant MQTT discovery: per camera an anomaly binary_sensor, a score sensor, a snapshot "
        "image, a detect switch, a threshold-multiplier number and a schedule sensor, on the box's device; "
        "entities of a removed camera are cleared"))
    prefix: str = Field("homeassistant", pattern=r"^[A-Za-z0-9_-]+$", description=(
        "Home Assistant's discovery prefix (its MQTT integration's setting); the box broker's ACL and bridge "
        "must let homeassistant/# through for another prefix too"))


class Outbox(Strict):
    max_events: int = Field(10000, ge=10, description="pending events kept; the oldest updates go first")
    max_mb: float | None = Field(None, gt=0, description=(
        "MiB the stored events may take of the state disk (its log adds a bounded 0.3 MiB); beyond it the "
        "oldest updates go first. Default: a quarter of the state filesystem, at most 64"))


class Clips(Strict):
    max_mb: float = Field(2048.0, gt=0, description="MiB the clips may take of the state disk; oldest go first")
    max_age_hours: float = Field(168.0, gt=0, description="hours a clip is kept")
    max_seconds: float = Field(300.0, gt=0, description=(
        "longest clip: the stream is held from an event's pre-roll on for at most this long"))


class Config(Strict):
    device_id: str = Field(..., pattern=r"^[A-Za-z0-9_-]+$", description="this box's id, used in topics")
    state_dir: Path = Field(Path("/var/lib/vad-edge"), description="outbox, settings, calibration bundles")
    mqtt: MQTT = MQTT()
    model: Model = Model()
    health: Health = Health()
    outbox: Outbox = Outbox()
    homeassistant: HomeAssistant = HomeAssistant()
    clips: Clips = Clips()
    stats_interval: float = Field(10.0, gt=0, description="seconds between stats messages")
    timezone: str | None = Field(None, description=(
        "the IANA time zone the schedules are in (Europe/Paris); default the box's own (/etc/localtime)"))
    cameras: list[Camera] = Field(..., min_length=1, description="the cameras to watch")

    @field_validator("cameras")
    @classmethod
    def _unique_names(cls, cameras: list[Camera]) -> list[Camera]:
        names = [c.name for c in cameras]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"camera names must be unique: {', '.join(duplicates)}")
        return cameras

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str | None) -> str | None:
        if name is not None:
            try:
                zoneinfo.ZoneInfo(name)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Paris)") from None
        return name

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"vad-edge-{self.device_id}"


def _line_index(node, path=(), index=None) -> dict[tuple, int]:
    """Key path -> 1-based line of every mapping key and sequence item in a composed YAML document."""
    index = {} if index is None else index
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            here = path + (key.value,)
            index[here] = key.start_mark.line + 1
            _line_index(value, here, index)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            index[path + (i,)] = item.start_mark.line + 1
            _line_index(item, path + (i,), index)
    return index


def _describe(exc: ValidationError, lines: dict[tuple, int], source: str) -> str:
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        # The line of the deepest part of the path that exists in the file (a missing key: its parent).
        line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), 1)
        key = ".".join(str(p) for p in loc) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"{source}:{line}: {key}: {message}")
    return "\n".join(problems)


def parse(text: str, source: str = "<config>") -> Config:
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: expected a mapping of settings (device_id, mqtt, cameras, ...)")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, _line_index(node), source)) from None


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration ({exc.strerror})") from exc
    return parse(text, str(path))


def schema() -> dict:
    return Config.model_json_schema()
