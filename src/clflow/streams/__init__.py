"""Streams: the data contract, builders for standard benchmarks, and batch iterators."""

from clflow.streams.batches import arrival_order, experience_batches, iter_batches, stream_batches
from clflow.streams.builders import build_stream, class_groups, permutation
from clflow.streams.schema import Split, Stream, load_stream, write_stream

__all__ = [
    "Split",
    "Stream",
    "arrival_order",
    "build_stream",
    "class_groups",
    "experience_batches",
    "iter_batches",
    "load_stream",
    "permutation",
    "stream_batches",
    "write_stream",
]
