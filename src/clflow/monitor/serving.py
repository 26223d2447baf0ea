"""`clflow serve`: a registered model behind MLflow's own scoring server, with the request checked
as sent and every answered request recorded (clflow.monitor.served) for the drift step.

MLflow's server (its `/ping`, `/health`, `/version`, `/invocations`, input schema and HTTP 400 on
bad rows) is reused as is; only `/invocations` gets a first look at the raw JSON. MLflow turns
the JSON into the signature's float32 before the model runs, so `true` and `"1"` would arrive as
1.0, and its JSON parser fails (HTTP 500) on very deep nesting. Here a request is refused with
HTTP 400 and one line naming the row and the feature before that happens. Refused requests are
not recorded: only what the model answered is traffic.

A text stream's model takes `{"text": ["...", ...]}`: a document that is not a string, is empty
or is too long is refused naming its row, the rest reach MLflow's server as a `text` column, and
the log records each document beside its embedding (what `clflow drift` scores).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clflow.streams.text import TEXT

MAX_REQUEST_BYTES = 64 << 20  # a batch of rows to score, not a data set
MAX_DEPTH = 32  # {"inputs": [[...]]} is 3 levels deep
ROW_KEYS = ("inputs", "instances")


_ESCAPED = re.compile(rb"\\.", re.DOTALL)  # a backslash and the byte it escapes
_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_OPENS = np.frombuffer(b"[{", dtype=np.uint8)


def _depth(data: bytes) -> int:
    """The deepest nesting of `[` and `{` outside strings (no parsing, no recursion; in C:
    a request is read on the server's event loop)."""
    brackets = _STRING.sub(b"", _ESCAPED.sub(b"", data)).translate(None, _NOT_BRACKET)
    steps = np.where(np.isin(np.frombuffer(brackets, dtype=np.uint8), _OPENS), 1, -1)
    return int(np.cumsum(steps).max(initial=0))


def _value_problem(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return f"{where}: {json.dumps(value)} is a boolean, not a number"
    if isinstance(value, str):
        return f"{where}: {json.dumps(value)[:40]} is text, not a number"
    if isinstance(value, (list, dict)):
        return f"{where}: a {'list' if isinstance(value, list) else 'JSON object'}, not a number"
    return ""


_NUMBERS = {int, float, type(None)}
# {"inputs": [[numbers or null, ...], ...]} (or "instances"), the usual request: one regular
# expression in C tells it apart (at most 3 deep, no text, no booleans) without a parse, as
# MLflow parses it anyway. Every part is unambiguous (a row cannot hold brackets, rows after
# the first start with a comma), so a request that fails to match is rejected in linear time.
_ROW = rb"\[[-0-9eE+.,\snul]*\]"
_NUMBER_ROWS = re.compile(
    rb'\s*\{\s*"(?:inputs|instances)"\s*:\s*\[\s*(?:%s\s*(?:,\s*%s\s*)*)?\]\s*\}\s*' % (_ROW, _ROW)
)


def _values(row: Any) -> list:
    return row if isinstance(row, list) else [row]


def _rows(body: dict) -> list | None:
    """The rows of a request in one of MLflow's formats, or None when it has none we read."""
    for key in ROW_KEYS:
        if key in body:
            return body[key] if isinstance(body[key], list) else None
    split = body.get("dataframe_split")
    if isinstance(split, dict) and isinstance(split.get("data"), list):
        return split["data"]
    records = body.get("dataframe_records")
    if isinstance(records, list):
        return [list(r.values()) if isinstance(r, dict) else r for r in records]
    return None


def _text_problem(body: dict, max_chars: int) -> str:
    """Why a {"text": [...]} request cannot be scored ("" when it can): the model's own check
    (`clflow.tame.pyfunc.texts`), except that a lone string is not taken for a list of one."""
    from clflow.tame.pyfunc import InputError, texts

    if set(body) == {TEXT} and not isinstance(body[TEXT], list):
        return f'"{TEXT}" must be a list of strings'
    try:
        texts(body, max_chars)
    except InputError as err:
        return err.line()
    return ""


def read_request(data: bytes, max_text_chars: int | None = None) -> tuple[str, bytes]:
    """(why the JSON request cannot be scored as sent, or ""; the request as MLflow's server
    reads it). Too large, nested too deep, a value that is not a number (null stays: the model
    names it as missing); for a text model (`max_text_chars` given), a document that is not
    one. {"text": [...]} becomes a `text` column."""
    if len(data) > MAX_REQUEST_BYTES:
        return f"request of {len(data):,} bytes, over the {MAX_REQUEST_BYTES:,} byte limit", data
    if _NUMBER_ROWS.fullmatch(data):
        return "", data
    if _depth(data) > MAX_DEPTH:
        return f"JSON nested more than {MAX_DEPTH} levels deep: send rows of numbers", data
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"not JSON ({err})", data
    if isinstance(body, dict) and TEXT in body:
        if max_text_chars is None:
            return 'this model takes rows of numbers ({"inputs": [[...]]}), not text', data
        problem = _text_problem(body, max_text_chars)
        rows = [[t] for t in body[TEXT]] if not problem else []
        return problem, json.dumps({"dataframe_split": {"columns": [TEXT], "data": rows}}).encode()
    if max_text_chars is not None:  # another format: the model checks its text column
        return "", data
    rows = (_rows(body) if isinstance(body, dict) else None) or []
    if _NUMBERS.issuperset({type(v) for row in rows for v in _values(row)}):
        return "", data  # every value a number or null: the common case, checked in one pass
    for i, row in enumerate(rows):
        for j, value in enumerate(_values(row)):
            problem = "" if value is None else _value_problem(value, f"row {i}, feature {j}")
            if problem:
                return problem, data
    return "", data


def request_problem(data: bytes, max_text_chars: int | None = None) -> str:
    """Why a JSON request cannot be scored as sent ("" when it can): see `read_request`."""
    return read_request(data, max_text_chars)[0]


def registered_version(model_uri: str) -> tuple[str, str]:
    """(name, version) of a `models:/NAME@ALIAS` or `models:/NAME/VERSION` URI, resolved once at
    start: the served model stays that version even if the alias moves."""
    from mlflow import MlflowClient

    ref = model_uri.removeprefix("models:/")
    if ref == model_uri:  # runs:/..., a path: not in the registry
        return model_uri, ""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, str(MlflowClient().get_model_version_by_alias(name, alias).version)
    name, _, version = ref.partition("/")
    return name, version


class RecordingModel:
    """A loaded pyfunc model that hands every answered batch to a Recorder."""

    def __init__(self, model, recorder):
        self._model, self._recorder = model, recorder
        self.metadata = model.metadata
        self._skipped = False

    def predict(self, data, params=None):
        from clflow.tame.pyfunc import rows

        out = self._model.predict(data, params=params)
        if not isinstance(out, pd.DataFrame) or not {"label", "expert"} <= set(out.columns):
            if not self._skipped:  # not a TAME model's answer: serve it, record nothing
                logging.getLogger(__name__).warning("answers lack label/expert: not recorded")
                self._skipped = True
            return out
        n = len(out)
        inner = self._model.unwrap_python_model()
        if getattr(inner, "encoder", None) is not None:  # documents: their (remembered) embeddings
            X, text = inner.features(data), list(data[TEXT])
        else:
            X, text = np.asarray(rows(data), dtype=np.float32).reshape(n, -1), None
        # numpy columns: a pandas Series costs ~10 µs more each on the way into the recorder
        confidence = out["confidence"].to_numpy() if "confidence" in out else np.full(n, np.nan)
        labels, experts = out["label"].to_numpy(), out["expert"].to_numpy()
        self._recorder.record(X, labels, experts, confidence, text)
        return out

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def app(model_uri: str, recorder_for=None):
    """MLflow's scoring app for `model_uri`, with `/invocations` checking the raw request first;
    `recorder_for(name, version)`, if given, makes the Recorder of what the model answers."""
    import asyncio

    from fastapi.responses import Response
    from mlflow.pyfunc import scoring_server
    from starlette.routing import Route

    model = scoring_server.load_model_with_mlflow_config(model_uri)
    served = scoring_server.init(model)
    inner = model.unwrap_python_model()  # a text model knows its limit (None: feature rows)
    max_text_chars = inner.max_text_chars if getattr(inner, "encoder", None) is not None else None
    schema = model.metadata.get_input_schema()
    recorder = recorder_for(*registered_version(model_uri)) if recorder_for else None
    scored = RecordingModel(model, recorder) if recorder else model

    async def invocations(request) -> Response:  # a Starlette Route: no annotation to resolve
        data = await request.body()
        content_type = request.headers.get("content-type") or ""
        problem = ""
        if content_type.startswith("application/json"):
            problem, data = read_request(data, max_text_chars)
        if problem:
            body = {"error_code": "BAD_REQUEST", "message": problem}
            return Response(json.dumps(body), status_code=400, media_type="application/json")
        result = await asyncio.to_thread(
            scoring_server.invocations, data, content_type, scored, schema
        )
        return Response(result.response, status_code=result.status, media_type=result.mimetype)

    checked = without_internals(invocations)
    # the first route that matches wins: this one, ahead of MLflow's own /invocations
    served.router.routes.insert(0, Route("/invocations", checked, methods=["POST"]))
    if recorder is not None:
        close_on_shutdown(served, recorder)
    return served


# an absolute path (the server's install, its model directory): never part of an answer
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][\w.@+-]+){2,}")


def public_message(message: str) -> str:
    """The first line of an error message, without server paths and at most 300 characters;
    for MLflow's "Failed to predict data '<the rows>'. \nError: <why>", the why."""
    message = message.rpartition("\nError: ")[2]
    first = next((line for line in message.strip().splitlines() if line.strip()), "bad request")
    return _PATH.sub("<path>", first.strip())[:300]


def without_internals(endpoint):
    """`endpoint` with MLflow's errors answered as {error_code, message}: one line, no
    `stack_trace` (MLflow puts the server's traceback, install paths and all, in its 400s)."""
    import functools

    from fastapi.responses import Response
    from mlflow.exceptions import MlflowException

    @functools.wraps(endpoint)
    async def wrapper(request):
        try:
            return await endpoint(request)
        except MlflowException as err:
            body = {"error_code": err.error_code, "message": public_message(err.message)}
            return Response(
                json.dumps(body), status_code=err.get_http_status_code(),
                media_type="application/json",
            )  # fmt: skip

    return wrapper


def close_on_shutdown(served, recorder) -> None:
    """Write the recorder's last rows when the server shuts down. In the app's lifespan, since
    uvicorn re-raises SIGTERM once it has stopped: code after `uvicorn.run` never runs then."""
    import contextlib

    inner = served.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with inner(app) as state:
            try:
                yield state
            finally:
                recorder.close()

    served.router.lifespan_context = lifespan


SETTINGS_ENV = "CLFLOW_SERVE_SETTINGS"  # a worker's settings, from the process that starts it


def _die_with_parent() -> None:
    """Ask Linux to send this worker SIGTERM when its parent dies (even by SIGKILL): it then
    stops as if told to, writing its last rows, instead of serving on, orphaned."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (AttributeError, OSError):  # not Linux: workers outlive a killed parent there
        pass


def _recorder_maker(record: Path | None, rotation):
    from clflow.monitor.served import Recorder, Rotation

    if record is None:
        return None
    return lambda name, version: Recorder(record, name, version, rotation or Rotation())


def worker_app():
    """The app of one worker process of `serve(workers=N)`: uvicorn imports it by name in each
    worker, so its settings come from the parent through the environment."""
    from clflow.monitor.served import Rotation
    from clflow.tracking.store import use_store

    _die_with_parent()
    settings = json.loads(os.environ[SETTINGS_ENV])
    use_store(settings["store"])
    record = Path(settings["record"]) if settings["record"] else None
    return app(settings["model_uri"], _recorder_maker(record, Rotation(**settings["rotation"])))


def serve(
    model_uri: str,
    host: str,
    port: int,
    record: Path | None,
    rotation=None,
    workers: int = 1,
) -> None:
    """Serve until stopped (Ctrl-C, SIGTERM), recording answered rows under `record` (None: not
    at all); the rows not yet written go to a last segment as the server shuts down.

    With `workers` > 1, uvicorn runs that many processes on one socket, each with the model
    and its own recorder (segment names carry the process id). The alias is resolved here,
    once, so every worker serves the same version."""
    import dataclasses

    import mlflow
    import uvicorn

    from clflow.monitor.served import Rotation

    if workers == 1:
        served = app(model_uri, _recorder_maker(record, rotation))
        uvicorn.run(served, host=host, port=port, log_level="warning")
        return
    name, version = registered_version(model_uri)
    settings = {
        "model_uri": f"models:/{name}/{version}" if version else model_uri,
        "store": mlflow.get_tracking_uri(),
        "record": str(record) if record is not None else "",
        "rotation": dataclasses.asdict(rotation or Rotation()),
    }
    os.environ[SETTINGS_ENV] = json.dumps(settings)
    uvicorn.run(
        "clflow.monitor.serving:worker_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
    )
