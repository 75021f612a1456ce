"""Evaluation: benchmarks, predictions, judge and judge-free metrics."""
