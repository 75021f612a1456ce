"""The lmms-eval model class of VideoTGB (registered by :func:`videotgb.evaluation.lmms_eval.manifests`).

Only lmms-eval imports this module (it needs lmms-eval installed). Video tasks give every request one video file
(their ``doc_to_visual``); the request's context is the prompt, asked through the checkpoint's chat template with
the bridge choosing the keyframes, exactly as `videotgb eval run` does (:func:`videotgb.evaluation.run.answer_batch`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm.auto import tqdm
from transformers.utils import logging

from ...cli import load
from ..benchmarks import BenchmarkItem
from ..run import answer_batch

logger = logging.get_logger(__name__)


class VideoTGB(lmms):
    """VideoTGB for lmms-eval's ``generate_until`` tasks on videos.

    Model arguments (``--model_args pretrained=PATH,batch_size=8,...``):
        pretrained: checkpoint folder or Hub id (default: the tiny model shipped with the package).
        device: cpu, cuda, cuda:1 ... (default: cuda when available); lmms-eval's ``--device`` sets it too.
        dtype: auto, float32, bfloat16 or float16 (default: as saved).
        batch_size: requests answered together (lmms-eval's ``--batch_size`` sets it too).
        max_new_tokens: when the task's generation arguments do not say (default: 64).
        revision: Hub revision.
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int | str = 1,
        max_new_tokens: int | str = 64,
        revision: str | None = None,
        **unused: Any,
    ) -> None:
        super().__init__()
        from ...demo import DEFAULT_MODEL

        unused.pop("max_batch_size", None)
        if unused:
            raise ValueError(
                f"--model_args: unknown argument(s) {', '.join(sorted(unused))} for videotgb "
                "(pretrained, device, dtype, batch_size, max_new_tokens, revision)"
            )
        if str(batch_size) == "auto" or int(batch_size) < 1:
            raise ValueError(f"batch_size {batch_size!r}: videotgb needs a positive integer batch size")
        self.pretrained = str(pretrained or DEFAULT_MODEL)
        self.model, self.processor = load(self.pretrained, dtype, device, revision)
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.failed: list[str] = []

    def _generate_kwargs(self, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
        """generate arguments from a task's: sampling when it asks for a temperature above 0 (or ``do_sample``),
        greedy otherwise; ``until`` is applied to the text afterwards."""
        temperature = float(gen_kwargs.get("temperature") or 0.0)
        sample = bool(gen_kwargs.get("do_sample", temperature > 0)) and temperature > 0
        kwargs = {
            "max_new_tokens": int(gen_kwargs.get("max_new_tokens") or self.max_new_tokens),
            "num_beams": int(gen_kwargs.get("num_beams") or 1),
            "do_sample": sample,
        }
        if sample:
            kwargs["temperature"] = temperature
            if gen_kwargs.get("top_p") is not None:
                kwargs["top_p"] = float(gen_kwargs["top_p"])
        return kwargs

    def _item(self, request: Instance) -> tuple[BenchmarkItem, dict[str, Any]]:
        context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
        where = f"task {task}, split {split}, doc {doc_id}"
        if len(visuals) != 1 or not isinstance(visuals[0], (str, os.PathLike)):
            raise ValueError(
                f"{where}: videotgb answers about one video file per question, but doc_to_visual gave "
                f"{[type(visual).__name__ for visual in visuals]}"
            )
        item = BenchmarkItem(id=where, video=Path(visuals[0]), question=context, answer="")
        return item, dict(gen_kwargs)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answers in request order; consecutive requests with the same generation arguments go in one batch. A
        video that does not decode gets an empty answer, a warning, and a place in ``self.failed``."""
        answers: list[str] = []
        pending: list[tuple[BenchmarkItem, dict[str, Any]]] = []
        bar = tqdm(total=len(requests), desc="videotgb", unit="item", disable=self.rank != 0)

        def flush() -> None:
            items = [item for item, _ in pending]
            gen_kwargs = pending[0][1]
            until = gen_kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            for item, result in zip(
                items, answer_batch(self.model, self.processor, items, self._generate_kwargs(gen_kwargs)), strict=True
            ):
                if result.get("error"):
                    logger.warning(f"{item.id}: {result['error']}; answered with an empty string")
                    self.failed.append(f"{item.id}: {result['error']}")
                text = result.get("prediction") or ""
                for stop in until:
                    if stop:
                        text = text.split(stop)[0]
                answers.append(text)
            bar.update(len(items))
            pending.clear()

        for request in requests:
            item, gen_kwargs = self._item(request)
            if pending and (gen_kwargs != pending[0][1] or len(pending) == self.batch_size):
                flush()
            pending.append((item, gen_kwargs))
        if pending:
            flush()
        bar.close()
        if self.failed:
            logger.warning(
                f"{len(self.failed)} requests had videos that do not decode (empty answers): {self.failed[:5]}"
            )
        return answers

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(
            "videotgb answers one question per video; multi-round tasks are not supported (use generate_until tasks)"
        )

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "videotgb generates answers; loglikelihood tasks (output_type: loglikelihood / multiple_choice) are not "
            "supported: use a generate_until version of the task, whose answer is parsed from the generated text"
        )


__all__ = ["VideoTGB"]
