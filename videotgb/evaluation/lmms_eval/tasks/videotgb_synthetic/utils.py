"""Functions of the example lmms-eval task ``videotgb_synthetic`` (the test split of ``synthetic/index.json``)."""

from __future__ import annotations

import os

DATA_DIR = "synthetic"
"""The folder written by `videotgb synthetic generate`, relative to where lmms-eval runs (as in the task YAML)."""


def process_docs(dataset):
    """Only the test split's samples (the index lists every split)."""
    return dataset.filter(lambda doc: doc["split"] == "test")


def doc_to_visual(doc: dict) -> list[str]:
    """The sample's video file."""
    return [os.path.abspath(os.path.join(DATA_DIR, doc["file"]))]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """The question, as the model was trained to read it."""
    return doc["question"]


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """Accuracy: the answer's words are the gold answer's words (`videotgb synthetic eval`'s exact match)."""
    from videotgb.synthetic.evaluate import answers_match

    return {"acc": float(answers_match(results[0], doc["answer"]))}
