"""`vad-edge` command line."""

import argparse
import json
import sys


def _info(_args: argparse.Namespace) -> int:
    import vad_edge

    print(json.dumps(vad_edge.ops.backend(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vad-edge", description="Video anomaly detection appliance (STD).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the build: kernels, CUDA architectures, OpenMP").set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
