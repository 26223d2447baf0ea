"""Language-guided continual learning: frozen sentence-embedding targets replace the one-hot
head."""

from clflow.lingo.targets import encode_names, load_encoder, random_targets, read_targets

__all__ = ["encode_names", "load_encoder", "random_targets", "read_targets"]
