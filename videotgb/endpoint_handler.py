"""Inference Endpoints handler of an exported VideoTGB folder: `videotgb export` copies this file into the folder as
``handler.py`` (with ``requirements.txt``), where Hugging Face Inference Endpoints finds ``EndpointHandler``.

Request: ``{"inputs": {"video": URL | path | base64, "question": "..."}, "parameters": {"max_new_tokens": 32}}``.
Response: ``{"answer": "...", "keyframe_timestamps": [seconds, ...], "keyframe_indices": [...]}``.

It imports nothing from the `videotgb` package (the folder's remote code is the model's code), so it runs wherever
the exported folder does.
"""

from __future__ import annotations

import base64
import binascii
import os
import urllib.request
from typing import Any

import torch
from transformers import AutoModel, AutoProcessor

GENERATION_PARAMETERS = ("max_new_tokens", "num_beams", "do_sample", "temperature", "top_p", "top_k")
"""The request `parameters` passed to `generate`; others are refused by name."""
MAX_DOWNLOAD_BYTES = 2**30
DOWNLOAD_TIMEOUT_S = 60


class EndpointHandler:
    """Answers one question about one video with the model in `path` (the endpoint's copy of the repository)."""

    def __init__(self, path: str = ""):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModel.from_pretrained(path, trust_remote_code=True, dtype="auto").to(self.device).eval()
        self.processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)

    @staticmethod
    def video_source(video: Any) -> str | bytes:
        """A local path, or the bytes of a URL's download or of base64 text; ValueError naming `inputs.video`."""
        if not isinstance(video, str) or not video:
            raise ValueError("inputs.video must be a URL, a path or base64 text")
        if video.startswith(("http://", "https://")):
            with urllib.request.urlopen(video, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310 (http(s) only)
                data = response.read(MAX_DOWNLOAD_BYTES + 1)
            if len(data) > MAX_DOWNLOAD_BYTES:
                raise ValueError(f"inputs.video {video}: larger than {MAX_DOWNLOAD_BYTES} bytes")
            return data
        if os.path.isfile(video):
            return video
        try:
            return base64.b64decode(video, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("inputs.video is neither a URL, an existing path, nor base64 text") from None

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        inputs = data.get("inputs")
        if not isinstance(inputs, dict) or not isinstance(inputs.get("question"), str) or "video" not in inputs:
            raise ValueError('expected {"inputs": {"video": URL | path | base64, "question": "..."}}')
        parameters = dict(data.get("parameters") or {})
        unknown = sorted(set(parameters) - set(GENERATION_PARAMETERS))
        if unknown:
            raise ValueError(f"parameters {unknown}: not supported; use {', '.join(GENERATION_PARAMETERS)}")
        parameters.setdefault("max_new_tokens", 64)
        parameters.setdefault("do_sample", False)
        clip = self.processor.load_video(self.video_source(inputs["video"]), name="inputs.video")
        batch = self.processor([inputs["question"]], videos=[clip]).to(self.device)
        floating = {key: value.to(self.model.dtype) for key, value in batch.items() if value.is_floating_point()}
        with torch.inference_mode():
            output = self.model.generate(**batch | floating, return_dict_in_generate=True, **parameters)
        indices = output.keyframe_indices[0].tolist()
        return {
            "answer": self.processor.batch_decode(output.sequences, skip_special_tokens=True)[0].strip(),
            "keyframe_timestamps": [float(clip.candidate_timestamps[index]) for index in indices],
            "keyframe_indices": indices,
        }
