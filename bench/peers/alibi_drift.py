"""alibi-detect's drift detectors on the request streams bench/drift.py wrote (a named peer).

alibi-detect 0.13.0 pins numpy < 2, so it runs from a venv of its own (`make bench-drift-peers`
builds .venv-drift from bench/peers/drift-requirements.txt):

    .venv-drift/bin/python bench/peers/alibi_drift.py STREAMS.npz OUT.json --ert 10000 \
        --window 50 --step 10

Two detectors, at the false-alarm budget bench/drift.py gives every detector:
- `MMDDriftOnline` (PyTorch backend): per row, thresholds calibrated by alibi-detect for an
  expected run time of `--ert` rows between false alarms; reset after each alarm;
- `KSDrift`: feature-wise Kolmogorov-Smirnov tests (Bonferroni over features) of the last
  `--window` rows every `--step` rows, at p_val = step / ert.
Writes, per detector and stream, the rows at which it alarmed and its seconds.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def online_alarms(cd, X: np.ndarray) -> list[int]:
    alarms = []
    cd.reset_state()
    for i, x in enumerate(X, start=1):
        if cd.predict(x)["data"]["is_drift"]:
            alarms.append(i)
            cd.reset_state()
    return alarms


def windowed_alarms(cd, X: np.ndarray, window: int, step: int) -> list[int]:
    """As clflow.monitor.evaluate.windowed_alarms (this venv does not import clflow)."""
    alarms, start = [], 0
    for hi in range(step, len(X) + 1, step):
        if hi - start >= window and cd.predict(X[hi - window : hi])["data"]["is_drift"]:
            alarms.append(hi)
            start = hi
    return alarms


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("streams", help="npz from bench/drift.py: x_ref and stream_<name>")
    parser.add_argument("out", help="JSON to write")
    parser.add_argument("--ert", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--step", type=int, default=10)
    args = parser.parse_args()
    from alibi_detect.cd import KSDrift, MMDDriftOnline

    data = np.load(args.streams)
    x_ref = data["x_ref"].astype(np.float32)
    streams = {k.removeprefix("stream_"): data[k].astype(np.float32) for k in data.files
               if k.startswith("stream_")}  # fmt: skip
    t = time.perf_counter()
    mmd = MMDDriftOnline(
        x_ref, ert=args.ert, window_size=args.window, backend="pytorch",
        n_bootstraps=2 * args.ert, verbose=False,
    )  # fmt: skip
    setup = time.perf_counter() - t
    ks = KSDrift(x_ref, p_val=args.step / args.ert)
    out = {"MMDDriftOnline": {"setup_seconds": setup}, "KSDrift": {"setup_seconds": 0.0}}
    for name, X in streams.items():
        t = time.perf_counter()
        out["MMDDriftOnline"][name] = {"alarms": online_alarms(mmd, X)}
        out["MMDDriftOnline"][name]["seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        out["KSDrift"][name] = {"alarms": windowed_alarms(ks, X, args.window, args.step)}
        out["KSDrift"][name]["seconds"] = time.perf_counter() - t
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
