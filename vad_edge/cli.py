"""`vad-edge` command line."""

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def _info(_args: argparse.Namespace) -> int:
    import vad_edge
    from vad_edge.cpu_share import agent_threads, graph_threads
    from vad_edge.runtime import hardware

    runtime, cpu = hardware.choose_placement("auto", "auto", "cpu")
    # The agent's default budget: a graph runtime on every physical core, torch (and the kernels) on one less.
    threads = agent_threads() if runtime.name == "torch" else graph_threads()
    info = {**vad_edge.build_info(), "cpu_bfloat16": hardware.native_bf16(),
            "scoring_cpu": {"runtime": runtime.name, "runtime_why": runtime.reason, "precision": cpu.name,
                            "precision_why": cpu.reason, "threads": threads, "torch_threads": agent_threads()}}
    print(json.dumps(info, indent=2))
    return 0


def _train(args: argparse.Namespace) -> int:
    from vad_edge.train import train
    from vad_edge.train_config import TrainConfig

    fields = {f: getattr(args, f) for f in TrainConfig.__dataclass_fields__ if getattr(args, f, None) is not None}
    path = train(args.data, args.out, TrainConfig(**fields), resume=args.resume, init=args.init)
    print(f"checkpoint written: {path}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from vad_edge.eval import evaluate

    report = evaluate(args.data, args.checkpoint, args.out, baseline=args.baseline, batch=args.batch,
                      device=args.device, fusion_name=args.fusion, precision=args.precision, runtime=args.runtime)
    summary = {k: report[k] for k in ("auc_micro", "auc_macro", "auc_raw", "auc_pixel")}
    if "baseline_framediff" in report:
        for lag, key in (("", "baseline_framediff"), ("_lag4", "baseline_framediff_lag4")):
            for metric in ("auc_micro", "auc_raw"):
                summary[f"framediff{lag}_{metric}"] = report[key][metric]
    print(json.dumps(summary, indent=2))
    print(f"scored in {report['precision']} by {report['runtime']} ({report['runtime_why']}; {report['why']}) "
          f"on {report['device']}")
    print(f"report and plots in {args.out}")
    return 0


def _fuse(args: argparse.Namespace) -> int:
    from vad_edge.model import checkpoint
    from vad_edge.train import fuse

    path = fuse(args.checkpoint, args.data, args.fusion, args.out, tuple(args.precision or ["auto"]))
    meta = checkpoint.read_metadata(path)
    print(json.dumps(checkpoint.load(path)[0].fusion.summary(), indent=2))
    print(f"fits in {', '.join(meta['fits'])} (main: {meta['precision']})")
    print(f"checkpoint written: {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from vad_edge.export import export

    info = export(args.checkpoint, args.out)
    print(json.dumps(info, indent=2))
    print(f"graph written: {os.path.join(args.out, info['onnx'])}")
    return 0


def _events(args: argparse.Namespace) -> int:
    from vad_edge.watch import ClipSaver, EventWatcher

    password = os.environ.get(args.password_env) if args.password_env else None
    if args.password_env and password is None:
        raise ValueError(f"--password-env {args.password_env}: that variable is not set")

    def show(line: str) -> None:
        print(line, flush=True)

    saver = ClipSaver(args.clips_from or f"http://{args.broker}:9108", args.save, show) if args.save else None
    watcher = EventWatcher(args.broker, args.port, device=args.device, prefix=args.prefix, tls=args.tls,
                           ca_file=args.ca_file, username=args.username, password=password,
                           client_id=args.client_id, show=show, on_event=saver.offer if saver else lambda e: None)
    if saver:
        saver.start()
    where = "every box" if args.device == "+" else f"box {args.device}"
    print(f"# events of {where} on {args.broker}:{args.port}" + ("; Ctrl-C to stop" if args.follow else ""),
          flush=True)
    try:
        watcher.start()
    except OSError as exc:
        raise ValueError(f"{args.broker}:{args.port}: cannot connect ({exc.strerror or exc})") from exc
    try:
        # Without --follow: what waited in this watcher's session, then quiet for --idle seconds ends it.
        watcher.wait(count=args.count, idle=None if args.follow else args.idle)
    except KeyboardInterrupt:  # Ctrl-C is how --follow ends
        pass
    finally:
        watcher.close()
        if saver:
            saver.close()
    return 0


def _config_check(args: argparse.Namespace) -> int:
    from vad_edge import config

    cfg = config.load(args.file)
    names = ", ".join(c.name for c in cfg.cameras)
    print(f"{args.file}: OK (device {cfg.device_id}, {len(cfg.cameras)} camera(s): {names})")
    return 0


def _config_schema(args: argparse.Namespace) -> int:
    from vad_edge import config

    print(json.dumps(config.schema(), indent=2))
    return 0


def _run(args: argparse.Namespace) -> int:
    from vad_edge import config
    from vad_edge.agent.runner import Agent, install_signal_handlers

    cfg = config.load(args.config)
    agent = Agent(cfg)
    install_signal_handlers(agent)
    agent.run()
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vad_edge.cpu_share import agent_running, calibration_threads, lower_priority, use_threads

    # Calibration often runs beside the agent on the same box: the agent's live scoring keeps priority, on
    # every thread (torch's included) and with a share of the cores. Alone, it takes them all.
    lower_priority(10)
    threads = use_threads(calibration_threads(args.threads, beside_agent=agent_running()))

    from vad_edge import config
    from vad_edge.runtime.bundle import calibration_dir
    from vad_edge.calibrate import calibrate, load_footage
    from vad_edge.model import checkpoint

    rule = {"min_event_frames": args.min_event_frames, "cooldown": args.cooldown}
    zones = []
    if args.camera:
        cfg = config.load(args.config)
        cams = {c.name: c for c in cfg.cameras}
        if args.camera not in cams:
            raise config.ConfigError(f"{args.config}: no camera named {args.camera!r} (have: {', '.join(cams)})")
        cam = cams[args.camera]
        source, name, out = cam.source, cam.name, calibration_dir(cfg)
        rule = {"min_event_frames": cam.min_event_frames, "cooldown": cam.cooldown}
        zones, rule["tamper_after"] = cam.zones, cam.tamper.after if cam.tamper.enabled else None
    else:
        source, name, out = args.source, args.name, None
    out = Path(args.out) if args.out else (out or Path("calibration"))
    base = args.base or checkpoint.shipped(args.profile)
    meta = checkpoint.read_metadata(base)
    size, fps = meta["profile"]["size"], checkpoint.frame_rate(meta)
    max_frames = int(args.max_disk_mb * 2**20 // (size * size * 3))  # uint8 frames at model resolution
    print(f"calibrating {name} at {fps:g} fps (the model's rate), {threads} thread(s), nice "
          f"{os.getpriority(os.PRIO_PROCESS, 0)}")
    videos = load_footage(source, size, args.minutes, fps, max_frames, out / f"{name}.work")
    report = calibrate(videos, base, out, name, budget_minutes=args.budget,
                       target_per_hour=args.false_alarms_per_hour, device=args.device, precision=args.precision,
                       learn_motion=args.learn_motion, zones=zones, **rule)
    span = report["false_alarms_per_hour_range"]
    print(f"calibration bundle: {report['bundle']}")
    steps = report["training_iterations"]
    print(f"adapted for {report['training_minutes']:.1f} min: {steps['pretrain']} autoencoder and {steps['finetune']} "
          f"fine-tuning iterations of the {report['adapted']}")
    expected = report["expected_false_alarms_per_hour"]
    rate = (f"expected {expected:.2f} false alarms/hour ({span['kind']} {span['low']:.2f}-{span['high']:.2f})"
            if expected is not None else f"at most {span['high']:.1f} false alarms/hour ({span['kind']})")
    print(f"threshold {report['threshold']:.6g} ({report['threshold_method']}): {rate} "
          f"for a target of {args.false_alarms_per_hour}")
    if report["advice"]:
        print(report["advice"])
    return 0


def _zones(args: argparse.Namespace) -> int:
    import cv2

    from vad_edge import config
    from vad_edge.agent.snapshot import zone_grid
    from vad_edge.data.sources import SourceError, mask_password, open_source

    cfg = config.load(args.config)
    cams = {c.name: c for c in cfg.cameras}
    if args.camera not in cams:
        raise config.ConfigError(f"{args.config}: no camera named {args.camera!r} (have: {', '.join(cams)})")
    cam = cams[args.camera]
    out = args.out or Path(f"{cam.name}-zones.png")
    try:
        capture = open_source(cam.source, timeout=cam.offline_after)
        try:
            ok, frame = capture.read()
        finally:
            capture.release()
        if not ok:
            raise SourceError(f"{mask_password(cam.source)}: opened, but gave no frame")
        if not cv2.imwrite(str(out), zone_grid(frame, cam.zones)):
            raise SourceError(f"cannot write {out} (a folder that exists?)")
    except cv2.error:
        print(f"error: cannot write {out}: not an image name OpenCV knows (end it in .png or .jpg)", file=sys.stderr)
        return 1
    except SourceError as exc:
        print(f"error: camera {cam.name}: {exc}", file=sys.stderr)
        return 1
    height, width = frame.shape[:2]
    print(f"{out}: {cam.name}'s picture ({width}x{height}) with a grid every 0.1 of its width and height; a "
          f"zone's points are [x, y] read off it ({len(cam.zones)} zone(s) drawn)")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from vad_edge import config
    from vad_edge.doctor import DEFAULT_CONFIG, run_doctor

    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    note = "" if path else (f"no device config ({DEFAULT_CONFIG} does not exist; --config FILE): cameras, broker "
                            "and models not checked")
    cfg = config.load(path) if path else None

    def report(row: tuple[str, str, str]) -> None:
        name, status, detail = row
        print(f"{name:<16}  {status:<4}  {detail}", flush=True)

    healthy = run_doctor(cfg, report, note)
    print("ready" if healthy else "NOT ready: see the FAIL lines")
    return 0 if healthy else 1


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vad_edge.demo import SAMPLE, run_demo

    run_demo(Path(args.out), Path(args.source) if args.source else SAMPLE, args.checkpoint, realtime=not args.fast,
             precision=args.precision)
    return 0


def add_precision(parser: argparse.ArgumentParser, what: str = "scored in") -> None:
    from vad_edge.runtime.hardware import PRECISIONS

    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help=f"the format clips are {what}: auto takes bfloat16 on CPUs that run it natively "
                             f"(AMX, AVX-512 BF16, ARM BF16), float16 on CUDA, float32 elsewhere "
                             f"(`vad-edge info` says which)")


TRAIN_HELP = {"size": "input side in pixels, a multiple of 32 (default: the profile's, lite 128, paper 256); "
                      "with --init, trains that model further at this side"}


def build_parser() -> argparse.ArgumentParser:
    # The choices come from torch-free modules: `vad-edge --help` and `info` answer at once.
    from vad_edge.model.names import FUSIONS, PROFILES
    from vad_edge.runtime.hardware import PRECISIONS, RUNTIME_CHOICES
    from vad_edge.train_config import TrainConfig

    parser = argparse.ArgumentParser(prog="vad-edge", description="Video anomaly detection appliance (STD).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the build: kernels, CUDA architectures, OpenMP (vad-edge doctor checks "
                                "the devices)").set_defaults(func=_info)

    train = sub.add_parser("train", help="train an STD model on the normal footage of <data>/training")
    train.add_argument("--data", required=True, help="dataset root (training/frames/<video>/ or video files)")
    train.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    train.add_argument("--resume", help="training state to continue from (<out>.state.pt)")
    train.add_argument("--init", help="checkpoint to start from instead of a fresh model (train it further)")
    defaults = TrainConfig()
    choices = {"profile": list(PROFILES), "precision": [p for p in PRECISIONS if p != "float16"],
               "fusion": list(FUSIONS)}
    for name in TrainConfig.__dataclass_fields__:
        default = getattr(defaults, name)
        kind = float if name == "max_minutes" else type(default)
        train.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None,
                           choices=choices.get(name), help=TRAIN_HELP.get(name, f"default: {default}"))
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("eval", help="frame/pixel ROC-AUC on <data>/testing (STD protocol), with plots")
    evaluate.add_argument("--data", required=True, help="dataset root with testing/ and labels")
    evaluate.add_argument("--checkpoint", help="checkpoint (default: the shipped lite model)")
    evaluate.add_argument("--out", default="eval-out", help="folder for report.json and the plots")
    evaluate.add_argument("--baseline", choices=["framediff"],
                          help="also score the frame difference: consecutive frames (lag 1), and the clip's last "
                               "minus first (lag 4)")
    evaluate.add_argument("--fusion", choices=list(FUSIONS),
                          help="score with this fusion instead of the checkpoint's (fitted on <data>/training "
                               "when the checkpoint has no fit of it)")
    evaluate.add_argument("--batch", type=int, default=16, help="clips per forward pass")
    evaluate.add_argument("--device", default="auto", help="cpu, cuda or auto (a GPU when there is one)")
    add_precision(evaluate)
    evaluate.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto",
                          help="what runs the networks: torch, or their ONNX export in onnxruntime (float32) or "
                               "openvino (bfloat16 where the CPU runs it, else float32); auto: as the agent "
                               "chooses, OpenVINO on an x86 CPU where it is installed (`vad-edge info` says)")
    evaluate.set_defaults(func=_eval)

    fuse = sub.add_parser("fuse", help="refit how a checkpoint's terms become one score, on normal footage")
    fuse.add_argument("--checkpoint", required=True, help="checkpoint to refit (its weights are kept)")
    fuse.add_argument("--data", required=True, help="dataset root whose training/ holds normal footage")
    fuse.add_argument("--fusion", choices=list(FUSIONS), default=FUSIONS[0],
                      help=f"default: {FUSIONS[0]}")
    fuse.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    fuse.add_argument("--precision", action="append", choices=PRECISIONS,
                      help="a precision to fit in, once per precision (default: auto, this box's own); the "
                           "checkpoint keeps a fit per precision, and a box scores with its own")
    fuse.set_defaults(func=_fuse)

    exporter = sub.add_parser("export", help="write the model's two networks as ONNX (opset 18; the kernels stay "
                                             "outside the graph), for ONNX Runtime or OpenVINO")
    exporter.add_argument("--checkpoint", help="checkpoint or bundle (default: the shipped lite model)")
    exporter.add_argument("--out", required=True, help="folder for <name>.onnx and <name>.onnx.json")
    exporter.set_defaults(func=_export)

    run = sub.add_parser("run", help="run the agent: cameras in, anomaly events out over MQTT")
    run.add_argument("--config", default="/etc/vad-edge/config.yaml", help="device configuration (YAML)")
    run.set_defaults(func=_run)

    cal = sub.add_parser("calibrate", help="adapt the model to a site from its normal footage; choose the threshold")
    where = cal.add_mutually_exclusive_group(required=True)
    where.add_argument("--camera", help="a camera of the device config (--config): its source and event rule")
    where.add_argument("--source", help="video file, folder of clips or frames, RTSP/HTTP URL, or V4L2 device")
    cal.add_argument("--config", default="/etc/vad-edge/config.yaml", help="device config, with --camera")
    cal.add_argument("--name", default="site", help="camera name for the bundle, with --source")
    cal.add_argument("--minutes", type=float, default=10, help="footage to record from a live source")
    cal.add_argument("--max-disk-mb", type=float, default=1024, help="bound on recorded footage")
    cal.add_argument("--budget", type=float, default=20,
                     help="minutes the adaptation takes: fine-tuning, the K-means refit and scoring the hold-out "
                          "(recording or loading the footage comes before)")
    cal.add_argument("--learn-motion", action="store_true",
                     help="fine-tune the motion U-Net too (by default only the appearance branch and the cluster "
                          "centres adapt: learning a site's normal motion cost accuracy on Ped1)")
    cal.add_argument("--false-alarms-per-hour", type=float, default=1.0, help="the alarm budget on normal footage")
    cal.add_argument("--profile", default="lite", choices=["lite", "paper"], help="shipped base model (with no --base)")
    cal.add_argument("--base", help="base checkpoint to adapt (default: the shipped one of --profile)")
    cal.add_argument("--out", help="folder for the bundle and report (default: <state_dir>/calibration)")
    cal.add_argument("--threads", type=int, default=0,
                     help="CPU threads for training (default: half the cores beside a running agent, which "
                          "keeps the rest; every core when no agent runs)")
    cal.add_argument("--min-event-frames", type=int, default=3, help="with --source: the agent's event rule")
    cal.add_argument("--cooldown", type=float, default=3.0, help="with --source: the agent's event rule (s)")
    cal.add_argument("--device", default="auto", help="cpu, cuda or auto (a GPU when there is one)")
    add_precision(cal, "fitted in (that of the box that will score)")
    cal.set_defaults(func=_calibrate)

    doctor = sub.add_parser("doctor", help="check this box: kernels, models, cameras, broker, disk, clock")
    doctor.add_argument("--config", help="device config whose cameras, broker and models to check (default: "
                                          "/etc/vad-edge/config.yaml when it exists; without one, only this box)")
    doctor.set_defaults(func=_doctor)

    zones = sub.add_parser("zones", help="write a frame from a camera with a coordinate grid and its zones, to "
                                         "read a zone's points off")
    zones.add_argument("--camera", required=True, help="the camera's name in the config")
    zones.add_argument("--config", default="/etc/vad-edge/config.yaml", help="device configuration (YAML)")
    zones.add_argument("--out", type=Path, help="the image to write (default <camera>-zones.png)")
    zones.set_defaults(func=_zones)

    demo = sub.add_parser("demo", help="the agent on the bundled sample clip, with a local broker")
    demo.add_argument("--out", default="vad-edge-demo", help="folder for demo.mp4, timeline.png, events.jsonl and "
                      "each event's clip")
    demo.add_argument("--source", help="another video file to play instead of the sample")
    demo.add_argument("--checkpoint", help="model (default: the shipped lite checkpoint)")
    demo.add_argument("--fast", action="store_true", help="score as fast as possible instead of in real time")
    add_precision(demo)
    demo.set_defaults(func=_demo)

    events = sub.add_parser("events", help="print a box's anomaly events from an MQTT broker (deduplicated, "
                                           "replays marked)")
    events.add_argument("--broker", required=True, help="MQTT broker host: the box's, or the site's central one")
    events.add_argument("--port", type=int, default=1883, help="default: 1883 (8883 is usual with --tls)")
    events.add_argument("--device", default="+", help="device_id of the box to watch (default: every box)")
    events.add_argument("--follow", action="store_true", help="keep printing new events until Ctrl-C")
    events.add_argument("--idle", type=float, default=3.0,
                        help="without --follow: stop after this many seconds without a new event (default 3)")
    events.add_argument("--count", type=int, help="stop after this many events")
    events.add_argument("--tls", action="store_true", help="connect with TLS (system CAs, or --ca-file)")
    events.add_argument("--ca-file", help="CA certificate of a private broker, with --tls")
    events.add_argument("--username", help="broker account allowed to read vad-edge/#")
    events.add_argument("--password-env", help="environment variable that holds its password (never on the "
                                               "command line)")
    events.add_argument("--prefix", default="vad-edge", help="topic prefix (mqtt.prefix of the boxes)")
    events.add_argument("--client-id", help="MQTT client id: the broker keeps events for it while it is away "
                                            "(default: vad-edge-events-<host>-<device>)")
    events.add_argument("--save", type=Path, metavar="DIR", help="fetch each end event's clip into DIR")
    events.add_argument("--clips-from", metavar="URL", help="the box's health server, which serves its clips "
                        "(default: http://<broker>:9108; beyond the box it needs health.allow_remote)")
    events.set_defaults(func=_events)

    cfg = sub.add_parser("config", help="check the device configuration or print its JSON Schema")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    check = cfg_sub.add_parser("check", help="validate a configuration file")
    check.add_argument("file")
    check.set_defaults(func=_config_check)
    cfg_sub.add_parser("schema", help="print the JSON Schema of the configuration").set_defaults(func=_config_schema)
    return parser


def main(argv: list[str] | None = None) -> int:
    from vad_edge.agent.outbox import StorageError
    from vad_edge.config import ConfigError

    args = build_parser().parse_args(argv)
    # Our own lines at INFO; other libraries' only from WARNING (amqtt's state machine, matplotlib's font
    # cache and the like log their routine at INFO through the root logger).
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("vad_edge").setLevel(logging.INFO)
    try:
        return args.func(args)
    except BrokenPipeError:  # `vad-edge config schema | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except ConfigError as exc:  # bad configuration: exit 2, every problem named
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # bad dataset, checkpoint or argument: one clear line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except StorageError as exc:  # the state folder cannot be used: it names the file
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
