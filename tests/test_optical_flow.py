"""Tests of videotgb.optical_flow on synthetic frames with known motion.

RAFT's accuracy needs pretrained weights, which are not available offline: with random weights RAFT is tested for
shapes, input scaling, batching and weight loading; ``VIDEOTGB_RAFT_WEIGHTS`` (and optionally
``VIDEOTGB_RAFT_VARIANT``) enable the accuracy test.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from videotgb import optical_flow
from videotgb.optical_flow import (
    FlowConfig,
    FlowDependencyError,
    compute_flow,
    load_raft,
    load_raft_weights,
    normalize_flow,
    save_raft_weights,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
VELOCITY = (3, -2)  # pixels per frame: right and up (y grows downwards)
RAFT_SIZE = 128  # the smallest size torchvision's RAFT accepts
RAFT_CONFIG = {"estimator": "raft_small", "size": RAFT_SIZE, "raft_iterations": 2}


def smooth_texture(size: int, seed: int, blur: float = 2.0) -> np.ndarray:
    """`(size, size, 3)` uint8 low-pass-filtered noise spanning 0-255 (gradients everywhere, no repeats)."""
    rng = np.random.default_rng(seed)
    freq = np.fft.fftfreq(size)
    gain = np.exp(-((freq[:, None] ** 2 + freq[None, :] ** 2) * (2 * np.pi * blur) ** 2) / 2)
    noise = np.fft.fft2(rng.random((size, size, 3)), axes=(0, 1))
    smooth = np.real(np.fft.ifft2(noise * gain[:, :, None], axes=(0, 1)))
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return np.round(smooth * 255).astype(np.uint8)


def moving_square(
    num_frames: int, size: int, velocity: tuple[int, int] = VELOCITY, seed: int = 0
) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """A textured square (side ``3 * size // 8``) moving by ``velocity`` per frame over a static textured background.

    Returns `(num_frames, size, size, 3)` uint8 frames and the square's (x, y, side) in each frame.
    """
    side = 3 * size // 8
    background, square = smooth_texture(size, seed), smooth_texture(side, seed + 1)
    frames, boxes = [], []
    for t in range(num_frames):
        x, y = size // 4 + velocity[0] * t, size // 2 + velocity[1] * t
        frame = background.copy()
        frame[y : y + side, x : x + side] = square
        frames.append(frame)
        boxes.append((x, y, side))
    return np.stack(frames), boxes


def mean_flow_in_box(flow: torch.Tensor, box: tuple[int, int, int], scale: float = 1.0, margin: int = 3) -> np.ndarray:
    """Mean (x, y) of a `(2, S, S)` flow over a box given in frame pixels (``scale`` = S / frame size)."""
    x, y, side = (round(value * scale) for value in box)
    return flow[:, y + margin : y + side - margin, x + margin : x + side - margin].reshape(2, -1).mean(1).numpy()


def angle_between(a: np.ndarray, b: tuple[float, float]) -> float:
    cosine = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))


def max_magnitude(flow: torch.Tensor) -> float:
    return torch.linalg.vector_norm(flow, dim=1).max().item()


# --- FlowConfig -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", optical_flow.ESTIMATORS)
def test_config_dict_round_trip(estimator, tmp_path):
    config = FlowConfig(estimator=estimator, size=128, raft_weights=tmp_path / "raft.safetensors", normalize=False)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["raft_weights"] == str(tmp_path / "raft.safetensors")
    assert FlowConfig.from_dict(data) == config


def test_config_resolves_raft_iterations():
    assert FlowConfig("raft_large").raft_iterations == 20
    assert FlowConfig("raft_small").raft_iterations == 12
    assert FlowConfig("raft_large", raft_iterations=5).raft_iterations == 5
    assert FlowConfig("dis").raft_iterations is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"estimator": "raft"}, "estimator"),
        ({"estimator": "frame_difference"}, "estimator"),
        ({"size": 4}, "size"),
        ({"size": 32.0}, "size"),
        ({"size": True}, "size"),
        ({"estimator": "raft_small", "size": 132}, "size"),
        ({"estimator": "raft_large", "size": 64}, "size"),
        ({"raft_iterations": 0}, "raft_iterations"),
        ({"raft_iterations": 2.5}, "raft_iterations"),
        ({"raft_weights": 3}, "raft_weights"),
        ({"normalize": "yes"}, "normalize"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": -1e-5}, "epsilon"),
        ({"epsilon": "1e-5"}, "epsilon"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"FlowConfig.{field}"):
        FlowConfig(**kwargs)


def test_config_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="flow_size"):
        FlowConfig.from_dict({"estimator": "dis", "flow_size": 32})


# --- normalize_flow -------------------------------------------------------------------------------------------------


def test_normalize_flow_brings_max_magnitude_just_under_one():
    flow = torch.randn(5, 2, 16, 16, generator=torch.Generator().manual_seed(0)) * 7
    normalized = normalize_flow(flow, epsilon=1e-5)
    assert 1 - 1e-5 < max_magnitude(normalized) < 1
    torch.testing.assert_close(normalized * (max_magnitude(flow) + 1e-5), flow)
    assert torch.equal(flow, torch.randn(5, 2, 16, 16, generator=torch.Generator().manual_seed(0)) * 7)


def test_normalize_flow_keeps_zero_motion_zero():
    normalized = normalize_flow(torch.zeros(3, 2, 8, 8), epsilon=1e-5)
    assert torch.isfinite(normalized).all() and not normalized.any()


@pytest.mark.parametrize(
    ("shape", "epsilon"), [((2, 3, 8, 8), 1e-5), ((2, 8, 8), 1e-5), ((0, 2, 8, 8), 1e-5), ((2, 2, 8, 8), 0.0)]
)
def test_normalize_flow_rejects_bad_input(shape, epsilon):
    with pytest.raises(ValueError):
        normalize_flow(torch.ones(shape), epsilon=epsilon)


# --- OpenCV estimators on known motion ------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["dis", "farneback"])
@pytest.mark.parametrize(("frame_size", "velocity"), [(64, VELOCITY), (128, (6, -4))])
def test_opencv_estimators_recover_known_motion(estimator, frame_size, velocity):
    """A square moving by (+3, -2) px per frame on the 64 x 64 grid (drawn at 64 px, or at 128 px and resized)."""
    frames, boxes = moving_square(4, frame_size, velocity)
    flow = compute_flow(frames, FlowConfig(estimator=estimator, size=64, normalize=False))
    assert flow.shape == (4, 2, 64, 64) and flow.dtype == torch.float32
    for t in range(3):
        mean = mean_flow_in_box(flow[t], boxes[t], scale=64 / frame_size)
        assert mean[0] > 0 and mean[1] < 0, mean
        assert angle_between(mean, VELOCITY) < 20, mean
        np.testing.assert_allclose(mean, VELOCITY, atol=0.5)
        background = flow[t, :, :6, :].abs().mean().item()  # a band the square never reaches
        assert background < 0.1


def test_normalized_flow_is_the_raw_flow_divided_by_its_max():
    frames, _ = moving_square(4, 64)
    raw = compute_flow(frames, FlowConfig("dis", size=64, normalize=False))
    normalized = compute_flow(frames, FlowConfig("dis", size=64, epsilon=1e-5))
    assert 1 - 1e-5 < max_magnitude(normalized) < 1
    torch.testing.assert_close(normalized, normalize_flow(raw, 1e-5), rtol=0, atol=0)


def test_static_video_gives_zero_flow_without_nan():
    frames = np.repeat(smooth_texture(48, seed=3)[None], 5, axis=0)
    flow = compute_flow(frames, FlowConfig("dis", size=32))
    assert torch.isfinite(flow).all() and not flow.any()


# --- frame counts ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [FlowConfig("dis", size=32), FlowConfig(**RAFT_CONFIG)], ids=["dis", "raft_small"])
@pytest.mark.parametrize("normalize", [True, False])
def test_single_frame_gives_one_zero_flow(config, normalize):
    config = FlowConfig.from_dict({**config.to_dict(), "normalize": normalize})
    flow = compute_flow(moving_square(1, 48)[0], config, device="cpu")
    assert flow.shape == (1, 2, config.size, config.size)
    assert torch.isfinite(flow).all() and not flow.any()


def test_two_frames_give_the_pair_flow_twice():
    flow = compute_flow(moving_square(2, 64)[0], FlowConfig("dis", size=64))
    assert flow.shape == (2, 2, 64, 64)
    assert flow[0].abs().max() > 0.5
    assert torch.equal(flow[0], flow[1])


def test_last_flow_is_repeated():
    frames, _ = moving_square(4, 64)
    frames[3] = frames[2]  # no motion between the last two frames
    flow = compute_flow(frames, FlowConfig("dis", size=64, normalize=False))
    assert flow.shape == (4, 2, 64, 64)
    assert torch.equal(flow[3], flow[2])
    assert flow[0].abs().max() > 1 and not flow[2].any()


# --- one function for offline (numpy HWC) and online (tensor CHW) frames --------------------------------------------


@pytest.mark.parametrize(
    ("config", "frame_size"),
    [(FlowConfig("dis", size=32), 48), (FlowConfig("farneback", size=32), 32), (FlowConfig(**RAFT_CONFIG), 160)],
    ids=["dis", "farneback", "raft_small"],
)
def test_numpy_hwc_and_tensor_chw_frames_give_identical_flow(config, frame_size):
    frames, _ = moving_square(3, frame_size)
    offline = compute_flow(frames, config, device="cpu")
    chw = torch.from_numpy(frames).permute(0, 3, 1, 2)
    for online_frames in (chw, chw.float(), chw.contiguous(), list(frames)):
        torch.testing.assert_close(compute_flow(online_frames, config, device="cpu"), offline, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (torch.randn(3, 3, 32, 32), "0-255"),  # CLIP-normalised frames: the original's inference bug
        (torch.full((3, 3, 32, 32), 256.0), "0-255"),
        (torch.full((3, 3, 32, 32), float("nan")), "0-255"),
        (torch.zeros(3, 32, 32, 3, dtype=torch.uint8), "L, 3, H, W"),
        (np.zeros((3, 3, 32, 32), dtype=np.uint8), "L, H, W, 3"),
        (np.zeros((0, 32, 32, 3), dtype=np.uint8), "at least one"),
    ],
)
def test_compute_flow_rejects_frames_that_are_not_0_255_rgb(frames, message):
    with pytest.raises(ValueError, match=message):
        compute_flow(frames, FlowConfig("dis", size=32))


# --- RAFT (random weights: no pretrained weights offline) -----------------------------------------------------------


def test_raft_output_shape_and_scaled_inputs():
    config = FlowConfig(**RAFT_CONFIG)
    frames, _ = moving_square(4, RAFT_SIZE)
    frames[0, 0, 0], frames[0, 0, 1] = 0, 255
    seen = []

    def spy(module, args, kwargs):
        seen.append((args[0].min().item(), args[0].max().item(), args[1].min().item(), args[1].max().item()))
        assert kwargs["num_flow_updates"] == config.raft_iterations

    handle = load_raft(config, device="cpu").register_forward_pre_hook(spy, with_kwargs=True)
    try:
        flow = compute_flow(frames, config, device="cpu", batch_size=2)
    finally:
        handle.remove()
    assert flow.shape == (4, 2, RAFT_SIZE, RAFT_SIZE) and flow.dtype == torch.float32
    assert torch.isfinite(flow).all() and max_magnitude(flow) < 1
    assert len(seen) == 2  # 3 pairs in batches of 2
    assert all(-1 <= value <= 1 for values in seen for value in values)
    assert seen[0][0] == -1 and seen[0][1] == 1  # pixel values 0 and 255 map to the ends of [-1, 1]


def test_raft_batching_does_not_change_the_flow():
    config = FlowConfig(**RAFT_CONFIG, normalize=False)
    frames, _ = moving_square(5, RAFT_SIZE)
    one = compute_flow(frames, config, device="cpu", batch_size=1)
    four = compute_flow(frames, config, device="cpu", batch_size=4)
    torch.testing.assert_close(one, four, rtol=1e-4, atol=1e-4)


def test_raft_model_is_built_once():
    config = FlowConfig(**RAFT_CONFIG)
    assert load_raft(config, device="cpu") is load_raft(FlowConfig(**RAFT_CONFIG), device="cpu")


def test_raft_weights_round_trip_through_safetensors(tmp_path):
    config = FlowConfig(**RAFT_CONFIG)
    frames, _ = moving_square(3, RAFT_SIZE)
    model = load_raft(config, device="cpu")
    reference = compute_flow(frames, config, device="cpu")
    path = tmp_path / "raft_small.safetensors"
    save_raft_weights(model, path)

    file_config = FlowConfig(**RAFT_CONFIG, raft_weights=str(path))
    assert load_raft(file_config, device="cpu") is not model
    torch.testing.assert_close(compute_flow(frames, file_config, device="cpu"), reference, rtol=0, atol=0)
    state_dict = load_raft_weights(path)
    from_state_dict = compute_flow(frames, config, device="cpu", raft_state_dict=state_dict)
    torch.testing.assert_close(from_state_dict, reference, rtol=0, atol=0)


def test_raft_weights_of_the_other_variant_are_refused(tmp_path):
    path = tmp_path / "raft_small.safetensors"
    save_raft_weights(load_raft(FlowConfig(**RAFT_CONFIG), device="cpu"), path)
    with pytest.raises(ValueError, match="holds raft_small weights"):
        load_raft(FlowConfig("raft_large", size=RAFT_SIZE, raft_weights=str(path)), device="cpu")
    with pytest.raises(ValueError, match="do not match torchvision's raft_large"):
        load_raft(FlowConfig("raft_large", size=RAFT_SIZE), state_dict=load_raft_weights(path), device="cpu")


def test_raft_pth_weights_need_explicit_permission(tmp_path):
    config = FlowConfig(**RAFT_CONFIG)
    frames, _ = moving_square(2, RAFT_SIZE)
    reference = compute_flow(frames, config, device="cpu")
    path = tmp_path / "raft_small.pth"
    torch.save(load_raft(config, device="cpu").state_dict(), path)
    pth_config = FlowConfig(**RAFT_CONFIG, raft_weights=str(path))
    with pytest.raises(ValueError, match="allow_pth=True"):
        compute_flow(frames, pth_config, device="cpu")
    torch.testing.assert_close(compute_flow(frames, pth_config, device="cpu", allow_pth=True), reference)


@pytest.mark.skipif(
    not os.environ.get("VIDEOTGB_RAFT_WEIGHTS"),
    reason="no pretrained RAFT weights offline: set VIDEOTGB_RAFT_WEIGHTS to a torchvision RAFT state dict "
    "(.safetensors, or .pth) and VIDEOTGB_RAFT_VARIANT (default raft_large) to test RAFT's accuracy",
)
def test_pretrained_raft_recovers_known_motion():
    variant = os.environ.get("VIDEOTGB_RAFT_VARIANT", "raft_large")
    config = FlowConfig(variant, size=224, raft_weights=os.environ["VIDEOTGB_RAFT_WEIGHTS"], normalize=False)
    frames, boxes = moving_square(3, 224)
    flow = compute_flow(frames, config, allow_pth=True)
    for t in range(2):
        mean = mean_flow_in_box(flow[t], boxes[t])
        assert angle_between(mean, VELOCITY) < 20, mean
        np.testing.assert_allclose(mean, VELOCITY, atol=0.5)


# --- optional dependencies ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["dis", "farneback"])
def test_missing_opencv_raises_a_clear_error(monkeypatch, estimator):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(FlowDependencyError, match=r"pip install opencv-python-headless") as error:
        compute_flow(moving_square(2, 32)[0], FlowConfig(estimator, size=32))
    assert isinstance(error.value, ImportError)


def test_missing_torchvision_raft_raises_a_clear_error(monkeypatch):
    monkeypatch.setattr(optical_flow, "_raft_cache", OrderedDict())
    monkeypatch.setitem(sys.modules, "torchvision.models.optical_flow", None)
    with pytest.raises(FlowDependencyError, match=r"torchvision.*pip install torchvision"):
        compute_flow(moving_square(2, RAFT_SIZE)[0], FlowConfig(**RAFT_CONFIG), device="cpu")


def test_module_imports_without_opencv_or_torchvision():
    code = (
        "import sys; sys.modules['cv2'] = None; sys.modules['torchvision'] = None\n"
        "from videotgb.optical_flow import FlowConfig, normalize_flow\n"
        "assert FlowConfig.from_dict(FlowConfig().to_dict()) == FlowConfig()"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_explicit_pairs_match_consecutive_frames():
    frames = moving_square(6, 64)[0]
    consecutive = compute_flow(frames, FlowConfig("dis", size=32))
    starts, ends = [0, 1, 2, 3, 4, 4], [1, 2, 3, 4, 5, 5]  # the pairs video_io returns for a 6-frame video
    paired = compute_flow(frames[starts], FlowConfig("dis", size=32), next_frames=frames[ends])
    torch.testing.assert_close(paired, consecutive, rtol=0, atol=0)
    sparse = compute_flow(frames[[0, 3]], FlowConfig("dis", size=32), next_frames=frames[[1, 4]])
    torch.testing.assert_close(
        sparse[1], consecutive[3] * consecutive.norm(dim=1).max() / sparse.norm(dim=1).max(), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="next_frames has 2 frames but frames has 3"):
        compute_flow(frames[:3], FlowConfig("dis", size=32), next_frames=frames[:2])
