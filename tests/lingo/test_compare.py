"""The language head on a text stream: names in the documents' space, classes predicted before
their first label (zero-shot), against one-hot and random heads."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TEXT_CLASSES, write_text_stream

from clflow.baselines.methods import learner_for_method
from clflow.config import LingoConfig, StreamConfig, TrainConfig
from clflow.lingo.compare import compare, head_metrics, head_options, names_alone
from clflow.lingo.targets import encode_names, load_encoder
from clflow.sentence import EmbeddingCache
from clflow.streams import build_stream


@pytest.fixture(scope="module")
def text_stream(tmp_path_factory):
    root = tmp_path_factory.mktemp("lingo")
    cache = EmbeddingCache(directory=root / "cache")
    return build_stream(
        StreamConfig(source="text", path=str(write_text_stream(root / "stream"))), cache.embed
    )


@pytest.fixture(scope="module")
def names(text_stream):
    return encode_names(text_stream.classes, "{name}", load_encoder())


def test_a_named_class_is_predicted_before_its_first_label(text_stream, names):
    train = TrainConfig(seeds=[0], epochs=5)
    first = text_stream.train.experience == 0  # sports and cooking only: music never labelled
    music = text_stream.test.y == TEXT_CLASSES.index("music")
    preds = {}
    for head in ("linear", "language"):
        options = head_options(head, names, 0, text=True)
        learner = learner_for_method("finetune", text_stream, train, 0, 10, **options)
        learner.initialize(text_stream.n_features)
        for _ in range(5):
            learner.partial_fit(text_stream.train.X[first], text_stream.train.y[first])
        preds[head] = learner.predict(text_stream.test.X[music])
    assert (preds["linear"] != TEXT_CLASSES.index("music")).all()  # masked: cannot name it
    assert (preds["language"] == TEXT_CLASSES.index("music")).mean() >= 0.75


def test_compare_reports_zero_shot_beside_the_names_alone(text_stream, names):
    cfg = LingoConfig(methods=["finetune", "replay"], heads=["linear", "random", "language"])
    results = compare(text_stream, names, TrainConfig(seeds=[0], epochs=3), cfg, memory=10)
    every = head_metrics(results)
    m = every["finetune"]
    # every head's memory, as the baselines report it: replay keeps its 10 rows, finetune none
    row = text_stream.n_features * 4 + 8 + 8  # float32 features, int64 label, uint64 priority
    assert {h: (v["memory_rows"], v["memory_bytes"]) for h, v in every["replay"].items()} == {
        h: (10, 10 * row) for h in cfg.heads
    }
    assert m["language"]["memory_rows"] == m["language"]["memory_bytes"] == 0
    baseline = names_alone(text_stream, names)
    assert baseline["names_alone"] >= 0.75  # the names alone know what these documents are about
    assert m["linear"]["zero_shot"] == 0 and m["random"]["zero_shot"] == 0
    assert m["language"]["zero_shot"] >= 0.5 * baseline["names_alone"]
    assert m["language"]["avg_accuracy"] > m["linear"]["avg_accuracy"]


def test_names_alone_is_for_text_streams_only(names):
    digits = build_stream(StreamConfig(source="digits", limit=300))
    assert names_alone(digits, np.zeros((10, 384), np.float32)) == {}
    options = head_options("language", names, 0, text=False)
    assert options["anchored"] is None and not options["zero_shot"]
