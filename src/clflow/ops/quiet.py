"""The settings every entry point starts with, as `make` sets them: telemetry off, offline
model hubs, a project-local Prefect home, time for Prefect's temporary API to start, a console
that shows warnings (run pages in the Prefect UI keep INFO), and math kernels held to AVX2, so
that CPUs of one kind give the same bytes (not an Intel and an AMD one: see
docs/operations/dependencies.md).

Importing this module applies them, before Prefect or MLflow read their settings: flow and
stage scripts import it first. A variable the user has set is left as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # Prefect gives its temporary API 20 s to start; a first start (database migrations) on a
    # busy 2-core machine takes longer
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    # small artifacts (checkpoints, lineage.json): no download bars in logs
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
# The same bytes on CPUs of one kind: math libraries pick kernels per instruction set,
# and AVX-512 kernels sum in another order, so a run on one CPU would rewrite the metrics another
# committed. Each library is held to its AVX2 kernels (MKL's conditional numerical
# reproducibility, torch's ATen and oneDNN, OpenBLAS in numpy and scipy, numpy's own loops and
# FAISS); the cost on make run is measured in docs/operations/dependencies.md.
SAME_BYTES = {
    "MKL_CBWR": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "FAISS_OPT_LEVEL": "avx2",
}
DEFAULTS.update(SAME_BYTES)
STARTUP_TIMEOUT = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"


def apply(project: Path | None = None) -> None:
    """Set every default the environment lacks; Prefect's home is `<project>/.prefect` (the
    working directory by default, the project root when run as the README shows)."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_HOME", str((project or Path.cwd()).resolve() / ".prefect"))


apply()
