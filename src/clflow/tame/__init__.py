"""TAME: task-agnostic continual learning with multiple experts (Zhu et al., 2022)."""

from clflow.tame.detector import LossShiftDetector
from clflow.tame.learner import TameLearner
from clflow.tame.selector import Selector

__all__ = ["LossShiftDetector", "Selector", "TameLearner"]
