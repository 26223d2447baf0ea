"""`clflow` command line: inspect what the pipeline built, manage the model registry.

clflow retrieve --bank models/retrieval/bank --query data/stream/test.parquet -k 5
clflow registry list                  # versions, aliases, metrics, decisions
clflow registry promote 3             # make version 3 the champion by hand
clflow registry rollback              # restore the previous champion
clflow new-experience data/incoming/rotated.parquet --rotate 20   # a demo experience file
clflow lineage models:/clflow-tame@champion    # which data, code and runs made the champion
clflow lineage --data data/experiences/0000-rotated.parquet   # which versions used this file
clflow report                         # the metrics that matter, one stage per block
clflow links                          # the MLflow UI's training runs and model, direct links
clflow team up                        # team mode: PostgreSQL + MLflow server, a DVC remote
"""

from __future__ import annotations

import clflow.ops.quiet  # noqa: F401  (first: telemetry off before MLflow or Prefect load)

# isort: split
import argparse
import sys
from dataclasses import replace
from pathlib import Path

import polars as pl

from clflow.errors import ClflowError, StreamError, cli_errors, refusals_named
from clflow.ops.entry import count, finite, positive, positive_int, probability, window_rows


def load_queries(path: Path, limit: int) -> pl.DataFrame:
    """Query rows from a parquet file with an `x` column (stream contract); y, if present, is
    shown."""
    from clflow.streams.schema import read_features, read_frame

    df = read_frame(path, {"x"}, empty="no rows to query").head(limit)
    return df.with_columns(pl.Series("x", list(read_features(df, path))))


def retrieve(args: argparse.Namespace) -> None:
    import numpy as np

    from clflow.retrieval import DemoBank

    bank = DemoBank.load(args.bank)
    if args.text:  # documents: embedded as a text stream's rows are (the shipped encoder)
        X = query_embeddings(args.text, args.encoder, bank.dim)
        queries = pl.DataFrame({"query_text": args.text})
    elif args.query:
        queries = load_queries(Path(args.query), args.limit)
        X = np.stack(queries["x"].to_list())
    else:
        raise ClflowError("give --query FILE or --text 'a document'", field="--query")
    k = min(args.k, len(bank))  # more neighbours than the bank holds is the whole bank
    scores, ids, labels = bank.search(X, k)
    meta = bank.meta
    extra = [c for c in meta.columns if c not in ("id", "label")]
    score_name = "similarity" if bank.config.metric == "ip" else "sq_distance"
    rows = []
    for q in range(len(X)):
        for rank in range(k):
            if ids[q, rank] < 0:
                continue
            row = {
                "query": q,
                "rank": rank + 1,
                "id": int(ids[q, rank]),
                "label": int(labels[q, rank]),
                score_name: round(float(scores[q, rank]), 4),
            }
            if "y" in queries.columns:
                row["query_label"] = int(queries["y"][q])
            row.update({c: meta[c][int(ids[q, rank])] for c in extra})
            rows.append(row)
    if args.text:  # one block per query: its text, then its demonstrations
        names = class_names(Path(args.classes))
        for q, text in enumerate(args.text):
            print(f"query {q}: {one_line(text)}")
            for row in (r for r in rows if r["query"] == q):
                shown = one_line(row.get("text", ""), 100)
                label = names[row["label"]] if row["label"] < len(names) else row["label"]
                print(f"  {row['rank']}. {score_name} {row[score_name]:.3f}  {label}: {shown}")
        return
    table = pl.DataFrame(rows)
    with pl.Config(
        tbl_rows=len(rows), tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True
    ):
        print(table)


def class_names(path: Path) -> list[str]:
    """The stream's class names, or [] where there is no classes.json (labels print as numbers)."""
    from clflow.streams.schema import read_class_names

    return read_class_names(path) if path.exists() else []


def one_line(text: str, width: int = 200) -> str:
    """A document on one line, cut to `width` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def query_embeddings(texts: list[str], encoder_path: str, dim: int):
    """The query documents embedded with the text stream's encoder, checked against the bank."""
    from clflow.sentence import encode, load_encoder

    for i, text in enumerate(texts):
        if not text.strip():
            raise ClflowError(f"query {i}: empty text", field="--text")
    X = encode(load_encoder(encoder_path or None), texts, desc="embed queries")
    if X.shape[1] != dim:
        raise ClflowError(
            f"the encoder gives {X.shape[1]} features, the bank holds {dim}: not a bank of a "
            "text stream's raw embeddings (retrieval.embedding: raw)",
            field="--text",
        )
    return X


def registry(args: argparse.Namespace) -> None:
    uri = store_uri(args)
    with refusals_named(uri):  # a 401 or 403 names this server, not the environment's
        _registry(args, uri)


def _registry(args: argparse.Namespace, uri: str) -> None:
    from clflow.tracking.registry import Registry

    reg = Registry(args.model, uri)
    if args.action == "promote":
        if args.version is None:
            raise StreamError("which version? e.g. `clflow registry promote 3`", field="version")
        replaced = reg.promote(args.version, args.reason or "promoted by hand")
        done = {
            None: "is the champion (there was none)",
            str(args.version): "was already the champion: nothing changed",
        }.get(replaced, f"is the champion, replacing version {replaced}")
        print(f"{args.model}: version {args.version} {done}")
    elif args.action == "rollback":
        restored = reg.rollback(args.reason or "rolled back by hand")
        print(f"{args.model}: version {restored} is the champion again")
    rows = reg.table()
    if not rows:
        print(f"{args.model}: no versions in {reg.uri}")
        return
    with pl.Config(
        tbl_rows=len(rows),
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
        fmt_str_lengths=80,
    ):
        print(pl.DataFrame(rows))


def team(args: argparse.Namespace) -> None:
    from clflow.ops import remote as dvc_remote
    from clflow.ops import team as services

    project = Path(args.project).resolve()
    if args.action == "pull":
        if args.remote:  # this workspace only: .dvc/config.local, git status stays clean
            dvc_remote.configure_remote(project, args.remote, args.endpoint_url, local=True)
        print(dvc_remote.pull(project))
        return
    home = Path(args.dir) if args.dir else project / ".team"
    crew = services.Team.load(home, pg_port=args.pg_port, mlflow_port=args.mlflow_port)
    if args.action == "up":
        if (project / "params.yaml").exists():  # the experiment and model the team shares
            from clflow.config import load_params

            params = load_params(project / "params.yaml")
            crew = replace(
                crew, experiment=params.tracking.experiment, model=params.registry.model_name
            )
        lines = services.up(replace(crew, host=args.host or crew.host), project, args.remote,
                            args.endpoint_url)  # fmt: skip
    elif args.action == "down":
        lines = services.down(crew)
    elif args.action == "user":
        lines = team_user(crew, args)
    else:
        lines = [f"{name}: {state}" for name, state in services.status(crew).items()]
    print("\n".join(lines))


def team_user(crew, args: argparse.Namespace) -> list[str]:
    """`clflow team user add|remove|list [NAME] [--role R]` (as the team's MLflow admin)."""
    from clflow.ops import team as services

    if args.user_action != "list" and not args.name:
        raise StreamError(f"which user? e.g. `clflow team user {args.user_action} alice`",
                          field="name")  # fmt: skip
    if args.user_action == "add":
        secret = services.add_user(crew, args.name, args.role)
        return [
            f"# {args.name}: {args.role} on experiment {crew.experiment} and model {crew.model}",
            f"# their password is in {secret} (mode 0600): hand it over, then they export",
            f"export MLFLOW_TRACKING_USERNAME={args.name}",
            f'export MLFLOW_TRACKING_PASSWORD="$(cat {secret})"',
        ]
    if args.user_action == "remove":
        services.remove_user(crew, args.name)
        return [f"# {args.name} removed (their runs and versions keep their name)"]
    return [f"{row['user']}\t{row['role']}" for row in services.list_users(crew)]


def store_uri(args: argparse.Namespace) -> str:
    """--uri, else MLFLOW_TRACKING_URI, else the project's mlflow.db; checked to answer."""
    from clflow.tracking.store import tracking_uri
    from clflow.util.services import check_tracking_uri

    uri = args.uri or tracking_uri(Path(args.project))
    check_tracking_uri(uri)  # a server that is down: one line in bounded time
    return uri


def serve(args: argparse.Namespace) -> None:
    from clflow.monitor.served import Rotation
    from clflow.monitor.serving import serve as run
    from clflow.tracking.store import use_store
    from clflow.util.parallel import cpu_budget

    use_store(store_uri(args))  # the registry the model URI names
    args.model_uri = args.model_option or args.model_uri
    record = None if args.no_record else Path(args.project) / args.record
    rotation = Rotation(
        int(args.segment_mb * 2**20), args.segment_seconds, int(args.max_mb * 2**20)
    )
    where = f", recording to {record}" if record else ""
    args.workers = args.workers or cpu_budget()  # affinity and cgroup quota, as learners
    print(
        f"serving {args.model_uri} on http://{args.host}:{args.port}/invocations"
        f" ({args.workers} worker{'s' * (args.workers > 1)}){where}",
        flush=True,
    )
    run(args.model_uri, args.host, args.port, record, rotation, args.workers)


def drift(args: argparse.Namespace) -> None:
    import json

    from clflow.monitor.check import check
    from clflow.tracking.store import use_store

    use_store(store_uri(args))  # the registry holding the served versions' references
    found = check(Path(args.project) / args.served, args.window, args.since, args.alpha)
    if args.json:
        print(json.dumps(found.as_dict()))
        return
    report, p = found.report, found.report.p_values
    span = found.as_dict()
    rows = [
        (
            "drift",
            "yes" if report.drift else "no",
            f"p = {report.p_value:.3g} (alpha {args.alpha})",
        ),
        ("MMD²", f"{report.score:.4g}", f"p = {p['mmd2']:.3g}"),
        ("routing shift", f"{report.routing_shift:.3f}", f"p = {p['routing_shift']:.3g}"),
        ("new-task share", f"{report.new_task_share:.3f}", f"p = {p['new_task_share']:.3g}"),
        ("window", f"{report.window} rows", f"{span['start']} .. {span['end']}"),
        ("model", f"models:/{found.window.model}/{report.model_version}", ""),
    ]
    print("\n".join(f"{a:<15} {b:<22} {c}".rstrip() for a, b, c in rows))


def lineage(args: argparse.Namespace) -> None:
    import json

    from clflow.tracking.lineage import Lineage, data_digest

    if (args.ref is None) == (args.data is None):
        raise ClflowError("give a model/run reference or --data, not both", field="lineage")
    store = Lineage(store_uri(args), args.model)
    if args.data is not None:
        digest = data_digest(args.data, Path(args.project))
        found = store.trained_on(digest)
        if args.json:
            print(json.dumps([{**c.as_dict(), "matched": hit} for c, hit in found], indent=2))
            return
        if not found:
            print(f"no version of {args.model} was trained on {digest}")
        for chain, hit in found:
            decision = chain.version_tags.get("clflow.decision", "")
            aliases = f" @{', @'.join(chain.aliases)}" if chain.aliases else ""
            print(f"models:/{chain.model}/{chain.version}{aliases}  {decision:<9} {hit}")
        return
    chains = store.chain(args.ref)
    if args.json:
        print(json.dumps([c.as_dict() for c in chains], indent=2))
        return
    for i, chain in enumerate(chains):
        print("\n" * (i > 0) + "\n".join(f"{k:<12} {v}" for k, v in chain.rows()))


def iso_time(text: str):
    """argparse type: an ISO-8601 time (UTC unless it names a zone)."""
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO-8601 time such as 2026-12-06T10:00:00Z: {text!r}"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def width(text: str) -> int:
    """argparse type: a terminal width, 40 to 1000 columns."""
    value = int(text)
    if not 40 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be 40 to 1000 columns, got {value}")
    return value


def report(args: argparse.Namespace) -> None:
    from clflow.reporting import read_metrics
    from clflow.reporting import report as render

    found = read_metrics(args.metrics) if Path(args.metrics).is_dir() else {}
    if not found:
        raise ClflowError("no metrics/<stage>.json here: run the pipeline first", file=args.metrics)
    if args.stage:
        missing = sorted(set(args.stage) - set(found))
        if missing:
            raise ClflowError(
                f"no metrics for {', '.join(missing)}", file=args.metrics, field="--stage"
            )
        found = {s: found[s] for s in args.stage}
    print(render(found, args.width))


def links(args: argparse.Namespace) -> None:
    """Print the MLflow UI's direct links to the training runs and the registered model."""
    from clflow.config import load_params
    from clflow.tracking.store import experiment_id, ui_links

    params = load_params(args.params) if Path(args.params).exists() else None
    experiment = params.tracking.experiment if params else "clflow"
    model = params.registry.model_name if params else "clflow-tame"
    found = ui_links(experiment_id(experiment), model)
    print(f"MLflow training runs: {found.get('runs', '(none yet: make run logs the first)')}")
    print(f"MLflow model {model}: {found['models']}")


def tracked_out(path: Path, project: Path = Path(".")) -> str | None:
    """The DVC out (or accepted-experience folder) of `project` that holds `path`, if any."""
    from clflow.ops.dvcrun import stage_outs

    if not (project / "dvc.yaml").exists():
        return None
    target = path.resolve()
    guarded = [*stage_outs(project), "data/experiences"]
    for out in guarded:
        root = (project / out).resolve()
        if target == root or root in target.parents:
            return out
    return None


def new_experience(args: argparse.Namespace) -> None:
    from clflow.streams import load_stream
    from clflow.streams.demo import example_experience
    from clflow.util.io import write_parquet

    out = Path(args.out)
    held = tracked_out(out)
    if held:  # never, even with --force: that data belongs to DVC
        raise ClflowError(f"inside {held}, which the pipeline owns; use data/incoming/", file=out)
    if out.is_dir():
        raise ClflowError("is a directory; give a file name ending in .parquet", file=out)
    if out.exists() and not args.force:
        raise ClflowError("exists; pass --force to overwrite it", file=out)
    df = example_experience(
        load_stream(args.stream),
        rotate=args.rotate,
        permute=args.permute,
        seed=args.seed,
        limit=args.limit,
    )
    if not df.height:
        raise ClflowError("no rows to write (check --limit and the stream)", file=out)
    try:
        write_parquet(out, df)
    except OSError as exc:
        raise ClflowError(f"cannot write: {exc.strerror}", file=out) from None
    print(f"wrote {out}: {df.height} rows")


def store_options(parser: argparse.ArgumentParser, model: bool = True) -> None:
    """--model, --project and --uri: which registered model in which MLflow store."""
    if model:
        parser.add_argument(
            "--model", default="clflow-tame", help="registered model name (default clflow-tame)"
        )
    parser.add_argument(
        "--project", default=".", help="project whose mlflow.db holds the registry (default .)"
    )
    parser.add_argument(
        "--uri",
        help="tracking/registry URI (default MLFLOW_TRACKING_URI or the project's mlflow.db)",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="clflow", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("retrieve", help="print the nearest demonstrations of query rows")
    r.add_argument(
        "--bank", required=True, help="bank directory (index.faiss, meta.parquet, bank.json)"
    )
    r.add_argument("--query", help="parquet file with an `x` list column (e.g. test.parquet)")
    r.add_argument(
        "--text",
        action="append",
        help="a query document (repeatable), for a text stream's bank: shows each demonstration's "
        "text, label and similarity",
    )
    r.add_argument(
        "--encoder", default="", help="sentence-transformers directory (default: shipped MiniLM)"
    )
    r.add_argument(
        "--classes",
        default="data/stream/classes.json",
        help="class names for the labels (default: the prepared stream's)",
    )
    r.add_argument(
        "-k",
        type=positive_int,
        default=5,
        help="neighbours per query (default 5; capped at the bank)",
    )
    r.add_argument(
        "--limit", type=positive_int, default=5, help="query at most this many rows (default 5)"
    )
    r.set_defaults(func=retrieve)
    g = sub.add_parser(
        "registry", help="list, promote or roll back versions of the registered model"
    )
    g.add_argument("action", choices=["list", "promote", "rollback"])
    g.add_argument("version", nargs="?", help="version to promote")
    store_options(g)
    g.add_argument("--reason", help="recorded as the version's clflow.reason tag")
    g.set_defaults(func=registry)
    li = sub.add_parser(
        "lineage",
        help="model version -> runs -> commit -> data and experience files -> decision",
        description="Print the chain behind a model version, an MLflow run or a Prefect flow "
        "run; with --data, the model versions trained on a file or data version.",
    )
    li.add_argument(
        "ref",
        nargs="?",
        help="models:/NAME@ALIAS, models:/NAME/VERSION, an MLflow run id or a Prefect flow-run id",
    )
    li.add_argument(
        "--data", help="a file (its SHA-256), a DVC-tracked folder (its md5) or a hex digest"
    )
    li.add_argument("--json", action="store_true", help="machine-readable output")
    store_options(li)
    li.set_defaults(func=lineage)
    sv = sub.add_parser(
        "serve", help="serve a registered model (MLflow's scoring server, requests checked as sent)"
    )
    sv.add_argument(
        "model_uri", nargs="?", default="models:/clflow-tame@champion",
        help="default models:/clflow-tame@champion",
    )  # fmt: skip
    sv.add_argument("--model", dest="model_option", help="the model URI, as an option")
    sv.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback only)")
    sv.add_argument("--port", type=positive_int, default=5001, help="default 5001")
    sv.add_argument(
        "--project", default=".", help="project whose mlflow.db holds the registry (default .)"
    )
    sv.add_argument("--uri", help="registry URI (default MLFLOW_TRACKING_URI or the project's)")
    sv.add_argument(
        "--record", default="data/served", help="served-traffic log, in the project (default "
        "data/served): parquet segments that `clflow drift` reads",
    )  # fmt: skip
    sv.add_argument("--no-record", action="store_true", help="serve without recording")
    sv.add_argument(
        "--workers", type=positive_int,
        help="server processes, each with the model (default: one per CPU this process may use)",
    )  # fmt: skip
    sv.add_argument("--segment-mb", type=positive, default=4.0, help="segment size (default 4)")
    sv.add_argument(
        "--segment-seconds", type=positive, default=60.0,
        help="write a segment at least this often while traffic comes (default 60)",
    )  # fmt: skip
    sv.add_argument(
        "--max-mb", type=positive, default=256.0,
        help="keep at most this much of the log; the oldest segments go (default 256)",
    )  # fmt: skip
    sv.set_defaults(func=serve)
    dr = sub.add_parser(
        "drift", help="is the served traffic drifting from what the model learnt? (no labels)",
        description="Score the newest served rows against the reference of the model version "
        "that answered them: a two-sample MMD test on the features, the routing shift and the "
        "share of rows far from every expert's buffer. Exits 0 whether or not it finds drift.",
    )  # fmt: skip
    dr.add_argument("--served", default="data/served", help="log directory (default data/served)")
    dr.add_argument("--window", type=window_rows, default=200, help="rows (default 200)")
    dr.add_argument("--since", type=iso_time, help="only rows answered after this ISO time")
    dr.add_argument(
        "--alpha", type=probability, default=0.01,
        help="false-alarm rate of one window (default 0.01)",
    )  # fmt: skip
    dr.add_argument("--json", action="store_true", help="one JSON line")
    store_options(dr, model=False)  # the log names the model that answered
    dr.set_defaults(func=drift)
    tm = sub.add_parser(
        "team", help="team mode: PostgreSQL + MLflow server on loopback, a DVC remote",
        description="up: start PostgreSQL and `mlflow server` on it (artifacts proxied), set the "
        "DVC remote, print the exports; down: stop both (the data stays); status; pull: fetch "
        "the outs dvc.lock names from the remote (a fresh clone then retrains nothing).",
    )  # fmt: skip
    tm.add_argument("action", choices=["up", "down", "status", "pull", "user"])
    tm.add_argument(
        "user_action",
        nargs="?",
        choices=["add", "remove", "list"],
        help="user: add NAME --role R, remove NAME, list (as the MLflow admin)",
    )
    tm.add_argument("name", nargs="?", help="user: the teammate's user name")
    tm.add_argument(
        "--role",
        choices=["viewer", "member", "maintainer"],
        default="member",
        help="user add: viewer reads; member logs runs and registers versions; "
        "maintainer also moves `champion` (default member)",
    )
    tm.add_argument(
        "--host",
        help="up: the MLflow server's address (default 127.0.0.1; any "
        "other is reached through a TLS proxy: docs/how-to/team-setup.md)",
    )
    tm.add_argument("--project", default=".", help="the clflow project (default .)")
    tm.add_argument("--dir", help="where the team's data lives (default PROJECT/.team)")
    tm.add_argument("--pg-port", type=positive_int, help="PostgreSQL port (default 5433)")
    tm.add_argument("--mlflow-port", type=positive_int, help="MLflow server port (default 5050)")
    tm.add_argument(
        "--remote", help="DVC remote URL: a directory or s3://bucket/path (up: default "
        "DIR/dvc-remote when the project has none; pull: this workspace only)",
    )  # fmt: skip
    tm.add_argument("--endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    tm.set_defaults(func=team)
    rp = sub.add_parser("report", help="the metrics that matter, one stage per block")
    rp.add_argument("--metrics", default="metrics", help="metrics directory (default metrics)")
    rp.add_argument("--stage", action="append", help="only this stage (repeatable)")
    rp.add_argument("--width", type=width, default=100, help="columns, 40 to 1000 (default 100)")
    rp.set_defaults(func=report)
    lk = sub.add_parser(
        "links", help="the MLflow UI's links to the training runs and the model (training view)"
    )
    lk.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    lk.set_defaults(func=links)
    n = sub.add_parser(
        "new-experience", help="write a demo experience file (a shifted copy of the stream's rows)"
    )
    n.add_argument("out", help="parquet file to write, e.g. data/incoming/rotated.parquet")
    n.add_argument("--stream", default="data/stream", help="stream directory (default data/stream)")
    n.add_argument("--rotate", type=finite, default=0.0, help="rotate images by this many degrees")
    n.add_argument("--permute", action="store_true", help="permute the pixels (a new domain)")
    n.add_argument("--limit", type=count, default=600, help="rows (default 600; 0 = all)")
    n.add_argument("--seed", type=count, default=0)
    n.add_argument("--force", action="store_true", help="overwrite an existing file")
    n.set_defaults(func=new_experience)
    args = parser.parse_args(argv)
    cli_errors(args.func)(args)


if __name__ == "__main__":
    sys.exit(main())
