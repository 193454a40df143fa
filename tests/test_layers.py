"""The package's layers hold at run time too (`make test` checks the imports themselves with lint-imports)."""

import json
import subprocess
import sys


def loaded_by(module: str) -> list[str]:
    """The trainer's and scikit-learn's modules that importing `module` loads, in a fresh interpreter."""
    code = (f"import sys, json, {module}; print(json.dumps(sorted(m for m in sys.modules "
            "if m.split('.')[0] == 'sklearn' or m in ('vad_edge.trainer', 'vad_edge.train'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_the_agent_loads_neither_the_trainer_nor_scikit_learn():
    assert loaded_by("vad_edge.agent.runner") == []


def test_the_check_sees_what_it_looks_for():
    """The same check on calibrate, which fine-tunes with the trainer: it must find both."""
    found = loaded_by("vad_edge.calibrate")
    assert "vad_edge.trainer" in found and "sklearn" in found
