"""Evaluation: benchmarks, predictions, judge and judge-free metrics."""

from .metric_modules import metric_path

__all__ = ["metric_path"]
