"""TAME as an MLflow pyfunc model: selector and experts from one checkpoint artifact."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd

from clflow.checkpoint import load_checkpoint
from clflow.tame.learner import TameLearner


def features(model_input) -> np.ndarray:
    """Rows as a float32 matrix: an array, a frame of numeric columns, or a frame with an `x` list column."""
    if isinstance(model_input, pd.DataFrame):
        if "x" in model_input.columns:
            return np.stack(model_input["x"].to_numpy()).astype(np.float32)
        return model_input.to_numpy(dtype=np.float32)
    return np.asarray(model_input, dtype=np.float32)


class TameModel(mlflow.pyfunc.PythonModel):
    """Predicts the label (and its class name and the routed expert) of each row."""

    def load_context(self, context) -> None:
        ckpt = load_checkpoint(context.artifacts["checkpoint"])
        self.classes = list(ckpt["classes"])
        self.learner = TameLearner(**ckpt["params"]).set_state(ckpt["state"])

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        X = features(model_input)
        experts = self.learner.route(X)
        labels = self.learner.predict_with(X, experts)
        return pd.DataFrame({"label": labels, "class_name": [self.classes[i] for i in labels], "expert": experts})


def stream_accuracy(model, stream) -> float:
    """avg_accuracy of a loaded pyfunc model on the stream's test rows: mean over experiences."""
    labels = model.predict(stream.test.X)["label"].to_numpy()
    exps = stream.test.experience
    return float(np.mean([(labels[exps == e] == stream.test.y[exps == e]).mean() for e in np.unique(exps)]))
