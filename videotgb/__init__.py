"""VideoTGB for Hugging Face Transformers: long-video question answering through K keyframes chosen by a Temporal
Grounding Bridge from optical flow (EMNLP 2024, arXiv 2402.16050).

Importing the package registers the classes with transformers' Auto classes and for remote code, so that
`save_pretrained` writes `auto_map` and copies the modeling files into the checkpoint folder.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from .configuration_videotgb import VideoTGBBridgeConfig, VideoTGBConfig
from .init_checkpoint import init_from_blip_and_bert
from .keyframes import bin_midpoints, reduce_to_k, select_keyframes, spans_to_candidates
from .modeling_videotgb import (
    VideoTGBBridgeModel,
    VideoTGBBridgeOutput,
    VideoTGBForConditionalGeneration,
    VideoTGBModel,
    VideoTGBOutput,
    VideoTGBPreTrainedModel,
    WrongModelTypeError,
)
from .processing_videotgb import VideoTGBProcessor

__version__ = "0.1.0"

AutoConfig.register(VideoTGBConfig.model_type, VideoTGBConfig, exist_ok=True)
AutoConfig.register(VideoTGBBridgeConfig.model_type, VideoTGBBridgeConfig, exist_ok=True)
AutoModel.register(VideoTGBConfig, VideoTGBForConditionalGeneration, exist_ok=True)
AutoModel.register(VideoTGBBridgeConfig, VideoTGBBridgeModel, exist_ok=True)
AutoModelForImageTextToText.register(VideoTGBConfig, VideoTGBForConditionalGeneration, exist_ok=True)

VideoTGBConfig.register_for_auto_class()
VideoTGBBridgeConfig.register_for_auto_class()
VideoTGBForConditionalGeneration.register_for_auto_class("AutoModel")
VideoTGBBridgeModel.register_for_auto_class("AutoModel")
VideoTGBProcessor.register_for_auto_class()

__all__ = [
    "VideoTGBBridgeConfig",
    "VideoTGBBridgeModel",
    "VideoTGBBridgeOutput",
    "VideoTGBConfig",
    "VideoTGBForConditionalGeneration",
    "VideoTGBModel",
    "VideoTGBOutput",
    "VideoTGBPreTrainedModel",
    "VideoTGBProcessor",
    "WrongModelTypeError",
    "bin_midpoints",
    "init_from_blip_and_bert",
    "reduce_to_k",
    "select_keyframes",
    "spans_to_candidates",
]
