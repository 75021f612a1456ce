"""VideoTGB as an lmms-eval model: `python -m lmms_eval eval --model videotgb --model_args pretrained=PATH ...`
(docs/evaluation.md#lmms-eval).

lmms-eval finds the model through its ``lmms_eval.models`` entry point, which videotgb's setup.cfg registers as
``videotgb = videotgb.evaluation.lmms_eval:manifests``. Importing this package does not import lmms-eval: only
:func:`manifests` (called by lmms-eval) and the model class in :mod:`videotgb.evaluation.lmms_eval.model` do.

``tasks/`` holds an example task folder for ``--include_path``: ``videotgb_synthetic``, the test split of a folder
written by `videotgb synthetic generate --out synthetic`.
"""

from __future__ import annotations

from pathlib import Path

MODEL_ID = "videotgb"
TASKS_DIR = Path(__file__).parent / "tasks"
"""The example task folder to pass to lmms-eval's ``--include_path``."""


def manifests() -> list:
    """lmms-eval's registration payload: one ``ModelManifest`` for :class:`~.model.VideoTGB` (a simple model)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_ID, simple_class_path="videotgb.evaluation.lmms_eval.model.VideoTGB")]


__all__ = ["MODEL_ID", "TASKS_DIR", "manifests"]
