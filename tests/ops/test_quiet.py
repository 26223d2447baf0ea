"""Entry-point settings (`ops/quiet.py`): the math kernels every entry point holds to AVX2, so
a run writes the same bytes on CPUs of one kind (docs/operations/dependencies.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from clflow.ops.quiet import SAME_BYTES

PROBE = (
    "import clflow.ops.quiet, json, numpy, torch; "
    "from numpy._core._multiarray_umath import __cpu_features__ as f; "
    "print(json.dumps({'torch': torch.backends.cpu.get_cpu_capability(), "
    "'numpy_avx512': f.get('X86_V4', False)}))"
)


def test_an_entry_point_runs_the_avx2_kernels_whatever_the_cpu():
    env = {k: v for k, v in os.environ.items() if k not in SAME_BYTES}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    found = json.loads(out.stdout)
    assert found == {"torch": found["torch"], "numpy_avx512": False}
    assert found["torch"] in {"AVX2", "DEFAULT"}  # DEFAULT: a CPU without AVX2 at all
    # a user's own choice stands
    env["ATEN_CPU_CAPABILITY"] = "default"
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout)["torch"] == "DEFAULT"
