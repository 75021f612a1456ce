"""Optical flow for the Temporal Grounding Bridge (docs/method.md#flow-steps).

The bridge reads motion, not pixels: for ``L`` frames sampled from a video it consumes a flow tensor of shape
`(L, 2, S, S)`. :func:`compute_flow` is the one function that makes that tensor, used both offline (building training
shards) and online (inference), with the settings recorded in a :class:`FlowConfig` stored alongside the processor and
model, so that a bridge trained on one estimator's flow sees the same estimator, size and scaling at inference.

What :func:`compute_flow` does, in order:

1. Takes ``L`` frames as 0-255 RGB, either `(L, H, W, 3)` (numpy, as decoded) or `(L, 3, H, W)` (a torch tensor).
2. Resizes them to `S x S` (bilinear, antialiased) and rounds back to 0-255 integers, so every estimator sees the
   same frames whatever their original size.
3. Computes the flow of each consecutive pair ``(t, t + 1)``: channel 0 is the horizontal (x, rightwards)
   displacement, channel 1 the vertical (y, downwards) one, in pixels of the `S x S` grid.
4. Repeats the last flow, so ``L`` frames give ``L`` flows (a single frame gives one zero flow).
5. With ``normalize`` (the default) divides the whole video's flow by its largest per-pixel magnitude plus
   ``epsilon`` (:func:`normalize_flow`), as the original did for its training data.

Estimators: ``"dis"`` (OpenCV's DIS, ultrafast preset, ~1 ms per 224² pair on 2 CPU cores: the default),
``"farneback"`` (OpenCV), and ``"raft_small"`` / ``"raft_large"`` (torchvision's RAFT; ~150 ms / ~900 ms per 224²
pair on 2 CPU cores). RAFT weights are never downloaded: they come from a local safetensors file named in the config
(``FlowConfig.raft_weights``) or from a state dict passed in (for instance one carried by a checkpoint); see
:func:`save_raft_weights`. torchvision's RAFT expects images scaled to ``[-1, 1]``; this module does that scaling
from the 0-255 frames. The original VideoTGB fed CLIP-normalised frames to RAFT at inference and skipped the
max-normalisation, so its inference flows differed from its training flows; here there is one code path.

OpenCV and torchvision are installed with the package but imported only inside the functions that need them, so that
this file can travel with a checkpoint's remote code to machines that lack them (loading a checkpoint never needs
them; computing flow with an estimator does).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers.utils import logging

logger = logging.get_logger(__name__)

__all__ = [
    "ESTIMATORS",
    "FlowConfig",
    "FlowDependencyError",
    "compute_flow",
    "load_raft",
    "load_raft_weights",
    "normalize_flow",
    "save_raft_weights",
]

ESTIMATORS = ("dis", "farneback", "raft_small", "raft_large")
RAFT_ESTIMATORS = ("raft_small", "raft_large")
# The original ran RAFT-large with 20 refinement iterations; torchvision's default (and RAFT-small's usual setting)
# is 12.
DEFAULT_RAFT_ITERATIONS = {"raft_large": 20, "raft_small": 12}
# torchvision's RAFT downsamples by 8 and its correlation pyramid needs feature maps of at least 16 x 16.
RAFT_MIN_SIZE = 128
# Frames resized at a time, to bound memory when frames arrive at full resolution.
_RESIZE_CHUNK = 16
_RAFT_CACHE_SIZE = 4
_SAFETENSORS_VARIANT_KEY = "raft_variant"
# Built RAFT models, most recently used last: key -> (the state dict they were built from, or None; model).
_raft_cache: OrderedDict[tuple, tuple[Any, torch.nn.Module]] = OrderedDict()


class FlowDependencyError(ImportError):
    """An optical-flow estimator's optional dependency (OpenCV or torchvision) cannot be imported."""


@dataclass
class FlowConfig:
    """How optical flow is computed; stored with the processor and the model so training and inference agree.

    Args:
        estimator: one of ``"dis"``, ``"farneback"``, ``"raft_small"``, ``"raft_large"``.
        size: side ``S`` of the square flow grid (224 for the real model). RAFT needs a multiple of 8, at least 128.
        raft_iterations: RAFT refinement iterations; ``None`` resolves to 20 for ``raft_large`` (the original's
            setting) and 12 for ``raft_small`` (torchvision's default). Ignored by the other estimators.
        raft_weights: path of a local RAFT state dict in torchvision's naming, a ``.safetensors`` file (a torch
            ``.pth`` only with ``allow_pth=True`` in :func:`compute_flow`). ``None``: weights are passed as a state
            dict, or RAFT is randomly initialised (useful only for tests and benchmarks).
        normalize: divide each video's flow by its largest per-pixel magnitude plus ``epsilon``.
        epsilon: added to the largest magnitude, so that a motionless video stays zero; must be positive.
    """

    estimator: str = "dis"
    size: int = 224
    raft_iterations: int | None = None
    raft_weights: str | None = None
    normalize: bool = True
    epsilon: float = 1e-5

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"FlowConfig.estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if not _is_int(self.size) or self.size < 8:
            raise ValueError(f"FlowConfig.size must be an integer >= 8, got {self.size!r}")
        if self.is_raft and (self.size % 8 != 0 or self.size < RAFT_MIN_SIZE):
            raise ValueError(
                f"FlowConfig.size must be a multiple of 8 and at least {RAFT_MIN_SIZE} for {self.estimator!r} "
                f"(RAFT downsamples by 8 and needs 16 x 16 feature maps), got {self.size}"
            )
        if self.raft_iterations is not None and (not _is_int(self.raft_iterations) or self.raft_iterations < 1):
            raise ValueError(
                f"FlowConfig.raft_iterations must be a positive integer or None, got {self.raft_iterations!r}"
            )
        if self.raft_iterations is None and self.is_raft:
            self.raft_iterations = DEFAULT_RAFT_ITERATIONS[self.estimator]
        if isinstance(self.raft_weights, os.PathLike):
            self.raft_weights = os.fspath(self.raft_weights)
        if self.raft_weights is not None and not isinstance(self.raft_weights, str):
            raise ValueError(f"FlowConfig.raft_weights must be a path or None, got {self.raft_weights!r}")
        if not isinstance(self.normalize, bool):
            # Every invalid field is a ValueError naming it, wrong types included.
            raise ValueError(  # noqa: TRY004
                f"FlowConfig.normalize must be a bool, got {self.normalize!r}"
            )
        if isinstance(self.epsilon, bool) or not isinstance(self.epsilon, (int, float)) or not self.epsilon > 0:
            raise ValueError(f"FlowConfig.epsilon must be a positive number, got {self.epsilon!r}")
        self.epsilon = float(self.epsilon)

    @property
    def is_raft(self) -> bool:
        return self.estimator in RAFT_ESTIMATORS

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the fields; :meth:`from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FlowConfig:
        """Build a config from :meth:`to_dict`'s output; unknown keys are an error, not silently dropped."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"FlowConfig got unknown fields {unknown}; known fields are {sorted(known)}")
        return cls(**data)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def normalize_flow(flow: torch.Tensor, epsilon: float = 1e-5) -> torch.Tensor:
    """Divide a video's flow by its largest per-pixel flow magnitude plus ``epsilon``.

    Args:
        flow: `(L, 2, H, W)` flow of one video (channel 0 = x, channel 1 = y displacement).
        epsilon: positive number added to the largest magnitude; a motionless video stays exactly zero.

    Returns:
        `(L, 2, H, W)` flow whose largest magnitude is ``max / (max + epsilon)`` (just under 1 for any real motion).

    Examples:
        A one-pixel flow (3, 4) has magnitude 5; with ``epsilon=1`` it is divided by 6:

        >>> normalize_flow(torch.tensor([[[[3.0]], [[4.0]]]]), epsilon=1.0).flatten().tolist()
        [0.5, 0.6666666865348816]
    """
    if flow.ndim != 4 or flow.shape[1] != 2 or flow.numel() == 0:
        raise ValueError(f"normalize_flow expects a non-empty (L, 2, H, W) flow, got shape {tuple(flow.shape)}")
    if not epsilon > 0:
        raise ValueError(f"normalize_flow needs a positive epsilon, got {epsilon!r}")
    magnitude = torch.linalg.vector_norm(flow, dim=1)
    return flow / (magnitude.max() + epsilon)


def compute_flow(
    frames: np.ndarray | Sequence[np.ndarray] | torch.Tensor,
    config: FlowConfig,
    *,
    next_frames: np.ndarray | Sequence[np.ndarray] | torch.Tensor | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 8,
    raft_state_dict: Mapping[str, torch.Tensor] | None = None,
    allow_pth: bool = False,
) -> torch.FloatTensor:
    """Optical flow of a video's sampled frames, as the Temporal Grounding Bridge consumes it.

    The same call serves offline shard building and online inference: give it 0-255 RGB frames, never
    CLIP-normalised ones (a float input outside ``[0, 255]`` is refused).

    Args:
        frames: ``L >= 1`` RGB frames with values in ``[0, 255]``: a numpy array `(L, H, W, 3)` (or a list of
            `(H, W, 3)` arrays), or a torch tensor `(L, 3, H, W)`, uint8 or floating point.
        config: estimator, flow size ``S`` and normalisation.
        next_frames: optional second frames of each step, laid out like ``frames``: ``flow[t]`` is then the motion from
            ``frames[t]`` to ``next_frames[t]`` (the pairs :func:`videotgb.video_io.read_video` returns for a long
            video: consecutive video frames at evenly spaced places). Without it, ``frames`` are consecutive and the
            last flow is repeated.
        device: device for RAFT (ignored by the OpenCV estimators); ``None`` picks CUDA when available.
        batch_size: frame pairs per RAFT forward pass.
        raft_state_dict: RAFT weights in torchvision's naming, used instead of ``config.raft_weights`` (for instance
            weights a checkpoint carries). The built model is cached while the mapping is alive in the cache; do not
            modify it in place afterwards.
        allow_pth: allow ``config.raft_weights`` to be a torch ``.pth`` file, read with ``torch.load(weights_only=True)``.

    Returns:
        `(L, 2, S, S)` float32 CPU tensor; ``flow[t]`` is the motion from frame ``t`` to ``t + 1`` (the last one
        repeated), channel 0 = x and channel 1 = y displacement in pixels of the `S x S` grid, divided by the video's
        largest magnitude plus ``config.epsilon`` when ``config.normalize``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = _resize_frames(_frames_to_tensor(frames), config.size)
    if next_frames is None:
        first, second = images[:-1], images[1:]
    else:
        second = _resize_frames(_frames_to_tensor(next_frames), config.size)
        if second.shape[0] != images.shape[0]:
            raise ValueError(f"next_frames has {second.shape[0]} frames but frames has {images.shape[0]}")
        first = images
    if first.shape[0] == 0:
        pair_flows = torch.zeros(0, 2, config.size, config.size)
    elif config.is_raft:
        pair_flows = _raft_flow(first, second, config, device, batch_size, raft_state_dict, allow_pth)
    else:
        pair_flows = _opencv_flow(first, second, config.estimator)
    flow = pair_flows.float()
    if next_frames is None:
        last = pair_flows[-1:] if len(pair_flows) else torch.zeros(1, 2, config.size, config.size)
        flow = torch.cat([flow, last.float()])
    if config.normalize:
        flow = normalize_flow(flow, config.epsilon)
    return flow


def _frames_to_tensor(frames: np.ndarray | Sequence[np.ndarray] | torch.Tensor) -> torch.Tensor:
    """`(L, 3, H, W)` tensor view of the frames, validated to be 0-255 RGB."""
    if isinstance(frames, torch.Tensor):
        images = frames.detach().cpu()
        layout = "(L, 3, H, W) torch tensor"
    else:
        array = np.stack(frames) if isinstance(frames, (list, tuple)) else np.asarray(frames)
        if not array.flags.writeable:
            array = array.copy()
        images = torch.from_numpy(array).permute(0, 3, 1, 2) if array.ndim == 4 else torch.from_numpy(array)
        layout = "(L, H, W, 3) numpy array"
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        shape = tuple(frames.shape) if hasattr(frames, "shape") else tuple(images.shape)
        raise ValueError(f"compute_flow expects at least one RGB frame as a {layout}, got shape {shape}")
    if images.dtype == torch.bool or images.is_complex():
        raise ValueError(f"compute_flow expects 0-255 RGB frames, got dtype {images.dtype}")
    if images.dtype != torch.uint8:
        low, high = images.min().item(), images.max().item()
        if not (0 <= low and high <= 255):  # also catches NaN
            raise ValueError(
                f"compute_flow expects 0-255 RGB frames, got values in [{low:.3g}, {high:.3g}]; pass the decoded "
                "frames, not normalised ones (the original fed CLIP-normalised frames to RAFT)"
            )
        if images.is_floating_point() and 0 < high <= 1:
            logger.warning(
                f"compute_flow received floating-point frames with values in [{low:.3g}, {high:.3g}]; it expects "
                "0-255 RGB, so these look like frames scaled to [0, 1]"
            )
    return images


def _resize_frames(images: torch.Tensor, size: int) -> torch.Tensor:
    """`(L, 3, H, W)` 0-255 frames -> `(L, 3, size, size)` uint8, bilinear with antialiasing, then rounded."""
    if images.shape[-2:] == (size, size):
        return images.round().to(torch.uint8) if images.is_floating_point() else images.to(torch.uint8)
    chunks = []
    for start in range(0, images.shape[0], _RESIZE_CHUNK):
        chunk = images[start : start + _RESIZE_CHUNK].contiguous().float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        chunks.append(chunk.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(chunks)


def _import_optional(module: str, estimator: str, what: str, distribution: str) -> Any:
    """Import an estimator's dependency, or raise FlowDependencyError naming the distribution to install.

    `pip install videotgb` installs both (OpenCV and torchvision); they can be missing where a checkpoint's remote code
    runs without the package."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise FlowDependencyError(
            f"The {estimator!r} optical-flow estimator needs {what}, which could not be imported ({error}). "
            f"Install it with `pip install {distribution}` (or `pip install videotgb`, which includes it)."
        ) from error


def _opencv_flow(first: torch.Tensor, second: torch.Tensor, estimator: str) -> torch.Tensor:
    """`(P, 3, S, S)` uint8 first and second frames -> `(P, 2, S, S)` flows with OpenCV."""
    cv2 = _import_optional("cv2", estimator, "OpenCV (cv2)", "opencv-python-headless")

    def gray(images: torch.Tensor) -> list[np.ndarray]:
        return [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in images.permute(0, 2, 3, 1).contiguous().numpy()]

    sources, targets = gray(first), gray(second)
    if estimator == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        flows = [dis.calc(source, target, None) for source, target in zip(sources, targets, strict=True)]
    else:
        flows = [
            cv2.calcOpticalFlowFarneback(
                source,
                target,
                None,
                pyr_scale=0.5,
                levels=3,
                winsize=15,
                iterations=3,
                poly_n=5,
                poly_sigma=1.2,
                flags=0,
            )
            for source, target in zip(sources, targets, strict=True)
        ]
    # OpenCV returns (S, S, 2) with [..., 0] = x and [..., 1] = y.
    return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).float()


def _raft_flow(
    first: torch.Tensor,
    second: torch.Tensor,
    config: FlowConfig,
    device: str | torch.device | None,
    batch_size: int,
    raft_state_dict: Mapping[str, torch.Tensor] | None,
    allow_pth: bool,
) -> torch.Tensor:
    """`(P, 3, S, S)` uint8 first and second frames -> `(P, 2, S, S)` RAFT flows (on the CPU)."""
    model = load_raft(config, state_dict=raft_state_dict, device=device, allow_pth=allow_pth)
    model_device = next(model.parameters()).device
    flows = []
    with torch.inference_mode():
        for start in range(0, first.shape[0], batch_size):
            # torchvision's RAFT was trained on images mapped from [0, 255] to [-1, 1] (its OpticalFlow preset).
            sources = first[start : start + batch_size].to(model_device, torch.float32) / 127.5 - 1.0
            targets = second[start : start + batch_size].to(model_device, torch.float32) / 127.5 - 1.0
            flows.append(model(sources, targets, num_flow_updates=config.raft_iterations)[-1].cpu())
    return torch.cat(flows)


def _resolve_device(device: str | torch.device | None) -> torch.device:
    device = torch.device(device) if device is not None else None
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def load_raft(
    config: FlowConfig,
    *,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    device: str | torch.device | None = None,
    allow_pth: bool = False,
) -> torch.nn.Module:
    """torchvision RAFT for ``config.estimator``, in eval mode on ``device``, built once and cached.

    Weights come from ``state_dict`` when given, else from ``config.raft_weights``; with neither the model keeps its
    random initialisation (a warning is logged: its flow is meaningless, which is fine only for tests and
    benchmarks). Nothing is ever downloaded. Models are cached per (variant, weights, device): a weights file is
    identified by its path, size and modification time, a state dict by its identity (the cache holds a reference).
    """
    if not config.is_raft:
        raise ValueError(
            f"load_raft needs a RAFT estimator {RAFT_ESTIMATORS}, got config.estimator={config.estimator!r}"
        )
    device = _resolve_device(device)
    if state_dict is not None:
        key: tuple = (config.estimator, "state_dict", id(state_dict), str(device))
    elif config.raft_weights is not None:
        stat = os.stat(config.raft_weights)
        path = os.path.realpath(config.raft_weights)
        key = (config.estimator, "file", path, stat.st_size, stat.st_mtime_ns, allow_pth, str(device))
    else:
        key = (config.estimator, "random", str(device))
    if key in _raft_cache:
        _raft_cache.move_to_end(key)
        return _raft_cache[key][1]

    if state_dict is None and config.raft_weights is not None:
        weights = load_raft_weights(config.raft_weights, allow_pth=allow_pth, variant=config.estimator)
    else:
        weights = state_dict
    optical_flow = _import_optional(
        "torchvision.models.optical_flow",
        config.estimator,
        "torchvision's RAFT (torchvision.models.optical_flow)",
        "torchvision",
    )
    model = getattr(optical_flow, config.estimator)(weights=None, progress=False)
    if weights is None:
        logger.warning(
            f"{config.estimator} has random weights (no FlowConfig.raft_weights and no state dict given): its flow "
            "is meaningless, which is fine only for tests and benchmarks"
        )
    else:
        _load_state_dict(model, weights, config.estimator)
    model = model.eval().to(device)
    _raft_cache[key] = (state_dict, model)
    while len(_raft_cache) > _RAFT_CACHE_SIZE:
        _raft_cache.popitem(last=False)
    return model


def _load_state_dict(model: torch.nn.Module, weights: Mapping[str, torch.Tensor], variant: str) -> None:
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        hint = ""
        if any(name.split(".")[0] in ("fnet", "cnet", "module") for name in unexpected):
            hint = " The keys look like princeton-vl RAFT naming (fnet/cnet/update_block); convert them first."
        raise ValueError(
            f"RAFT weights do not match torchvision's {variant}: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]}).{hint}"
        )
    model.load_state_dict(dict(weights))


def load_raft_weights(
    path: str | os.PathLike, *, allow_pth: bool = False, variant: str | None = None
) -> dict[str, torch.Tensor]:
    """Read a RAFT state dict (torchvision naming) from a ``.safetensors`` file, or a ``.pth`` with ``allow_pth``.

    A ``.pth`` is read with ``torch.load(weights_only=True)`` (plain tensors only, no arbitrary objects). When
    ``variant`` is given and the safetensors file records the variant it was saved from (:func:`save_raft_weights`
    does), a mismatch is an error.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        with safe_open(path, framework="pt") as handle:
            saved_variant = (handle.metadata() or {}).get(_SAFETENSORS_VARIANT_KEY)
        if variant is not None and saved_variant is not None and saved_variant != variant:
            raise ValueError(f"{path} holds {saved_variant} weights, but the flow config asks for {variant}")
        return load_file(path)
    if path.endswith((".pth", ".pt")):
        if not allow_pth:
            raise ValueError(
                f"Refusing to read the torch pickle {path}: convert it to safetensors with save_raft_weights, "
                "or pass allow_pth=True to read it with torch.load(weights_only=True)"
            )
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state_dict, Mapping):
            raise ValueError(f"{path} does not hold a state dict (got {type(state_dict).__name__})")
        return dict(state_dict)
    raise ValueError(f"RAFT weights must be a .safetensors file (or .pth with allow_pth=True), got {path}")


def save_raft_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Save a torchvision RAFT's weights as safetensors, the format :func:`load_raft` reads by default.

    The variant (``raft_small`` or ``raft_large``, told apart by RAFT-large's upsampling mask predictor) is recorded
    in the file's metadata, so loading it into the other variant fails with a clear message.
    """
    if not hasattr(model, "corr_block"):
        raise ValueError(f"save_raft_weights expects a torchvision RAFT model, got {type(model).__name__}")
    variant = "raft_small" if model.mask_predictor is None else "raft_large"
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    save_file(tensors, os.fspath(path), metadata={"format": "pt", _SAFETENSORS_VARIANT_KEY: variant})
