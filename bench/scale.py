"""How clflow's cost grows with the stream: every stage at five sizes, and the real-size targets.

    make bench-data                 # Fashion-MNIST, offline, from Debian's package
    python bench/scale.py           # ~40 min on 2 cores; --sizes / --skip-targets to do less

1. Growth: on fresh project copies with the default params.yaml (3 seeds) and only
   `stream.source` / `stream.limit` changed, each stage of dvc.yaml runs through
   `dvc repro --single-item`: Split-Digits (1.8k rows), Split-MNIST-1D (8k) and
   Split-Fashion-MNIST at 17.5k, 35k and 70k rows. Wall time and peak RSS (the stage and
   every process it started) per stage, the exponent of time against rows fitted over the
   Fashion-MNIST sizes (same features, so only the row count changes), a table and a log-log
   plot (docs/benchmarks/scale.png).
2. Targets on the 70k stream: the whole pipeline <= 15 min; `baselines` <= 90 s per seed;
   peak RSS of every stage <= 2 GB; a continual update (flows/continual.py) with a new
   12,000-row experience <= 3 min, its intake <= 10 s.
3. Sharing: `baselines` and `tame` each alone, then both at once, in copies of the 17.5k
   project (forced reruns, TAME from scratch): each should keep >= 0.4x its speed alone.
   `--sharing-only --workdir DIR` repeats this step on a project an earlier run left in DIR.
4. `--runner dask` (default size: digits-1.8k): after the growth run, every stage whose jobs go
   through `train.runner` (baselines, lingo, tame, retrieval) is rerun in two copies, with
   2 forked processes (`local`) and on a 2-worker Dask LocalCluster (`dask`); wall time and
   peak RSS of each beside the other, and whether their metrics are the same numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ.update(
    {
        "DO_NOT_TRACK": "1",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
)
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]

from clflow.ops.dvcrun import stage_names  # noqa: E402
from clflow.scaffold import new_project  # noqa: E402
from clflow.streams.loaders import FASHION_MNIST_DEBIAN, FASHION_MNIST_INSTALL  # noqa: E402

SIZES = {  # name: (rows, stream params)
    "digits-1.8k": (1797, {"source": "digits"}),
    "mnist1d-8k": (8000, {"source": "mnist1d"}),
    "fmnist-17.5k": (17500, {"source": "fashion_mnist", "limit": 17500}),
    "fmnist-35k": (35000, {"source": "fashion_mnist", "limit": 35000}),
    "fmnist-70k": (70000, {"source": "fashion_mnist"}),
}
# the wrapper reports the peak RSS of everything it waited for (DVC, the stage, its workers)
PEAK = (
    "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
    "print('@peak_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(p.returncode)"
)


def measure(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of `cmd` and all its descendants; exits on failure."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PEAK, *cmd], cwd=cwd, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    peak = next(ln for ln in proc.stderr.splitlines() if ln.startswith("@peak_kb"))
    return seconds, int(peak.split()[1]) / 1024


def repro(stage: str, project: Path, force: bool = False) -> list[str]:
    return [sys.executable, "-m", "dvc", "repro", "--single-item", *(["--force"] * force), stage]


def run_size(name: str, stream: dict, work: Path) -> tuple[Path, dict[str, tuple[float, float]]]:
    project = new_project(ROOT, work / name, {"stream": stream})
    out = {}
    for stage in stage_names(project):
        out[stage] = measure(repro(stage, project), project)
        print(
            f"  {name:13s} {stage:13s} {out[stage][0]:7.1f} s {out[stage][1]:7.0f} MB", flush=True
        )
    return project, out


def exponent(rows: list[int], seconds: list[float]) -> float:
    """Slope of log(time) against log(rows): 1 is linear."""
    return float(np.polyfit(np.log(rows), np.log(seconds), 1)[0])


def plot(results: dict[str, dict[str, tuple[float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [SIZES[n][0] for n in results]
    stages = list(next(iter(results.values())))
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 5))
    for stage in stages:
        ax_t.plot(rows, [results[n][stage][0] for n in results], "o-", label=stage)
        ax_m.plot(rows, [results[n][stage][1] for n in results], "o-", label=stage)
    ref = np.array([rows[0], rows[-1]], dtype=float)
    ax_t.plot(ref, 10 * ref / ref[0], "k--", lw=1, label="linear (slope 1)")
    for ax, label in ((ax_t, "wall time (s)"), (ax_m, "peak RSS (MB)")):
        ax.set(xscale="log", yscale="log", xlabel="rows in the stream", ylabel=label)
        ax.set_xticks(rows, [f"{r / 1000:.1f}k" for r in rows])
        ax.minorticks_off()
        ax.grid(True, which="both", alpha=0.3)
    ax_m.set_yticks([250, 500, 1000, 2000], ["250", "500", "1,000", "2,000"])
    ax_t.set_yticks([5, 10, 30, 100, 300], ["5", "10", "30", "100", "300"])
    ax_m.axhline(2048, color="r", ls=":", lw=1, label="2 GB target")
    ax_t.legend(fontsize=8)
    ax_m.legend(fontsize=8)
    fig.suptitle("clflow stages against stream size (default params, 3 seeds, 2 cores)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def update_with_new_experience(project: Path, rows: int) -> tuple[float, float]:
    """(update seconds, intake seconds) for one new experience of `rows` rows: the intake alone
    on a copy, then the whole continual-update flow on the project."""
    from clflow.streams import load_stream
    from clflow.streams.demo import example_experience
    from clflow.streams.intake import intake

    stream = load_stream(project / "data" / "stream")
    new = example_experience(stream, permute=True, seed=7, limit=rows)
    with tempfile.TemporaryDirectory(dir=project.parent) as tmp:
        copy = Path(tmp)
        for sub in ("incoming", "experiences"):
            shutil.copytree(project / "data" / sub, copy / sub)
        new.write_parquet(copy / "incoming" / "new.parquet")
        t0 = time.perf_counter()
        report = intake(copy / "incoming", copy / "experiences", stream, settle=0)
        intake_s = time.perf_counter() - t0
        assert report.accepted, report.rejected
    new.write_parquet(project / "data" / "incoming" / "new.parquet")
    time.sleep(2.5)  # the intake leaves files modified in the last 2 s for the next run
    update_s, _ = measure([sys.executable, "flows/continual.py"], project)
    return update_s, intake_s


def fresh_copy(project: Path, name: str) -> Path:
    """A copy of a built project whose TAME checkpoints are gone, so a forced `tame` trains from
    scratch (it would resume, with nothing left to train) like the first run did."""
    dest = project.with_name(f"{project.name}-{name}")
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(project, dest, symlinks=True)
    for ckpt in (dest / "models" / "tame").glob("*.pt"):
        ckpt.unlink()
    return dest


def together(project: Path, stages: tuple[str, str]) -> dict[str, tuple[float, float]]:
    """Each stage alone, then both at once (each in its own copy of `project`, forced reruns):
    {stage: (seconds alone, seconds beside the other)}."""
    alone = {}
    for stage in stages:
        copy = fresh_copy(project, stage)
        alone[stage], _ = measure(repro(stage, copy, force=True), copy)
        shutil.rmtree(copy)
    copies = [fresh_copy(project, stage) for stage in stages]
    procs, t0 = [], time.perf_counter()
    for stage, copy in zip(stages, copies):
        procs.append(
            subprocess.Popen(
                repro(stage, copy, force=True),
                cwd=copy,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    ended: dict[str, float] = {}
    while len(ended) < len(procs):
        for stage, p in zip(stages, procs):
            if stage not in ended and p.poll() is not None:
                if p.returncode:
                    sys.exit(f"{stage} failed when run beside the other")
                ended[stage] = time.perf_counter() - t0
        time.sleep(0.2)
    for copy in copies:
        shutil.rmtree(copy, ignore_errors=True)
    return {s: (alone[s], ended[s]) for s in stages}


JOB_STAGES = ("baselines", "lingo", "tame", "retrieval")  # their jobs go through train.runner
NOT_RESULTS = ("time", "seconds", "rss", "run_id", "url")  # keys that differ run to run


def results_only(value):
    """A metrics file without its timings and run ids: what must be equal across runners."""
    if isinstance(value, dict):
        return {
            k: results_only(v) for k, v in value.items() if not any(w in k for w in NOT_RESULTS)
        }
    return [results_only(v) for v in value] if isinstance(value, list) else value


def runner_rows(project: Path) -> list[str]:
    """Each job stage forced in a copy per runner, 2 workers each: a markdown table."""
    import json

    from clflow.scaffold import update_params

    os.environ["CLFLOW_WORKERS"] = "2"  # 2 processes, or a LocalCluster of 2 workers
    timed, copies = {}, {}
    for runner in ("local", "dask"):
        copies[runner] = copy = fresh_copy(project, runner)
        update_params(copy, {"train": {"runner": runner}})
        for stage in (s for s in JOB_STAGES if s in stage_names(copy)):
            timed[runner, stage] = measure(repro(stage, copy, force=True), copy)
            print(f"  {runner:5s} {stage:10s} {timed[runner, stage][0]:7.1f} s", flush=True)
    rows = ["| stage | local, 2 processes | dask, 2-worker LocalCluster | dask / local | same "
            "metrics |", "|---|---|---|---|---|"]  # fmt: skip
    for stage in (s for s in JOB_STAGES if ("local", s) in timed):
        (lt, lm), (dt, dm) = timed["local", stage], timed["dask", stage]
        same = all(
            results_only(json.loads((copies["local"] / f).read_text()))
            == results_only(json.loads((copies["dask"] / f).read_text()))
            for f in (f"metrics/{stage}.json",)
            if (copies["local"] / f).exists()
        )
        rows.append(f"| {stage} | {lt:.1f} s, {lm:.0f} MB | {dt:.1f} s, {dm:.0f} MB | "
                    f"{dt / lt:.2f} | {'yes' if same else '**no**'} |")  # fmt: skip
    return rows


def sharing_rows(project: Path) -> list[tuple[str, str, str, bool]]:
    rows = []
    for stage, (alone, beside) in together(project, ("baselines", "tame")).items():
        ratio = alone / beside
        rows.append(
            (
                f"{stage} beside the other ({project.name}: {alone:.0f} s alone, {beside:.0f} s)",
                f"{ratio:.2f}x its speed alone",
                ">= 0.4x",
                ratio >= 0.4,
            )
        )
    return rows


def results_table(project: Path) -> list[str]:
    """The stream's headline rows from the stages' metrics files (mean ± std over the seeds)."""
    import json

    def m(stage: str) -> dict:
        return json.loads((project / "metrics" / f"{stage}.json").read_text())

    def acc(v: dict) -> str:
        return f"{v['avg_accuracy']:.3f} ± {v['avg_accuracy_std']:.3f}"

    rows = [
        f"| baselines: {k} | {acc(v)} | forgetting {v['forgetting']:.3f} |"
        for k, v in m("baselines").items()
    ]
    t = m("tame")
    rows.append(
        f"| TAME | {acc(t)} | detection F1 {t['detection_f1']:.2f}, selector "
        f"{t['selector_accuracy']:.3f}, {t['n_experts']:.1f} experts |"
    )
    for method, heads in m("lingo").items():
        rows += [f"| LingoCL {method}, {h} head | {acc(v)} | |" for h, v in heads.items()]
    r = m("retrieval")
    for method, v in r["augmented"].items():
        rows.append(
            f"| retrieval: {method} + k-NN vote | {acc(v['with_retrieval'])} | "
            f"alone {acc(v['alone'])} |"
        )
    rows += [f"| retrieval replay: {k} | {acc(v)} | |" for k, v in r["retrieval_replay"].items()]
    f = m("federated")
    rows.append(
        f"| federated prototypes (merged) | {f['merged_accuracy']:.3f} | central "
        f"{f['central_accuracy']:.3f}, each client alone "
        f"{f['local_only_accuracy_mean']:.3f}, novel classes {f['novel_accuracy']:.3f} |"
    )
    return ["| method | avg accuracy | |", "|---|---|---|", *rows]


def mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--skip-targets", action="store_true", help="growth table only")
    parser.add_argument(
        "--sharing-only",
        action="store_true",
        help="only step 3, on the fmnist-17.5k project a --workdir run left",
    )
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "benchmarks" / "scale.png")
    parser.add_argument("--workdir", type=Path, help="keep the projects here (default: temp)")
    parser.add_argument(
        "--runner",
        choices=["local", "dask"],
        default="local",
        help="dask: step 4 only (local beside a 2-worker Dask LocalCluster), on --sizes "
        "(default digits-1.8k)",
    )
    args = parser.parse_args()
    if args.runner == "dask" and "--sizes" not in sys.argv:
        args.sizes = ["digits-1.8k"]
    if any("fmnist" in s for s in args.sizes) and not FASHION_MNIST_DEBIAN.exists():
        sys.exit(f"Fashion-MNIST is not installed: `make bench-data` or `{FASHION_MNIST_INSTALL}`")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="clflow-scale-"))
    if args.sharing_only:
        print("| target | measured | goal | |\n|---|---|---|---|")
        for what, got, goal, ok in sharing_rows(work / "fmnist-17.5k"):
            print(f"| {what} | {got} | {goal} | {mark(ok)} |")
        return
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    print(
        f"bench/scale.py, {time.strftime('%Y-%m-%d')}, commit {commit}, "
        f"{os.cpu_count()} CPUs, work in {work}",
        flush=True,
    )

    results, projects = {}, {}
    for name in args.sizes:
        projects[name], results[name] = run_size(name, SIZES[name][1], work)
    if args.runner == "dask":
        for name in args.sizes:
            print(f"\n{name}: the job stages on each runner (forced reruns, 2 workers)\n")
            print("\n".join(runner_rows(projects[name])))
        return
    stages = list(next(iter(results.values())))
    fm = [n for n in results if n.startswith("fmnist")]

    print("\n| stage | " + " | ".join(results) + " | exponent (Fashion-MNIST) |")
    print("|---|" + "---|" * (len(results) + 1))
    for stage in stages:
        cells = [f"{results[n][stage][0]:.1f} s, {results[n][stage][1]:.0f} MB" for n in results]
        slope = (
            f"{exponent([SIZES[n][0] for n in fm], [results[n][stage][0] for n in fm]):.2f}"
            if len(fm) >= 2
            else "-"
        )
        print(f"| {stage} | " + " | ".join(cells) + f" | {slope} |")
    totals = {n: sum(t for t, _ in results[n].values()) for n in results}
    print("| **pipeline** | " + " | ".join(f"{totals[n]:.0f} s" for n in results) + " | |")
    plot(results, args.plot)
    print(f"\nplot: {args.plot.relative_to(ROOT) if args.plot.is_relative_to(ROOT) else args.plot}")

    if "fmnist-70k" in results:
        print("\nSplit-Fashion-MNIST (70k rows, default params, seeds 0 1 2):\n")
        print("\n".join(results_table(projects["fmnist-70k"])))
    if args.skip_targets or "fmnist-70k" not in results:
        return
    big, seeds = results["fmnist-70k"], 3
    update_s, intake_s = update_with_new_experience(projects["fmnist-70k"], 12_000)
    peak = max(m for _, m in big.values())
    rows = [
        (
            "whole pipeline, Split-Fashion-MNIST 70k",
            f"{totals['fmnist-70k'] / 60:.1f} min",
            "<= 15 min",
            totals["fmnist-70k"] <= 900,
        ),
        (
            "baselines per seed",
            f"{big['baselines'][0] / seeds:.0f} s",
            "<= 90 s",
            big["baselines"][0] / seeds <= 90,
        ),
        (
            "peak RSS, any stage",
            f"{peak:.0f} MB ({max(big, key=lambda s: big[s][1])})",
            "<= 2048 MB",
            peak <= 2048,
        ),
        (
            "continual update, new 12,000-row experience",
            f"{update_s:.0f} s",
            "<= 180 s",
            update_s <= 180,
        ),
        ("intake of that file", f"{intake_s:.1f} s", "<= 10 s", intake_s <= 10),
    ]
    small = "fmnist-17.5k" if "fmnist-17.5k" in results else None
    if small:
        speed = together(
            projects[small],
            {s: results[small][s][0] for s in results[small]},
            ("baselines", "tame"),
        )
        for stage, ratio in speed.items():
            rows.append(
                (
                    f"{stage} beside the other (17.5k rows)",
                    f"{ratio:.2f}x its speed alone",
                    ">= 0.4x",
                    ratio >= 0.4,
                )
            )
    print("\n| target | measured | goal | |\n|---|---|---|---|")
    for what, got, goal, ok in rows:
        print(f"| {what} | {got} | {goal} | {mark(ok)} |")


if __name__ == "__main__":
    main()
