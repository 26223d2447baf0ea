"""Typed `params.yaml`: one pydantic model per section, unknown keys rejected.

A typo stops every stage with one line naming the key and the nearest valid one.
Every number is finite and within documented bounds (docs/concepts/parameters.md), so a
careless value cannot run for days or train to chance with exit 0; the file itself
is capped (size, YAML aliases) before anything reads it into memory.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clflow.errors import ConfigError
from clflow.streams.sources import FILE_SOURCES, PACKAGED_SOURCES, SOURCES

MAX_BYTES = 1 << 20  # params.yaml is a page of settings, not data
MAX_ALIASES = 100  # YAML aliases (`*name`): a few are handy, thousands are a "billion laughs"
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # what numpy and torch accept as a seed
Name = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$")
]


class Section(BaseModel):
    # inf and NaN are refused everywhere: `train.lr: .inf` would train to chance, exit 0
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )


class StreamConfig(Section):
    """How `prepare` builds the stream (see DESIGN.md, stream contract)."""

    source: Literal[SOURCES] = Field(  # type: ignore[valid-type]
        "digits",
        description="the data set, or `parquet` / `text` for a stream directory of your own "
        "(`text`: documents, embedded by `prepare` with the sentence encoder)",
    )
    path: str = Field(
        "",
        description="local directory of the file-based sources (mnist, cifar10, parquet, text)",
    )
    max_text_chars: int = Field(
        2000,
        ge=1,
        le=1_000_000,
        description="text streams: longest document accepted, in characters (MiniLM reads "
        "about the first 1,000)",
    )
    experiences: int = Field(
        5, ge=1, le=1000, description="class groups (class-incremental) or distinct domains"
    )
    tasks: list[int] | None = Field(
        None,
        max_length=10_000,
        description="task id of each experience in order; recurring ids reuse a task",
    )
    seed: Seed = Field(0, description="class order, permutations and splits")
    test_size: float = Field(0.3, gt=0.0, lt=1.0, description="share of rows held out for testing")
    rotation_step: float = Field(
        30.0, ge=-360, le=360, description="degrees between consecutive rotated_digits tasks"
    )
    limit: int = Field(0, ge=0, description="keep at most this many source rows (0 = all)")
    duplicates: Literal["keep", "drop", "error"] = Field(
        "keep",
        description="identical rows: keep (counted in meta.json), drop later repeats, or stop",
    )
    shape: list[Annotated[int, Field(ge=1, le=1_000_000)]] | None = Field(
        None,
        min_length=2,
        max_length=3,
        description="a parquet stream's row shape, (C, L) for signals or (C, H, W) for images, "
        "e.g. [1, 40]; stored in meta.json, needed by cnn networks",
    )
    normalize: Literal["none", "standard"] = Field(
        "standard",
        description="per-feature scaling fitted on the first experience's training rows, applied "
        "inside every model (models take raw features)",
    )

    @model_validator(mode="after")
    def _tasks_in_range(self) -> StreamConfig:
        if self.tasks is not None:
            if not self.tasks:
                raise ValueError("tasks must not be empty")
            bad = [t for t in self.tasks if not 0 <= t < self.experiences]
            if bad:
                raise ValueError(f"task ids {bad} outside 0..{self.experiences - 1}")
        if self.shape is not None and self.source != "parquet":
            raise ValueError(f"source '{self.source}' knows its shape: stream.shape is for parquet")
        if self.source in FILE_SOURCES and self.source not in PACKAGED_SOURCES and not self.path:
            raise ValueError(f"source '{self.source}' reads a local directory: set stream.path")
        return self

    def task_sequence(self) -> list[int]:
        return list(self.tasks) if self.tasks is not None else list(range(self.experiences))


class TrainConfig(Section):
    """Backbone and optimiser shared by every learner."""

    backbone: Literal["mlp", "cnn"] = Field(
        "mlp",
        description="network of every learner: two hidden layers, or convolutions (needs a shape)",
    )
    hidden: int = Field(256, ge=1, le=65_536, description="units per hidden layer")
    lr: float = Field(1e-3, gt=0, le=10, description="Adam's learning rate")
    batch_size: int = Field(32, ge=1, le=65_536, description="rows per training step")
    epochs: int = Field(5, ge=1, le=1000, description="passes over each experience")
    seeds: list[Seed] = Field(
        default_factory=lambda: [0],
        min_length=1,
        max_length=100,
        description="one run per seed; metrics are their mean and std",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present")
    # where the jobs run changes no result (bit-identical), so dvc.yaml does not track these two
    runner: Literal["local", "dask"] = Field(
        "local",
        description="where each (method, seed) job runs: forked local processes, or a Dask "
        "cluster (docs/how-to/scale-out.md)",
    )
    address: str = Field(
        "",
        max_length=256,
        description="dask: a scheduler (tcp://host:8786); empty: a local cluster sized to the "
        "free CPUs",
    )

    @model_validator(mode="after")
    def _distinct_seeds(self) -> TrainConfig:
        if len(set(self.seeds)) != len(self.seeds):  # a repeated seed repeats a run exactly
            raise ValueError(f"seeds repeat: {self.seeds}")
        return self


BaselineMethod = Literal[
    "finetune", "replay", "replay_online", "er_ace", "der", "derpp", "gdumb", "joint"
]


class BaselinesConfig(Section):
    """The methods TAME is compared with (src/clflow/baselines/methods.py, plugins.py)."""

    methods: list[BaselineMethod] = Field(
        ["finetune", "replay", "replay_online", "er_ace", "derpp", "gdumb", "joint"],
        description="methods run, each on every seed (docs/methods/baselines.md)",
    )
    memory: int = Field(
        200,
        ge=1,
        le=10_000_000,
        description="rows every memory-bounded method stores (replays, ER-ACE, DER, GDumb)",
    )
    # DER and DER++ at the weights Mammoth runs on Seq-CIFAR-10 (buffer 500), which are
    # Avalanche 0.6.0's DER defaults: not tuned on clflow's streams
    der_alpha: float = Field(0.3, ge=0, le=100, description="DER: weight of the stored logits")
    derpp_alpha: float = Field(0.1, ge=0, le=100, description="DER++: weight of the stored logits")
    derpp_beta: float = Field(0.5, ge=0, le=100, description="DER++: weight of replayed labels")
    peer_storage: Literal["reservoir", "experience"] = Field(
        "reservoir",
        description="er_ace / der / derpp memory: reservoir (updated every batch, boundary-free: "
        "the papers' form) or experience (class-balanced, filled when an experience ends: "
        "Avalanche 0.6.0's form)",
    )
    gdumb_epochs: int = Field(
        0, ge=0, le=10_000, description="GDumb: passes over its memory (0 = train.epochs)"
    )


class TameConfig(Section):
    """TAME: shift detection, experts, selector, pruning (see src/clflow/tame)."""

    alpha: float = Field(1e-3, gt=0, lt=0.5, description="one-sided significance of the loss test")
    window: int = Field(
        2, ge=1, le=10_000, description="consecutive significant batches that declare a shift"
    )
    warmup: int = Field(
        10, ge=1, le=100_000, description="batches of a fresh expert before it is tested"
    )
    history: int = Field(
        30, ge=2, le=100_000, description="accepted losses in the reference window"
    )
    min_rise: float = Field(
        0.4,
        ge=0,
        le=100,
        description="effect size: a shift raises the loss by at least this share of log C "
        "(the loss of a uniform guess over the C classes)",
    )
    buffer_size: int = Field(
        100, ge=1, le=1_000_000, description="reservoir samples per expert (selector training data)"
    )
    max_experts: int = Field(
        10, ge=1, le=1000, description="at most this many experts; past it the closest is reused"
    )
    min_expert_batches: int = Field(
        5, ge=0, le=1_000_000, description="experts with fewer batches are spurious: removed"
    )
    prune_sparsity: float = Field(
        0.8,
        ge=0,
        lt=1,
        description="most weights zeroed in an expert when it stops being active (online "
        "pruning); 0 = off",
    )
    prune_agreement: float = Field(
        1.0,
        gt=0,
        le=1,
        description="a pruned expert must keep this share of its predictions on its buffer; "
        "else it is pruned less",
    )
    selector_sparsity: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="share of the selector's weights zeroed each time it is refitted; 0 = off",
    )
    router: Literal["buffer", "continual"] = Field(
        "buffer",
        description="selector trained on every batch the experts learn (rehearsing their "
        "buffers), or on the buffers only",
    )
    selector_targets: Literal["expert", "class"] = Field(
        "expert", description="selector learns experts, or (expert, class) pairs"
    )
    selector_backbone: Literal["auto", "expert", "mlp", "cnn"] = Field(
        "auto",
        description="selector network: auto (mlp or, when the stream has a shape, cnn: the one "
        "that routes held-out buffer rows best, chosen again as experts are added), the "
        "experts' backbone, or mlp / cnn",
    )
    route_by: Literal["auto", "selector", "statistics"] = Field(
        "auto",
        description="what routes test rows: the selector, the class statistics of every row "
        "the experts learned (per-class means, pooled per-feature variance), or auto: the "
        "statistics when they route held-out buffer rows clearly better",
    )
    selector_hidden: int = Field(
        512, ge=1, le=65_536, description="units of the selector's hidden layer"
    )
    selector_epochs: int = Field(
        100,
        ge=1,
        le=100_000,
        description="passes over the buffers each time the selector is refitted",
    )
    selector_steps: int = Field(
        1, ge=1, le=100, description="router continual: selector steps per batch an expert learns"
    )
    match_tolerance: int = Field(
        5, ge=0, le=100_000, description="batches after a true boundary a detection may fall"
    )
    detect: bool = Field(True, description="detect shifts; false trains one expert (an ablation)")
    head: Literal["linear", "lingo"] = Field(
        "linear", description="experts' head: one-hot or language targets"
    )
    resume: bool = Field(
        True,
        description="continue from the checkpoint when the stream only gained experiences; "
        "false retrains from scratch (the continual flow's compare_retrain sets it)",
    )


class RetrievalConfig(Section):
    """Demonstration retrieval (FAISS bank); replay variants use `baselines.memory`."""

    embedding: Literal["raw", "model"] = Field(
        "raw", description="raw features or the learner's penultimate layer"
    )
    metric: Literal["ip", "l2"] = Field(
        "ip", description="inner product on L2-normalised vectors (cosine), or L2 distance"
    )
    index: Literal["auto", "flat", "ivf", "hnsw"] = Field(
        "auto", description="FAISS index; auto: exact Flat up to 50,000 vectors, then IVF"
    )
    k: int = Field(5, ge=1, le=1000, description="demonstrations that vote")
    weight: float = Field(
        0.5, ge=0.0, le=1.0, description="share of the k-NN vote in the blended prediction"
    )
    shots: list[Annotated[int, Field(ge=1, le=10_000)]] = Field(
        default_factory=lambda: [1, 5],
        min_length=1,
        max_length=20,
        description="few-shot: demonstrations per held-out class",
    )


class LingoConfig(Section):
    """Language-guided heads (LingoCL): class-name embeddings as frozen targets."""

    template: str = Field(
        "{name}",
        description="prompt for each class name ({name}); set one per stream, e.g. "
        "'the handwritten digit {name}'",
    )
    encoder_path: str = Field(
        "", description="local sentence-transformers directory; empty = shipped MiniLM"
    )
    heads: list[Literal["linear", "random", "language"]] = Field(
        ["linear", "random", "language"],
        description="heads compared: one-hot, frozen random targets, frozen language targets",
    )
    methods: list[Literal["finetune", "replay"]] = Field(
        ["finetune", "replay"], description="learners each head is tried with"
    )
    learnt_weight: float = Field(
        0.3,
        ge=0,
        le=100,
        description="text streams: the language head scores cosine(document, name) + this "
        "weight × cosine(learnt features, name); tuned on Split-Fortunes (docs/methods/lingo.md)",
    )


class FederatedConfig(Section):
    """Federated prototype merging over the stream's experiences as rounds."""

    clients: int = Field(10, ge=1, le=1_000_000, description="federated clients")
    overlap: int = Field(
        1, ge=1, le=1_000_000, description="clients that share each class (disjoint rows)"
    )
    encoder: Literal["raw", "random", "trained"] = Field(
        "raw",
        description="shared fixed encoder: raw features, random ReLU map, or the encoder stage's "
        "trained encoder (models/encoder)",
    )
    base_experiences: int = Field(
        2, ge=1, le=100_000, description="the first experiences: base classes that train it"
    )
    encoder_training: Literal["classifier", "protonet"] = Field(
        "classifier",
        description="a classifier's last hidden layer, or episodic prototypical-network training",
    )
    encoder_dim: int = Field(
        64, ge=1, le=65_536, description="the trained encoder's embedding size"
    )
    encoder_epochs: int = Field(
        30, ge=1, le=100_000, description="passes when training the encoder"
    )
    metric: Literal["cosine", "l2"] = Field(
        "cosine", description="nearest merged prototype by cosine or L2"
    )
    engine: Literal["prefect", "flower", "flower-sim"] = Field(
        "prefect",
        description="prefect: clients as Prefect tasks (quick simulation); flower: a SuperLink "
        "and one SuperNode per client on loopback (.venv-flower); flower-sim: Flower's "
        "Simulation Engine, virtual clients on Ray (thousands per round)",
    )
    runner: Literal["thread", "dask"] = Field(
        "thread", description="task runner of the Prefect engine: thread pool or Dask"
    )
    address: str = Field(
        "", description="Dask scheduler address; empty = a local distributed cluster"
    )
    group_size: int = Field(1, ge=1, le=1_000_000, description="clients per Prefect task")
    seed: Seed = Field(0, description="which clients get which rows; the random encoder")


class TrackingConfig(Section):
    """MLflow tracking: where every stage run is logged."""

    experiment: Name = Field("clflow", description="the MLflow experiment of every run")


class RegisterConfig(Section):
    """Model registry: every TAME model becomes a version; the better one becomes `champion`."""

    model_name: Name = Field("clflow-tame", description="the registered model every version joins")
    seed: Seed | None = Field(
        None, description="which train seed's model to register; null = the first"
    )
    max_experience_drop: float = Field(
        0.05,
        ge=0,
        le=1,
        description="promote only if no experience's accuracy falls more than this below the "
        "champion's (both scored on the current test set)",
    )
    lock_timeout: float = Field(
        120.0, ge=0, le=86_400, description="seconds to wait for another registration's decision"
    )


DAY = 86_400.0


class FlowsConfig(Section):
    """How the Prefect flows run stages (a plain `dvc repro` has no time limit)."""

    stage_timeout: float = Field(
        3600.0,
        gt=0,
        le=7 * DAY,
        description="seconds a stage may run in a flow; then it is stopped and the project freed",
    )
    stage_timeouts: dict[str, Annotated[float, Field(gt=0, le=7 * DAY)]] = Field(
        default_factory=dict, description="per stage, e.g. {tame: 7200}"
    )

    def timeout(self, stage: str) -> float:
        return self.stage_timeouts.get(stage, self.stage_timeout)


class UpdateConfig(Section):
    """The pipeline and continual-update flows (flows/pipeline.py, flows/continual.py)."""

    push: bool = Field(
        True,
        description="after a successful pipeline or update run, `dvc push` its outs to the "
        "project's default DVC remote (none configured: nothing is pushed)",
    )
    compare_retrain: bool = Field(
        False,
        description="after each update, also retrain TAME from scratch on all accepted data (a "
        "DVC experiment, workspace untouched) and record both costs and accuracies",
    )


class Params(Section):
    stream: StreamConfig = StreamConfig()
    train: TrainConfig = TrainConfig()
    baselines: BaselinesConfig = BaselinesConfig()
    tame: TameConfig = TameConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    lingo: LingoConfig = LingoConfig()
    federated: FederatedConfig = FederatedConfig()
    tracking: TrackingConfig = TrackingConfig()
    flows: FlowsConfig = FlowsConfig()
    update: UpdateConfig = UpdateConfig()
    # `register` would shadow pydantic's BaseModel.register: the attribute is `registry`
    registry: RegisterConfig = Field(RegisterConfig(), alias="register")


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        name = field.alias or name
        keys.append(prefix + name)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_known_keys(ann, prefix + name + "."))
    return keys


# keys that changed meaning: an old params.yaml stops with what to write instead
RENAMED = {
    "tame.min_jump": "; it became tame.min_rise, a share of log C (1 nat is 0.43 for 10 classes)",
}


def _explain(err: ValidationError, path: Path) -> ConfigError:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, _known_keys(Params), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        hint = RENAMED.get(key, hint)
        return ConfigError(f"unknown key{hint}", file=path, field=key)
    msg = first["msg"].removeprefix("Value error, ")
    got = repr(first.get("input"))
    got = got if len(got) <= 80 else got[:77] + "..."  # one line, whatever was given
    return ConfigError(f"{msg} (got {got})", file=path, field=key or None)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (DVC refuses it too)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"key given twice (line {key_node.start_mark.line + 1})", field=str(key)
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _parse(text: str, path: Path, field: str | None = None) -> object:
    """YAML text to Python: safe tags only, capped aliases, one line on any error."""
    try:
        aliases = sum(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text))
        if aliases > MAX_ALIASES:
            raise ConfigError(f"{aliases} YAML aliases, at most {MAX_ALIASES}", file=path)
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no Python tags
    except ConfigError as err:
        raise ConfigError(err.message, file=path, field=field or err.field) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark and field is None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"not valid YAML{where} ({problem})", file=path, field=field) from None


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise ConfigError("file not found", file=path)
    if not path.is_file():
        raise ConfigError("not a regular file", file=path)
    if path.stat().st_size > MAX_BYTES:
        raise ConfigError(f"{path.stat().st_size} bytes, at most {MAX_BYTES}", file=path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        bad = f"byte {data[exc.start]:#04x}, line {line}"
        raise ConfigError(f"not UTF-8 text ({bad})", file=path) from None
    raw = _parse(text, path)
    if raw is None:  # DVC refuses an empty params file too: no silent run on defaults
        raise ConfigError("empty: no sections (see the shipped params.yaml)", file=path)
    if not isinstance(raw, dict):
        raise ConfigError("top level must be a mapping of sections", file=path)
    return raw


def _validate(raw: dict, path: Path) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise _explain(err, path) from None


def check_overrides(path: str | Path, overrides: dict[str, object]) -> Params:
    """Validate `params.yaml` with `dvc exp run -S`-style overrides {'train.epochs': '2'}
    applied."""
    path = Path(path)
    raw = _read_yaml(path)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError("not a section", file=path, field=key)
        node[leaf] = _parse(value, path, field=key) if isinstance(value, str) else value
    return _validate(raw, path)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate `params.yaml`; raise ConfigError with one readable line."""
    path = Path(path)
    return _validate(_read_yaml(path), path)
