"""Watching the served model: the served-traffic log, drift without labels, the drift step."""

from clflow.monitor.drift import DriftDetector, DriftReport
from clflow.monitor.served import EmptyWindow, Recorder, Rotation, ServedLogError, read_window

__all__ = [
    "DriftDetector",
    "DriftReport",
    "EmptyWindow",
    "Recorder",
    "Rotation",
    "ServedLogError",
    "read_window",
]
