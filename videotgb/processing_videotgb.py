"""`VideoTGBProcessor`: from videos, images and questions to the inputs of `VideoTGBForConditionalGeneration`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

from .optical_flow import FlowConfig, compute_flow
from .video_io import (
    DEFAULT_MAX_DURATION_S,
    DEFAULT_MAX_PIXELS,
    VideoClip,
    VideoDecodeError,
    flow_pair_ends,
    read_video,
    sample_candidate_indices,
    sample_flow_indices,
)

logger = logging.get_logger(__name__)

IGNORE_INDEX = -100


def _message_text(expression: str) -> str:
    return f"({expression} if {expression} is string else {expression}[0]['text'])"


VICUNA_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ " + _message_text("message['content']") + " + ' ' }}"
    "{%- elif message['role'] == 'user' -%}{{ 'USER: ' }}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'video' -%}{{ '<video>\\n' }}"
    "{%- elif item['type'] == 'image' -%}{{ '<image>\\n' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}{{ ' ' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ 'ASSISTANT: ' + "
    + _message_text("message['content']")
    + " + '</s>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)
"""Vicuna v1 prompt of VideoTGB-7B: ``USER: <video>\\n{question} ASSISTANT:`` (``<image>`` for images)."""

PLAIN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- for item in message['content'] if item['type'] == 'text' -%}{{ 'Question: ' + item['text'] }}{%- endfor -%}"
    "{%- elif message['role'] == 'assistant' -%}{{ ' Answer: ' + " + _message_text("message['content']") + " }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ ' Answer:' }}{%- endif -%}"
)
"""BLIP-2 style prompt for seq2seq language models (Flan-T5): ``Question: {question} Answer:``."""


class VideoTGBProcessor(ProcessorMixin):
    r"""
    Turns questions with videos, images or nothing into the inputs of [`VideoTGBForConditionalGeneration`].

    For each video it decodes `num_candidate_frames` candidate frames (bin midpoints) and up to `max_flow_steps`
    flow frames in one pass (`video_io.read_video`), normalises the candidates with the image processor (bilinear
    squash, CLIP mean / std; images use bicubic), computes optical flow with `flow_config` (the same function that
    builds training shards), and tokenises the question three times: for the bridge (BERT uncased), for the Q-Former
    (InstructBLIP) and, inside the chat template's prompt, for the language model.

    Args:
        image_processor ([`BlipImageProcessor`]): resize and CLIP normalisation of frames and images.
        tokenizer ([`PreTrainedTokenizerBase`]): the language model's tokenizer.
        qformer_tokenizer ([`PreTrainedTokenizerBase`]): the Q-Former's tokenizer (BERT uncased for InstructBLIP;
            its tokens are ignored by BLIP-2-style models).
        bridge_tokenizer ([`PreTrainedTokenizerBase`]): the bridge's tokenizer (BERT uncased).
        num_candidate_frames (`int`, defaults to 32): candidate frames per video; must match the model.
        max_flow_steps (`int`, defaults to 64): most flow steps per video.
        flow_config (`dict`, *optional*): a [`FlowConfig`] as a dict (estimator, size, ...); must match the flow the
            model's bridge was trained on (`bridge_config.flow_estimator` and `flow_size`).
        seq2seq (`bool`, defaults to `False`): the language model is encoder-decoder (answers become `labels`
            instead of being appended to the prompt).
        max_question_tokens (`int`, defaults to 128): questions are truncated to this many bridge / Q-Former tokens.
        max_video_duration_s, max_video_pixels: limits beyond which a video is refused.
        frame_alignment (`str`, defaults to `"exact"`): where video files are read: `"exact"` (candidate and flow
            frames at the bin midpoints) or `"keyframe"` (each moved to a keyframe, so reading costs a seek and a few
            frames' decoding per frame whatever the keyframe interval; see `video_io.read_video`, whose clip records
            how far the frames moved and why exact reading was used when keyframes are too sparse).
        chat_template (`str`, *optional*): Jinja prompt template; defaults to Vicuna v1 (causal LMs) or the plain
            BLIP-2 prompt (seq2seq).
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        qformer_tokenizer=None,
        bridge_tokenizer=None,
        num_candidate_frames: int = 32,
        max_flow_steps: int = 64,
        flow_config: dict | None = None,
        seq2seq: bool = False,
        max_question_tokens: int = 128,
        max_video_duration_s: float | None = DEFAULT_MAX_DURATION_S,
        max_video_pixels: int | None = DEFAULT_MAX_PIXELS,
        frame_alignment: str = "exact",
        chat_template: str | None = None,
        **kwargs,
    ):
        if num_candidate_frames < 1 or max_flow_steps < 1:
            raise ValueError(
                f"num_candidate_frames and max_flow_steps must be >= 1, got {num_candidate_frames}, {max_flow_steps}"
            )
        self.num_candidate_frames = num_candidate_frames
        self.max_flow_steps = max_flow_steps
        self.flow_config = FlowConfig.from_dict(flow_config or {}).to_dict()
        # relative `flow_config["raft_weights"]` -> its file in the folder (or Hub repo) the processor was loaded
        # from, set by `from_pretrained`; not saved, so that the saved config keeps the relative path
        self._resolved_raft_weights: dict[str, str] = {}
        self.seq2seq = seq2seq
        self.max_question_tokens = max_question_tokens
        self.max_video_duration_s = max_video_duration_s
        self.max_video_pixels = max_video_pixels
        if frame_alignment not in ("exact", "keyframe"):
            raise ValueError(f"frame_alignment must be 'exact' or 'keyframe', got {frame_alignment!r}")
        self.frame_alignment = frame_alignment
        if chat_template is None:
            chat_template = PLAIN_CHAT_TEMPLATE if seq2seq else VICUNA_CHAT_TEMPLATE
        super().__init__(image_processor, tokenizer, qformer_tokenizer, bridge_tokenizer, chat_template=chat_template)

    # ---- videos ----------------------------------------------------------------------------------------------------

    @property
    def image_size(self) -> int:
        size = self.image_processor.size
        return int(size["height"] if "height" in size else size["shortest_edge"])

    def _decode_size(self) -> tuple[int, int]:
        """Frames are squashed to one square size by the decoder: the larger of the image and flow sizes."""
        side = max(self.image_size, FlowConfig.from_dict(self.flow_config).size)
        return side, side

    def load_video(self, video: Any, name: str = "video") -> VideoClip:
        """Read one video's candidate and flow frames.

        Args:
            video: a path, bytes, binary file object, an already read [`VideoClip`], decoded frames as a uint8
                array `(frames, H, W, 3)`, or a list of PIL images / `(H, W, 3)` arrays (all frames of the video).
            name: how errors refer to this input.
        """
        if isinstance(video, VideoClip):
            return video
        if isinstance(video, (str, os.PathLike, bytes, bytearray, memoryview)) or hasattr(video, "read"):
            return read_video(
                video,
                num_candidates=self.num_candidate_frames,
                max_flow_steps=self.max_flow_steps,
                size=self._decode_size(),
                max_duration_s=self.max_video_duration_s,
                max_pixels=self.max_video_pixels,
                alignment=self.frame_alignment,
            )
        return self._clip_from_frames(video, name)

    def _clip_from_frames(self, frames: Any, name: str) -> VideoClip:
        if isinstance(frames, (list, tuple)):
            if not frames:
                raise VideoDecodeError(f"{name}: an empty list of frames")
            frames = np.stack(
                [np.asarray(frame.convert("RGB") if hasattr(frame, "convert") else frame) for frame in frames]
            )
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise VideoDecodeError(
                f"{name}: decoded frames must be an array (frames >= 1, H, W, 3), got {frames.shape}"
            )
        if frames.dtype != np.uint8:
            raise VideoDecodeError(f"{name}: decoded frames must be uint8 RGB, got {frames.dtype}")
        candidates = sample_candidate_indices(len(frames), self.num_candidate_frames)
        flow_indices = sample_flow_indices(len(frames), self.max_flow_steps)
        flow_ends = flow_pair_ends(flow_indices, len(frames))
        unknown = np.full(len(candidates), np.nan)  # decoded frames carry no timing
        return VideoClip(
            metadata=None,
            candidate_indices=candidates,
            candidate_frames=frames[candidates],
            candidate_timestamps=unknown,
            flow_indices=flow_indices,
            flow_frames=frames[flow_indices],
            flow_next_frames=frames[flow_ends],
            flow_timestamps=np.full(len(flow_indices), np.nan),
        )

    # ---- prompts ---------------------------------------------------------------------------------------------------

    def build_prompt(self, question: str, media: str | None) -> str:
        """The language model's prompt for one question, from the chat template (`media`: video, image or None)."""
        content = ([{"type": media}] if media else []) + [{"type": "text", "text": question}]
        return self.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )

    def _language_inputs(self, prompts: list[str], answers: Sequence[str] | None, padding_side: str) -> dict:
        tokenizer = self.tokenizer
        prompt_ids = tokenizer(prompts, add_special_tokens=True)["input_ids"]
        labels = None
        if answers is not None:
            if tokenizer.eos_token_id is None:
                raise ValueError("the language-model tokenizer has no eos_token_id to end answers with")
            if self.seq2seq:
                # exactly one EOS (the original's T5 labels ended with two)
                answer_ids = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
                labels = [ids + [tokenizer.eos_token_id] for ids in answer_ids]
            else:
                answer_ids = tokenizer([" " + answer for answer in answers], add_special_tokens=False)["input_ids"]
                labels = [
                    [IGNORE_INDEX] * len(p) + a + [tokenizer.eos_token_id]
                    for p, a in zip(prompt_ids, answer_ids, strict=True)
                ]
                prompt_ids = [p + a + [tokenizer.eos_token_id] for p, a in zip(prompt_ids, answer_ids, strict=True)]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        encoded = {
            "input_ids": _pad(prompt_ids, pad_id, padding_side),
            "attention_mask": _pad([[1] * len(ids) for ids in prompt_ids], 0, padding_side),
        }
        if labels is not None:
            encoded["labels"] = _pad(labels, IGNORE_INDEX, "right" if self.seq2seq else padding_side)
        return encoded

    def _question_inputs(self, tokenizer, questions: list[str], prefix: str) -> dict:
        encoded = tokenizer(
            questions, padding=True, truncation=True, max_length=self.max_question_tokens, return_tensors="pt"
        )
        return {f"{prefix}_input_ids": encoded["input_ids"], f"{prefix}_attention_mask": encoded["attention_mask"]}

    # ---- __call__ --------------------------------------------------------------------------------------------------

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        videos: Any = None,
        images: Any = None,
        answers: str | Sequence[str] | None = None,
        padding_side: str | None = None,
        return_tensors: str = "pt",
        flows: Any = None,
        **kwargs,
    ) -> BatchFeature:
        r"""
        Prepare a batch.

        Args:
            text: one question or a list of questions (the batch).
            videos: per question a video (see `load_video`) or None; a single video for a single question.
            images: per question a PIL image / `(H, W, 3)` uint8 array or None; a single image for a single question.
                A sample has a video, an image or neither (text-only), never both.
            answers: target answers (training): causal LMs get `prompt + answer + EOS` with `labels` on the answer
                only; seq2seq LMs get the answer as `labels`.
            padding_side: of the language-model inputs; defaults to "right" with answers (training) and "left"
                without (batched generation).
            return_tensors: only `"pt"`.
            flows: per question a precomputed flow `(L, 2, S, S)` (what `video_flow` returns for its video, for
                instance read back from the side shards of `videotgb data flow`) or None. A sample with a flow uses
                it instead of computing one from its video; a flow without a video gives a bridge-only sample (no
                `pixel_values`), all that the bridge needs.

        Returns:
            [`BatchFeature`] with `input_ids`, `attention_mask` (+ `labels`), `bridge_input_ids`,
            `bridge_attention_mask`, `qformer_input_ids`, `qformer_attention_mask`, and when any sample has frames
            `pixel_values` `(batch, frames, 3, size, size)` with `frame_mask`, and when any sample has a video `flow`
            `(batch, steps, 2, S, S)` with `flow_mask`.
        """
        if kwargs:
            raise TypeError(f"VideoTGBProcessor got unexpected arguments {sorted(kwargs)}")
        if return_tensors != "pt":
            raise ValueError(
                f"VideoTGBProcessor returns PyTorch tensors only (return_tensors='pt'), got {return_tensors!r}"
            )
        if text is None:
            raise ValueError("text (the questions) is required")
        single = isinstance(text, str)
        questions = [text] if single else list(text)
        if not questions or not all(isinstance(question, str) for question in questions):
            raise ValueError("text must be a question or a non-empty list of questions (str)")
        batch_size = len(questions)
        videos = _per_sample(videos, batch_size, single, "videos")
        images = _per_sample(images, batch_size, single, "images")
        flows = _per_sample(flows, batch_size, single, "flows")
        if answers is not None:
            answers = [answers] if isinstance(answers, str) else list(answers)
            if len(answers) != batch_size:
                raise ValueError(f"got {len(answers)} answers for {batch_size} questions")
        padding_side = padding_side or ("right" if answers is not None else "left")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")

        clips: list[VideoClip | None] = []
        for row, (video, image) in enumerate(zip(videos, images, strict=True)):
            if video is not None and image is not None:
                raise ValueError(f"sample {row} has both a video and an image; give one or the other")
            name = video if isinstance(video, (str, os.PathLike)) else f"videos[{row}]"
            try:
                clips.append(None if video is None else self.load_video(video, str(name)))
            except VideoDecodeError as error:
                raise VideoDecodeError(f"sample {row}: {error}") from error

        for row, (flow, image) in enumerate(zip(flows, images, strict=True)):
            if flow is not None and image is not None:
                raise ValueError(f"sample {row} has a flow and an image; a precomputed flow belongs to a video")
        media = [
            "video" if clip is not None or flow is not None else "image" if image is not None else None
            for clip, image, flow in zip(clips, images, flows, strict=True)
        ]
        encoded: dict[str, torch.Tensor] = {}
        encoded.update(
            self._language_inputs(
                [self.build_prompt(q, m) for q, m in zip(questions, media, strict=True)], answers, padding_side
            )
        )
        encoded.update(self._question_inputs(self.bridge_tokenizer, questions, "bridge"))
        encoded.update(self._question_inputs(self.qformer_tokenizer, questions, "qformer"))
        if any(clip is not None or image is not None for clip, image in zip(clips, images, strict=True)):
            encoded.update(self._visual_inputs(clips, images))
        if any(medium == "video" for medium in media):
            encoded.update(self._flow_inputs(clips, flows))
        return BatchFeature(encoded, tensor_type="pt")

    def _visual_inputs(self, clips: list[VideoClip | None], images: list[Any]) -> dict:
        num_frames = self.num_candidate_frames if any(clip is not None for clip in clips) else 1
        size = self.image_size
        pixel_values = torch.zeros(len(clips), num_frames, 3, size, size)
        frame_mask = torch.zeros(len(clips), num_frames, dtype=torch.long)
        for row, (clip, image) in enumerate(zip(clips, images, strict=True)):
            if clip is not None:
                frames = self.image_processor(
                    list(clip.candidate_frames), resample=PILImageResampling.BILINEAR, return_tensors="pt"
                )["pixel_values"]
            elif image is not None:
                frames = self.image_processor(image, resample=PILImageResampling.BICUBIC, return_tensors="pt")[
                    "pixel_values"
                ]
            else:
                continue
            pixel_values[row, : len(frames)] = frames
            frame_mask[row, : len(frames)] = 1
        return {"pixel_values": pixel_values, "frame_mask": frame_mask}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> VideoTGBProcessor:
        """`ProcessorMixin.from_pretrained`, then a relative `flow_config["raft_weights"]` (RAFT weights stored in the
        checkpoint, as the converted original release has them) is found in the folder, or in the Hub repo, that the
        processor was loaded from. The saved config keeps the relative path."""
        processor = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        weights = processor.flow_config.get("raft_weights")
        if weights is not None and not os.path.isabs(weights):
            processor._resolved_raft_weights[weights] = _checkpoint_file(
                pretrained_model_name_or_path, weights, kwargs
            )
        return processor

    def flow_settings(self) -> FlowConfig:
        """`flow_config` as a `FlowConfig`, with RAFT weights stored in the checkpoint resolved to their file."""
        config = FlowConfig.from_dict(self.flow_config)
        config.raft_weights = self._resolved_raft_weights.get(config.raft_weights, config.raft_weights)
        return config

    def video_flow(self, clip: VideoClip) -> torch.FloatTensor:
        """The `(L, 2, S, S)` optical flow of a clip's `L` flow steps, computed with `flow_config`: what the bridge
        reads for this video (`__call__` and `videotgb data flow` both call this)."""
        return compute_flow(clip.flow_frames, self.flow_settings(), next_frames=clip.flow_next_frames)

    def _checked_flow(self, flow: Any, clip: VideoClip | None, row: int) -> torch.FloatTensor:
        """A precomputed flow as a float tensor, after checking it has the shape this processor would compute."""
        size = FlowConfig.from_dict(self.flow_config).size
        flow = torch.as_tensor(flow).float()
        if flow.ndim != 4 or flow.shape[1:] != (2, size, size) or not 1 <= len(flow) <= self.max_flow_steps:
            raise ValueError(
                f"flows[{row}] must have shape (L, 2, {size}, {size}) with 1 <= L <= {self.max_flow_steps} (this "
                f"processor's flow size and max_flow_steps), got {tuple(flow.shape)}"
            )
        if clip is not None and len(flow) != len(clip.flow_indices):
            raise ValueError(f"flows[{row}] has {len(flow)} steps but its video has {len(clip.flow_indices)}")
        return flow

    def _flow_inputs(self, clips: list[VideoClip | None], given: list[Any]) -> dict:
        size = FlowConfig.from_dict(self.flow_config).size
        flows: list[torch.Tensor | None] = []
        for row, (clip, flow) in enumerate(zip(clips, given, strict=True)):
            if flow is not None:
                flows.append(self._checked_flow(flow, clip, row))
            else:
                flows.append(None if clip is None else self.video_flow(clip))
        steps = max(len(flow) for flow in flows if flow is not None)
        flow = torch.zeros(len(clips), steps, 2, size, size)
        flow_mask = torch.zeros(len(clips), steps, dtype=torch.long)
        for row, video_flow in enumerate(flows):
            if video_flow is not None:
                flow[row, : len(video_flow)] = video_flow
                flow_mask[row, : len(video_flow)] = 1
        return {"flow": flow, "flow_mask": flow_mask}

    # ---- decoding and checks ---------------------------------------------------------------------------------------

    def batch_decode(self, *args, **kwargs) -> list[str]:
        """The language-model tokenizer's `batch_decode`."""
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs) -> str:
        """The language-model tokenizer's `decode`."""
        return self.tokenizer.decode(*args, **kwargs)

    def check_chat_template(self) -> None:
        """Raise ValueError when the text that the chat template itself writes (role names, `<video>` / `<image>`
        markers, separators) does not tokenise into known tokens of the language-model tokenizer.

        A word-level or lowercasing tokenizer can turn `USER` or `image` into the unknown token, or into an id outside
        its own vocabulary; the model would then read every prompt wrongly, or fail with an index error.
        """
        tokenizer = self.tokenizer
        vocabulary_size = len(tokenizer)
        unknown = tokenizer.unk_token_id
        problems = []
        for media in ("video", "image", None):
            prompt = self.build_prompt("", media)
            for token_id in tokenizer(prompt, add_special_tokens=True)["input_ids"]:
                if token_id == unknown or not 0 <= token_id < vocabulary_size:
                    piece = tokenizer.convert_ids_to_tokens(token_id) if token_id < vocabulary_size else "?"
                    problems.append(f"{prompt!r} gives id {token_id} ({piece})")
                    break
        if problems:
            raise ValueError(
                f"the chat template writes text that the language-model tokenizer ({vocabulary_size} tokens) cannot "
                "represent: " + "; ".join(problems)
            )

    def check_model_config(self, config) -> None:
        """Raise ValueError when this processor prepares inputs the model was not built for (frame counts, sizes,
        flow estimator, token ids beyond an embedding table)."""
        flow = FlowConfig.from_dict(self.flow_config)
        bridge = config.bridge_config
        problems = []
        for name, tokenizer, vocab_size in (
            ("tokenizer", self.tokenizer, config.text_config.vocab_size),
            ("qformer_tokenizer", self.qformer_tokenizer, config.qformer_config.vocab_size),
            ("bridge_tokenizer", self.bridge_tokenizer, bridge.vocab_size),
        ):
            if name == "qformer_tokenizer" and not config.qformer_text_input:
                continue  # BLIP-2's Q-Former reads no text
            largest = max(tokenizer.get_vocab().values())
            if largest >= vocab_size:
                problems.append(f"{name} has token ids up to {largest}, beyond the model's vocab_size {vocab_size}")
        if self.num_candidate_frames != config.num_candidate_frames:
            problems.append(
                f"num_candidate_frames {self.num_candidate_frames} != model's {config.num_candidate_frames}"
            )
        if flow.size != bridge.flow_size:
            problems.append(f"flow size {flow.size} != bridge flow_size {bridge.flow_size}")
        if flow.estimator != bridge.flow_estimator:
            problems.append(f"flow estimator {flow.estimator!r} != the bridge's {bridge.flow_estimator!r}")
        if self.max_flow_steps > bridge.max_flow_steps:
            problems.append(f"max_flow_steps {self.max_flow_steps} > the bridge's limit {bridge.max_flow_steps}")
        if self.image_size != config.vision_config.image_size:
            problems.append(f"image size {self.image_size} != vision image_size {config.vision_config.image_size}")
        if self.seq2seq == config.use_decoder_only_language_model:
            problems.append(f"seq2seq={self.seq2seq} but the language model is {config.text_config.model_type}")
        if problems:
            raise ValueError("processor and model disagree: " + "; ".join(problems))

    @classmethod
    def from_blip_and_bert(
        cls,
        vlm_name_or_path: str,
        bert_name_or_path: str,
        model_config,
        hub_kwargs: dict | None = None,
        **processor_kwargs,
    ) -> VideoTGBProcessor:
        r"""
        The processor for a model built by `VideoTGBForConditionalGeneration.from_blip_and_bert(vlm, bert)`, from the
        same two sources.

        The language-model tokenizer, the Q-Former tokenizer (InstructBLIP, in `qformer_tokenizer/`) and the image
        processor come from the BLIP-2 / InstructBLIP checkpoint; the bridge tokenizer from the BERT checkpoint (BLIP-2's Q-Former
        reads no text, so there the BERT tokenizer fills that slot too). Frame size, candidate count, flow estimator
        and flow size, and the kind of language model are read from `model_config`, so that
        `check_model_config(model_config)` passes.

        Args:
            vlm_name_or_path: BLIP-2 / InstructBLIP folder or Hub id (with its processor files).
            bert_name_or_path: BERT folder or Hub id (with its tokenizer files).
            model_config: the [`VideoTGBConfig`] of the model built from them.
            hub_kwargs: `revision`, `token`, `cache_dir`, ... for both sources.
            processor_kwargs: other [`VideoTGBProcessor`] arguments (`max_flow_steps`, `chat_template`, ...).
        """
        from transformers import AutoImageProcessor, AutoTokenizer

        hub_kwargs = dict(hub_kwargs or {})
        # The tokenizers are read as saved: InstructBLIP's processor class would add an `<image>` token on loading,
        # which the language model of an original checkpoint has no embedding for.
        try:
            image_processor = AutoImageProcessor.from_pretrained(vlm_name_or_path, **hub_kwargs)
            tokenizer = AutoTokenizer.from_pretrained(vlm_name_or_path, **hub_kwargs)
            if model_config.qformer_text_input:
                qformer_tokenizer = AutoTokenizer.from_pretrained(
                    vlm_name_or_path, subfolder="qformer_tokenizer", **hub_kwargs
                )
            else:  # BLIP-2's Q-Former reads no text
                qformer_tokenizer = AutoTokenizer.from_pretrained(bert_name_or_path, **hub_kwargs)
        except (OSError, ValueError) as error:
            raise OSError(
                f"{vlm_name_or_path}: cannot load its tokenizer, Q-Former tokenizer (qformer_tokenizer/) or image "
                f"processor: {error}"
            ) from error
        try:
            bridge_tokenizer = AutoTokenizer.from_pretrained(bert_name_or_path, **hub_kwargs)
        except (OSError, ValueError) as error:
            raise OSError(f"{bert_name_or_path}: cannot load its tokenizer: {error}") from error
        image_size = model_config.vision_config.image_size
        image_processor.size = {"height": image_size, "width": image_size}
        bridge = model_config.bridge_config
        flow_config = {
            "estimator": bridge.flow_estimator,
            "size": bridge.flow_size,
            **processor_kwargs.pop("flow_config", {}),
        }
        processor_kwargs.setdefault("max_flow_steps", min(64, bridge.max_flow_steps))
        return cls(
            image_processor,
            tokenizer,
            qformer_tokenizer,
            bridge_tokenizer,
            num_candidate_frames=model_config.num_candidate_frames,
            flow_config=flow_config,
            seq2seq=not model_config.use_decoder_only_language_model,
            **processor_kwargs,
        )

    @property
    def model_input_names(self) -> list[str]:
        return [
            "input_ids",
            "attention_mask",
            "labels",
            "pixel_values",
            "frame_mask",
            "flow",
            "flow_mask",
            "bridge_input_ids",
            "bridge_attention_mask",
            "qformer_input_ids",
            "qformer_attention_mask",
        ]


def _per_sample(values: Any, batch_size: int, single: bool, name: str) -> list[Any]:
    """One entry per question: a single value for a single question, else a list of the batch's length."""
    if values is None:
        return [None] * batch_size
    if single:
        return [values]
    if not isinstance(values, (list, tuple)) or len(values) != batch_size:
        raise ValueError(f"{name} must be a list with one entry (or None) per question ({batch_size})")
    return list(values)


def _checkpoint_file(name_or_path: str | os.PathLike, filename: str, hub_kwargs: dict) -> str:
    """Path of `filename` inside a checkpoint folder, or of its cached download from a Hub repo; OSError naming both
    when it is missing."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, hub_kwargs.get("subfolder") or "", filename)
        if not os.path.isfile(path):
            raise OSError(f"{name_or_path}: flow_config.raft_weights names {filename}, which is not in the folder")
        return path
    from transformers.utils import cached_file

    wanted = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
    return cached_file(str(name_or_path), filename, **{key: hub_kwargs[key] for key in wanted if key in hub_kwargs})


def _pad(rows: list[list[int]], value: int, side: str) -> torch.Tensor:
    length = max(len(row) for row in rows)
    padded = [
        [value] * (length - len(row)) + row if side == "left" else row + [value] * (length - len(row)) for row in rows
    ]
    return torch.tensor(padded, dtype=torch.long)


__all__ = ["PLAIN_CHAT_TEMPLATE", "VICUNA_CHAT_TEMPLATE", "VideoTGBProcessor"]
