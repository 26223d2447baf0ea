"""Drift on served traffic, without labels: clflow's detector against alibi-detect and river.

    make bench-drift-peers    # .venv-drift: alibi-detect (its numpy pin conflicts with clflow's)
    python bench/drift.py [--streams NAME ...] [--repeats 5]

For each stream, TAME learns every experience but the last; the last one's test rows are the
shift (new classes on Split-Digits and Split-MNIST-1D, a new pixel permutation on
Permuted-Digits). Requests are test rows drawn with replacement:
- 10,000 rows of the known experiences, to count false alarms;
- `--repeats` streams of 500 known rows, then 1,500 new ones, for the detection delay (rows
  after the shift until the first alarm; a miss when none comes).
Every detector gets the same budget: one false alarm per 10,000 unshifted rows expected
(`--ert`), and the same reference, TAME's expert buffers:
- clflow: `clflow.monitor.DriftDetector` (MMD, routing shift and new-task share) on the last 50
  rows every 5 rows, at alpha = 5 / ert a window (the windows `clflow drift` scores), and
  every row, at alpha = 1 / ert, as the online peers check;
- alibi-detect `MMDDriftOnline` (ERT calibrated by alibi) and `KSDrift` on the same windows, at
  p_val = 5 / ert, from .venv-drift (bench/peers/alibi_drift.py);
- river `ADWIN` on a per-row score, each row's distance to its nearest reference row (the
  score clflow's new-task share thresholds), at its defaults (delta 0.002, a check every 32
  rows: `clock` 32) and checking every row (`clock` 1).
Time per 1,000 rows counts the detector's own work (routing is done when the model serves).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from clflow.config import StreamConfig, TameConfig, TrainConfig
from clflow.evaluation import run_stream
from clflow.monitor.check import tame_reference
from clflow.monitor.drift import DriftDetector
from clflow.monitor.evaluate import Requests, delay, known_and_new, per_10k, requests
from clflow.monitor.evaluate import windowed_alarms as windowed
from clflow.streams import build_stream
from clflow.tame.training import make_tame

STREAMS = {
    "Split-Digits": StreamConfig(source="digits"),
    "Permuted-Digits": StreamConfig(source="permuted_digits"),
    "Split-MNIST-1D": StreamConfig(source="mnist1d"),
}
PEER_VENV = Path(".venv-drift")
FA_ROWS, BEFORE, AFTER = 10_000, 500, 1_500
WINDOW, STEP = 50, 5


def trained_model(cfg: StreamConfig, seed: int):
    """(TAME trained on all but the last experience, known test rows, new test rows)."""
    trained, known, new = known_and_new(build_stream(cfg))
    train, tame = TrainConfig(), TameConfig()
    learner = make_tame(trained, train, tame, seed)
    run_stream(learner, trained, batch_size=train.batch_size, epochs=train.epochs, seed=seed)
    return learner, known, new


def clflow_alarms(
    detector: DriftDetector, learner, req: Requests, step: int
) -> tuple[list[int], float]:
    experts = learner.route(req.X)  # recorded by `clflow serve` with each answer
    t = time.perf_counter()
    found = windowed(
        lambda lo, hi: detector.score(req.X[lo:hi], experts[lo:hi]).drift,
        len(req.X), WINDOW, step,
    )  # fmt: skip
    return found, time.perf_counter() - t


def adwin_alarms(detector: DriftDetector, req: Requests, clock: int) -> tuple[list[int], float]:
    from river.drift import ADWIN

    t = time.perf_counter()
    scores = detector.distances(req.X)
    adwin, found = ADWIN(clock=clock), []
    for i, value in enumerate(scores, start=1):
        adwin.update(float(value))
        if adwin.drift_detected:
            found.append(i)
    return found, time.perf_counter() - t


def alibi_alarms(x_ref: np.ndarray, streams: dict[str, Requests], ert: int) -> dict:
    """alibi-detect's alarms per detector and stream, from its own venv ({} without it)."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        print(f"({PEER_VENV} missing: run `make bench-drift-peers` for alibi-detect's rows)")
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        npz, out = Path(tmp) / "streams.npz", Path(tmp) / "alibi.json"
        np.savez(npz, x_ref=x_ref, **{f"stream_{k}": r.X for k, r in streams.items()})
        cmd = [str(python), "bench/peers/alibi_drift.py", str(npz), str(out), "--ert", str(ert),
               "--window", str(WINDOW), "--step", str(STEP)]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def summary(alarms: dict[str, list[int]], seconds: float, streams: dict[str, Requests]) -> dict:
    """False alarms per 10k unshifted rows, delays on the shifted streams, ms per 1,000 rows."""
    delays = [delay(alarms[k], r.shift) for k, r in streams.items() if r.shift is not None]
    hits = [d for d in delays if d is not None]
    rows = sum(len(r.X) for r in streams.values())
    return {
        "false_alarms_per_10k": per_10k(alarms["unshifted"], len(streams["unshifted"].X)),
        "median_delay": float(np.median(hits)) if hits else None,
        "detected": f"{len(hits)}/{len(delays)}",
        "ms_per_1000_rows": 1e6 * seconds / rows,
    }


def bench_stream(cfg: StreamConfig, repeats: int, ert: int, seed: int) -> dict[str, dict]:
    learner, known, new = trained_model(cfg, seed)
    x_ref, routes = tame_reference(learner)
    streams = {"unshifted": requests(known, None, FA_ROWS, 0, seed=1000)}
    streams.update(
        {f"shift{r}": requests(known, new, BEFORE, AFTER, seed=r) for r in range(repeats)}
    )
    out = {}
    for step in (STEP, 1):
        # 20,000 null windows: the MMD p-value reaches alpha / 3 at step 5 (1.7e-4), not at
        # step 1 (3.3e-5), where the routing and new-task tests alone can alarm
        detector = DriftDetector(alpha=step / ert, n_null=20_000, seed=seed).fit(x_ref, routes)
        detector.mmd_null(WINDOW)  # calibration, once per model: not per row
        runs = {k: clflow_alarms(detector, learner, r, step) for k, r in streams.items()}
        out[f"clflow DriftDetector (every {step} rows)"] = summary(
            {k: a for k, (a, _) in runs.items()}, sum(s for _, s in runs.values()), streams
        )
    for clock in (32, 1):
        runs = {k: adwin_alarms(detector, r, clock) for k, r in streams.items()}
        out[f"river ADWIN (clock {clock}) on distance"] = summary(
            {k: a for k, (a, _) in runs.items()}, sum(s for _, s in runs.values()), streams
        )
    for name, found in alibi_alarms(x_ref, streams, ert).items():
        seconds = sum(v["seconds"] for k, v in found.items() if k != "setup_seconds")
        out[f"alibi-detect {name}"] = summary(
            {k: v["alarms"] for k, v in found.items() if k != "setup_seconds"}, seconds, streams
        )
    return out


def fmt(value) -> str:
    if value is None:
        return "never"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", nargs="+", choices=list(STREAMS), default=list(STREAMS))
    parser.add_argument("--repeats", type=int, default=5, help="shifted streams (default 5)")
    parser.add_argument("--ert", type=int, default=10_000, help="rows between false alarms")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        "\n| stream | detector | false alarms / 10k rows | median delay (rows) | detected | "
        "ms / 1,000 rows |\n|---|---|---|---|---|---|"
    )
    for name in args.streams:
        for detector, r in bench_stream(STREAMS[name], args.repeats, args.ert, args.seed).items():
            print(
                f"| {name} | {detector} | {fmt(r['false_alarms_per_10k'])} | "
                f"{fmt(r['median_delay'])} | {r['detected']} | {fmt(r['ms_per_1000_rows'])} |",
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
