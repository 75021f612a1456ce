"""The embedded default of `videotgb demo`: a tiny checkpoint and a synthetic video, made offline in seconds.

The checkpoint is a real VideoTGB folder (remote code, safetensors, processor with its three tokenizers) at a tiny
size (hidden width 32, two or four layers per part, 56-pixel frames, 32-pixel DIS flow) with random weights, and tokenizers built with the `tokenizers` library from a small word list;
the video is a textured square that moves right, then down, encoded with PyAV. Until a tiny *trained* model ships,
the demo shows the pipeline (decoding, flow, the bridge's keyframes, generation), not meaningful answers.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

WORDS = (
    "a about above after all an and are as at away be before behind below between blue both but by can car "
    "circle color corner did do does down during each end first for from go goes green happens has here how in "
    "into is it its left long man many middle more most move moves moving near next no not of on one or other "
    "out over person red right scene screen second see seen shape side slowly small so some square start stops "
    "that the then there these thing this time to top turn two under up video was what when where which while "
    "white who why will with woman yes you"
).split()


def build_tokenizers(words=WORDS):
    """A Vicuna-like word-level tokenizer for the language model and a BERT-like WordPiece one (uncased), both
    knowing `words` (lowercase; the LM tokenizer also knows them capitalised)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    punctuation = list("?.,:!<>\n")
    # Cased, like Vicuna's tokenizer: the chat template's `USER` / `ASSISTANT` are tokens of their own, and questions
    # may start with a capital. `dict.fromkeys` keeps the ids contiguous (a repeated word would leave a gap).
    llm_tokens = ["<unk>", "<s>", "</s>", "<pad>", *punctuation, *words, *(word.capitalize() for word in words)]
    llm_tokens += ["USER", "ASSISTANT", "video", "image"]
    llm_vocab = {token: index for index, token in enumerate(dict.fromkeys(llm_tokens))}
    llm = Tokenizer(models.WordLevel(llm_vocab, unk_token="<unk>"))
    llm.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    llm.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    llm.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=llm, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )

    bert_tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *punctuation[:-1], *words]
    bert_vocab = {token: index for index, token in enumerate(dict.fromkeys(bert_tokens))}
    bert = Tokenizer(models.WordPiece(bert_vocab, unk_token="[UNK]"))
    bert.normalizer = normalizers.BertNormalizer(lowercase=True)
    bert.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    bert.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    bert.decoder = decoders.WordPiece()
    bert_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bert,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    return tokenizer, bert_tokenizer


def write_demo_video(path: Path, seconds: int = 20, fps: int = 10, size: tuple[int, int] = (96, 64)) -> Path:
    """A textured square that moves right during the first half and down during the second (H.264, PyAV)."""
    import av

    width, height = size
    rng = np.random.default_rng(0)
    background = (rng.random((height, width, 1)) * 60 + 40).astype(np.uint8).repeat(3, axis=2)
    square = rng.integers(120, 255, (16, 16, 3), dtype=np.uint8)
    frames = seconds * fps
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            half = frames // 2
            x = 4 + (width - 24) * min(index, half) // half
            y = 4 + (height - 24) * max(index - half, 0) // (frames - half)
            image = background.copy()
            image[y : y + 16, x : x + 16] = square
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def build_demo(output: Path) -> tuple[Path, Path]:
    """Write the tiny checkpoint (model + processor) and the demo video under `output`; return their paths."""
    from transformers import BlipImageProcessor

    from .configuration_videotgb import VideoTGBConfig
    from .modeling_videotgb import VideoTGBForConditionalGeneration
    from .processing_videotgb import VideoTGBProcessor

    output.mkdir(parents=True, exist_ok=True)
    tokenizer, bert_tokenizer = build_tokenizers()
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = VideoTGBConfig(
        vision_config={**small, "image_size": 56, "patch_size": 14, "initializer_range": 0.02},
        qformer_config={**small, "vocab_size": len(bert_tokenizer), "cross_attention_frequency": 1},
        text_config={
            "model_type": "llama",
            **small,
            "num_key_value_heads": 4,
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        bridge_config={
            **small,
            "num_hidden_layers": 4,
            "fusion_layer": 2,
            "vocab_size": len(bert_tokenizer),
            "flow_size": 32,
            "flow_estimator": "dis",
            "max_position_embeddings": 66,
            "max_text_positions": 128,
        },
        num_query_tokens=4,
        frame_aggregation="concat",
    )
    torch.manual_seed(0)
    model = VideoTGBForConditionalGeneration(config)
    processor = VideoTGBProcessor(
        BlipImageProcessor(size={"height": 56, "width": 56}),
        tokenizer,
        bert_tokenizer,
        copy.deepcopy(bert_tokenizer),  # the Q-Former's and the bridge's: two objects, saved in two folders
        num_candidate_frames=config.num_candidate_frames,
        max_flow_steps=64,
        flow_config={"estimator": "dis", "size": 32},
    )
    checkpoint = output / "checkpoint"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    return checkpoint, write_demo_video(output / "demo.mp4")
