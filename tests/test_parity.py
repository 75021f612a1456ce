"""Given the same frames, VideoTGB computes exactly what transformers' BLIP-2 / InstructBLIP-Video compute, and
checkpoints saved by transformers load into VideoTGB without renaming."""

from __future__ import annotations

import torch
from conftest import LLAMA, QFORMER, T5, VISION, randomize_, tiny_config, tiny_model
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipVideoConfig,
    InstructBlipVideoForConditionalGeneration,
)

from videotgb import VideoTGBForConditionalGeneration

PLACEHOLDER = 99  # the reference models' image / video token id


def _reference_config(config_class, text_config, num_query_tokens=4, **kwargs):
    return config_class(
        vision_config=dict(VISION),
        qformer_config=dict(QFORMER),
        text_config=dict(text_config),
        num_query_tokens=num_query_tokens,
        **kwargs,
    )


def _load_reference_weights(model: VideoTGBForConditionalGeneration, reference) -> None:
    result = model.load_state_dict(reference.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert all(key.startswith("bridge.") for key in result.missing_keys), result.missing_keys


def test_logits_match_instructblip_video_with_llama():
    torch.manual_seed(0)
    reference = InstructBlipVideoForConditionalGeneration(
        _reference_config(InstructBlipVideoConfig, LLAMA, video_token_index=PLACEHOLDER)
    ).eval()
    randomize_(reference)
    model = tiny_model("llama", num_keyframes=4, frame_aggregation="concat")
    _load_reference_weights(model, reference)

    frames = torch.randn(2, 4, 3, 28, 28)
    qformer_ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]])
    qformer_mask = (qformer_ids != 0).long()
    text_ids = torch.tensor([[1, 20, 21, 22, 23], [1, 30, 31, 32, 33]])
    visual_tokens = 4 * 4
    reference_ids = torch.cat([torch.full((2, visual_tokens), PLACEHOLDER), text_ids], dim=1)
    with torch.no_grad():
        expected = reference(
            pixel_values=frames,
            qformer_input_ids=qformer_ids,
            qformer_attention_mask=qformer_mask,
            input_ids=reference_ids,
        ).logits
        ours = model(
            pixel_values=frames,
            keyframe_indices=torch.arange(4).expand(2, 4),
            qformer_input_ids=qformer_ids,
            qformer_attention_mask=qformer_mask,
            input_ids=text_ids,
        )
    assert ours.logits.shape == expected.shape
    assert (ours.logits - expected).abs().max() <= 1e-5


def test_logits_match_blip2_with_t5_on_one_frame():
    torch.manual_seed(0)
    reference = Blip2ForConditionalGeneration(_reference_config(Blip2Config, T5, image_token_index=PLACEHOLDER)).eval()
    randomize_(reference)
    model = tiny_model("t5", num_candidate_frames=1, num_keyframes=1, qformer_text_input=False)
    _load_reference_weights(model, reference)

    image = torch.randn(2, 3, 28, 28)
    text_ids = torch.tensor([[20, 21, 22, 1], [30, 31, 1, 0]])
    text_mask = (text_ids != 0).long()
    labels = torch.tensor([[40, 41, 1], [42, 1, -100]])
    reference_ids = torch.cat([torch.full((2, 4), PLACEHOLDER), text_ids], dim=1)
    reference_mask = torch.cat([torch.ones(2, 4, dtype=torch.long), text_mask], dim=1)
    with torch.no_grad():
        expected = reference(pixel_values=image, input_ids=reference_ids, attention_mask=reference_mask, labels=labels)
        ours = model(
            pixel_values=image[:, None],
            keyframe_indices=torch.zeros(2, 1, dtype=torch.long),
            input_ids=text_ids,
            attention_mask=text_mask,
            labels=labels,
        )
    assert (ours.logits - expected.logits).abs().max() <= 1e-5
    assert torch.allclose(ours.loss, expected.loss, atol=1e-6)


def test_mean_aggregation_averages_the_per_frame_tokens():
    model = randomize_(tiny_model("llama", num_keyframes=2, frame_aggregation="mean"))
    concat = tiny_model("llama", num_keyframes=2, frame_aggregation="concat")
    concat.load_state_dict(model.state_dict())
    frames = torch.randn(1, 8, 3, 28, 28)
    qformer_ids = torch.tensor([[5, 6, 7]])
    keyframes = torch.tensor([[2, 6]])
    frame_counts = torch.tensor([8])
    with torch.no_grad():
        mean_tokens, _ = model.get_video_features(frames, keyframes, frame_counts, qformer_ids)
        concat_tokens, _ = concat.get_video_features(frames, keyframes, frame_counts, qformer_ids)
    assert mean_tokens.shape == (1, 4, 32) and concat_tokens.shape == (1, 8, 32)
    assert torch.allclose(mean_tokens, concat_tokens.view(1, 2, 4, 32).mean(1), atol=1e-6)


def test_saved_instructblip_folder_loads_with_only_the_bridge_new(tmp_path, minilm_path):
    torch.manual_seed(0)
    reference = InstructBlipForConditionalGeneration(_reference_config(InstructBlipConfig, LLAMA)).eval()
    reference.save_pretrained(tmp_path / "instructblip")

    model = VideoTGBForConditionalGeneration.from_blip_and_bert(
        str(tmp_path / "instructblip"),
        str(minilm_path),
        num_candidate_frames=8,
        num_keyframes=2,
        bridge_overrides={"flow_size": 32, "fusion_layer": 3},
    )
    assert model.config.qformer_text_input
    assert model.config.bridge_config.hidden_size == 384 and model.config.bridge_config.num_hidden_layers == 6
    assert list(model.bridge.encoder.layer.keys()) == ["3", "4", "5"]
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key

    from safetensors.torch import load_file

    bert = load_file(minilm_path / "model.safetensors")
    bridge_state = model.bridge.state_dict()
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.4.attention.self.query.weight"):
        assert torch.equal(bridge_state[key], bert[key])


def test_saved_blip2_t5_folder_loads_as_blip2_style(tmp_path, minilm_path):
    torch.manual_seed(0)
    reference = Blip2ForConditionalGeneration(_reference_config(Blip2Config, T5)).eval()
    reference.save_pretrained(tmp_path / "blip2")
    model = VideoTGBForConditionalGeneration.from_blip_and_bert(
        str(tmp_path / "blip2"),
        str(minilm_path),
        num_candidate_frames=8,
        num_keyframes=2,
        bridge_overrides={"flow_size": 32},
    )
    assert not model.config.qformer_text_input and not model.config.use_decoder_only_language_model
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_from_blip_and_bert_passes_loading_arguments_through(tmp_path, minilm_path):
    torch.manual_seed(0)
    InstructBlipForConditionalGeneration(_reference_config(InstructBlipConfig, LLAMA)).save_pretrained(tmp_path)
    model = VideoTGBForConditionalGeneration.from_blip_and_bert(
        str(tmp_path),
        str(minilm_path),
        num_candidate_frames=8,
        num_keyframes=2,
        dtype=torch.bfloat16,
        bridge_overrides={"flow_size": 32},
    )
    assert model.language_model.lm_head.weight.dtype == torch.bfloat16
    assert model.bridge.encoder.layer["3"].attention.self.query.weight.dtype == torch.bfloat16
    assert model.query_tokens.dtype == torch.float32
    assert model.config.num_keyframes == 2


def test_from_blip_and_bert_rejects_a_checkpoint_that_is_not_blip(tmp_path, minilm_path):
    import pytest

    with pytest.raises(ValueError, match="not BLIP-2 / InstructBLIP"):
        VideoTGBForConditionalGeneration.from_blip_and_bert(str(minilm_path), str(minilm_path))


def test_tiny_config_sizes():
    config = tiny_config()
    assert config.bridge_config.first_layer == 2
    assert config.num_visual_tokens == 8
