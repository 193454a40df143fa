"""The command line as a person meets it: fast to answer, quiet when piped, every option explained."""

import json
import os
import platform
import subprocess
import sys

import pytest

from vad_edge import cli, cpu_share
from vad_edge.model import PROFILES
from vad_edge.model.fusion import FUSIONS

NO_TORCH = "import sys; from vad_edge.cli import main; code = main(sys.argv[1:]); " \
           "print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr); sys.exit(code)"


@pytest.mark.parametrize("args", [["info"], ["config", "schema"], ["config", "check", "firmware_config/etc/vad-edge/config.yaml"]])
def test_commands_that_need_no_model_do_not_import_torch(args):
    """torch takes seconds to import: --help, info and config answer without it."""
    done = subprocess.run([sys.executable, "-c", NO_TORCH, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith("no torch")


def test_help_does_not_import_torch():
    code = "import sys; from vad_edge.cli import main\ntry:\n    main(['train', '--help'])\nexcept SystemExit:\n" \
           "    pass\nprint('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().endswith("False") and "--fusion {motion-cluster-speed-places,motion-cluster-speed,motion-cluster,standardised,paper}" in done.stdout


def test_info_prints_the_build():
    done = subprocess.run([sys.executable, "-m", "vad_edge.cli", "info"], capture_output=True, text=True, check=True)
    info = json.loads(done.stdout)
    assert info["cpu"] is True and "cuda_archs" in info and info["torch"]
    assert info["cpu_arch"] == platform.machine() and info["cpu_simd"] in ("sse2", "avx2", "avx512", "neon", "scalar")
    # The agent's default threads: a graph runtime every physical core, torch one less than the CPUs.
    scoring = info["scoring_cpu"]
    assert scoring["torch_threads"] == max(1, len(os.sched_getaffinity(0)) - 1)
    assert scoring["threads"] == (scoring["torch_threads"] if scoring["runtime"] == "torch"
                                  else cpu_share.physical_cores())


def test_a_closed_pipe_is_not_an_error():
    """`vad-edge config schema | head`: the reader goes away; no traceback, exit 0."""
    proc = subprocess.Popen([sys.executable, "-m", "vad_edge.cli", "config", "schema"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # gone before the first write
    err = proc.stderr.read().decode()
    assert proc.wait() == 0 and "Traceback" not in err, err


def test_parser_choices_are_the_models_and_the_runtimes():
    """The parser takes its choices from torch-free lists of names; each names what the code defines."""
    from vad_edge.model import names
    from vad_edge.runtime import hardware, runners

    assert set(names.PROFILES) == set(PROFILES) and names.FUSIONS == FUSIONS
    assert tuple(runners.RUNNERS) == hardware.RUNTIMES
    commands = cli.build_parser()._subparsers._group_actions[0].choices
    choices = {action.dest: action.choices for action in commands["eval"]._actions}
    assert list(choices["runtime"]) == list(hardware.RUNTIME_CHOICES) and list(choices["fusion"]) == list(FUSIONS)
    assert list(choices["precision"]) == list(hardware.PRECISIONS)
    train = {action.dest: action.choices for action in commands["train"]._actions}
    assert list(train["profile"]) == list(names.PROFILES) and "float16" not in train["precision"]


def test_every_option_has_a_help_text():
    parser = cli.build_parser()
    missing = []
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        groups = [sub] + ([*sub._subparsers._group_actions[0].choices.values()] if sub._subparsers else [])
        for command in groups:
            for action in command._actions:
                if action.option_strings and action.dest != "help" and not action.help:
                    missing.append(f"{command.prog} {action.option_strings[0]}")
    assert not missing, missing


def test_matplotlib_font_cache_news_is_not_logged():
    """`make demo` printed "INFO matplotlib.font_manager: generated new fontManager"."""
    import logging

    cli.main(["info"])
    assert not logging.getLogger("matplotlib.font_manager").isEnabledFor(logging.INFO)
