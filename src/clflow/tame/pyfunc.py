"""TAME as an MLflow pyfunc model: selector and experts from one checkpoint artifact.

Input is validated before it reaches a model: an empty input, a row of the wrong
length, or a value that is not a finite number (NaN, inf, null, text) is refused
with one line naming the row and the feature, which the scoring server answers
with HTTP 400 (and keeps serving).

A text stream's model carries its sentence encoder as a second artifact and takes
documents (a `text` column, or {"text": [...]}) instead of feature rows: a document
that is not a string, is empty or is longer than the stream allowed is refused the
same way, naming its row.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from clflow.errors import ClflowError
from clflow.streams.text import MAX_TEXT_CHARS, TEXT, first_bad_text
from clflow.tame.persist import load_tame


class InputError(ClflowError):
    """A request the model cannot score."""


def _bad_cell(row: object, i: int) -> str:
    """Why row i is not a vector of finite numbers (it failed a float conversion)."""
    values = np.ravel(np.asarray(row, dtype=object)) if not isinstance(row, (str, bytes)) else [row]
    for j, v in enumerate(values):
        try:
            float(v)
        except (TypeError, ValueError):
            return f"row {i}, feature {j}: {v!r} is not a number"
    return f"row {i}: not a flat list of numbers"


def rows(model_input) -> list | np.ndarray:
    """The rows of a model input, as the scoring server hands it over (not yet checked)."""
    if isinstance(model_input, pd.DataFrame):
        if "x" in model_input.columns:
            return list(model_input["x"].to_numpy())
        return model_input.to_numpy(dtype=object)
    if isinstance(model_input, dict):  # a tensor input sent as {"name": rows}
        if len(model_input) != 1:
            raise InputError(f"expected one input, got {sorted(model_input)}")
        model_input = next(iter(model_input.values()))
    return model_input


NUMBERS = (int, float, np.integer, np.floating)


def _check_types(rows) -> None:
    """Refuse what numpy would quietly turn into a number: booleans (true is 1.0) and text
    ("1", "inf"), and anything nested deeper than rows of values. null stays: it is missing."""
    if isinstance(rows, np.ndarray) and rows.dtype.kind in "iuf":
        return
    for i, row in enumerate(rows):
        values = row if isinstance(row, (list, tuple, np.ndarray)) else [row]
        for j, v in enumerate(values):
            if v is None or (isinstance(v, NUMBERS) and not isinstance(v, (bool, np.bool_))):
                continue
            if isinstance(v, (bool, np.bool_)):
                raise InputError(f"row {i}, feature {j}: {bool(v)!r} is a boolean, not a number")
            if isinstance(v, (str, bytes)):
                raise InputError(f"row {i}, feature {j}: {v!r:.40} is text, not a finite number")
            raise InputError(f"row {i}, feature {j}: a {type(v).__name__}, not a number")


def features(model_input, n_features: int) -> np.ndarray:
    """Rows as a float32 matrix (an array, a frame of numeric columns, or a frame with an `x` list
    column), checked: at least one row, `n_features` values each, every value a finite number."""
    found = rows(model_input)
    if found is None or len(found) == 0:
        raise InputError("empty input: send at least one row")
    _check_types(found)
    try:
        X = np.asarray(found, dtype=np.float64)
    except (TypeError, ValueError):  # ragged rows, None, text: find the first culprit
        for i, row in enumerate(found):
            if np.ndim(row) != 1 or len(row) != n_features:
                raise InputError(
                    f"row {i}: {np.size(row)} values, the model takes {n_features}"
                ) from None
            try:
                np.asarray(row, dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError(_bad_cell(row, i)) from None
        raise InputError("not a matrix of numbers") from None
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2 or X.shape[1] != n_features:
        raise InputError(
            f"rows have {X.shape[-1] if X.ndim else 0} values, the model takes {n_features}"
        )
    bad = ~np.isfinite(X)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        what = "missing (null) or NaN" if np.isnan(X[i, j]) else f"{X[i, j]}"
        raise InputError(f"row {i}, feature {j}: {what} is not a finite number")
    return X.astype(np.float32)


def texts(model_input, max_chars: int) -> list[str]:
    """The documents of a text model's input (a frame with a `text` column, {"text": [...]},
    or a list of strings), checked: at least one, each a non-empty string of at most
    `max_chars` characters."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT not in model_input.columns:
            raise InputError(f"this model takes documents: a '{TEXT}' column")
        model_input = model_input[TEXT]
    elif isinstance(model_input, dict):
        if set(model_input) != {TEXT}:
            raise InputError(
                f'this model takes {{"{TEXT}": [...]}} alone, got {sorted(model_input)}'
            )
        model_input = model_input[TEXT]
    values = [model_input] if isinstance(model_input, str) else list(model_input)
    if not values:
        raise InputError("empty input: send at least one text")
    found = first_bad_text(values, max_chars)
    if found:
        raise InputError(f"row {found[0]}: {found[1]}")
    return values


class TameModel(mlflow.pyfunc.PythonModel):
    """Predicts the label (its class name, the routed expert and the selector's confidence) of
    each row of raw features, or of each document for a text stream's model."""

    def load_context(self, context) -> None:
        self.learner, ckpt = load_tame(
            context.artifacts["checkpoint"]
        )  # no pickle: loading runs no code
        self.classes = list(ckpt["classes"])
        self.encoder = None
        if "encoder" in context.artifacts:  # a text stream's model
            from clflow.sentence import ServedEncoder

            config = context.model_config or {}
            self.max_text_chars = int(config.get("max_text_chars", MAX_TEXT_CHARS))
            self.encoder = ServedEncoder(context.artifacts["encoder"])

    def __getstate__(self) -> dict:
        # MLflow loads the model to check the input example before it pickles this object:
        # pickle none of that (load_context rebuilds it from the artifacts; a lock won't pickle)
        return {}

    def features(self, model_input) -> np.ndarray:
        """The checked feature rows the learner scores (the documents' embeddings for text)."""
        if self.encoder is None:
            return features(model_input, self.learner.n_features_in_)
        return self.encoder.embed(texts(model_input, self.max_text_chars))

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            X = self.features(model_input)
        except InputError as err:  # the scoring server answers it with HTTP 400
            raise MlflowException(err.line(), error_code=INVALID_PARAMETER_VALUE) from None
        experts, confidence = self.learner.route_confidence(X)
        labels = self.learner.predict_with(X, experts)
        return pd.DataFrame(
            {
                "label": labels,
                "class_name": [self.classes[i] for i in labels],
                "expert": experts,
                "confidence": confidence,  # the selector's probability of the routed expert
            }
        )


def takes_text(model) -> bool:
    """Whether a loaded pyfunc model's input is documents (a `text` column)."""
    schema = model.metadata.get_input_schema()
    return schema is not None and not schema.is_tensor_spec() and TEXT in schema.input_names()


def model_input(model, split) -> np.ndarray | pd.DataFrame:
    """A split's test rows as `model` takes them: documents for a text model, else features."""
    return pd.DataFrame({TEXT: list(split.text)}) if takes_text(model) else split.X


def experience_scores(model, stream) -> list[float]:
    """Accuracy of a loaded pyfunc model on each experience's test rows (their mean is
    avg_accuracy)."""
    labels = model.predict(model_input(model, stream.test))["label"].to_numpy()
    exps = stream.test.experience
    return [
        float((labels[exps == e] == stream.test.y[exps == e]).mean())
        for e in range(stream.n_experiences)
    ]


def requirements(text: bool = False) -> list[str]:
    """Pinned packages that loading this model imports (clflow itself travels as code); a text
    model's also load its encoder."""
    from clflow.util.codedeps import module_level_imports, pinned_requirements, source_closure

    modules = module_level_imports(source_closure(Path(__file__)))
    return pinned_requirements(modules | ({"sentence_transformers"} if text else set()))


def log_tame_model(
    checkpoint: str | Path,
    example,
    name: str = "tame",
    registered_model_name: str | None = None,
    encoder: str | Path | None = None,
    max_text_chars: int = MAX_TEXT_CHARS,
):
    """Log a TAME checkpoint as a pyfunc model (selector, experts, class names) with a signature.

    With `encoder` (a local sentence-transformers directory), the model takes documents:
    `example` is a few of them, and the encoder travels with the model (about 90 MB), so it
    serves offline. The clflow package travels as code, so the model loads wherever its pinned
    requirements do.
    """
    import clflow

    artifacts = {"checkpoint": str(checkpoint)}
    if encoder is None:
        example, config = np.asarray(example, dtype=np.float32), None
    else:
        artifacts["encoder"] = str(encoder)
        example = pd.DataFrame({TEXT: [str(t) for t in example]})
        config = {"max_text_chars": int(max_text_chars)}
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=TameModel(),
        artifacts=artifacts,
        input_example=example,
        model_config=config,
        code_paths=[str(Path(clflow.__file__).parent)],
        registered_model_name=registered_model_name,
        pip_requirements=requirements(text=encoder is not None),
    )


def scorer(stream):
    """model_uri -> accuracy of that registered model on each experience of the stream's test
    rows (the registry gate's evidence)."""
    return lambda uri: experience_scores(mlflow.pyfunc.load_model(uri), stream)
