"""Milliseconds per frame pair for each optical-flow estimator of `videotgb.optical_flow`.

Times `compute_flow` end to end (input checks, flow, repeat of the last flow, normalisation) on synthetic S x S
frames, after one warm-up call that builds RAFT and initialises OpenCV. RAFT runs with random weights: its speed does
not depend on them. A frame-difference baseline (absolute grey-level difference of consecutive frames: not a flow,
no direction) gives the floor.

Run from the repository root with the package installed (or ``PYTHONPATH=.``):

    python benchmarks/bench_optical_flow.py --pairs 8
    python benchmarks/bench_optical_flow.py --pairs 4 --estimators dis raft_small
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from videotgb.optical_flow import ESTIMATORS, FlowConfig, compute_flow

BASELINE = "frame_difference"


def make_frames(num_frames: int, size: int, seed: int = 0) -> np.ndarray:
    """`(num_frames, size, size, 3)` uint8 views of a smooth random texture panning by (3, -2) px per frame."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, size // 4, size // 4, generator=generator)
    texture = F.interpolate(coarse, size=(2 * size, 2 * size), mode="bicubic", align_corners=False)
    texture = (texture.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    offsets = [((size // 2 + 2 * t) % size, (size // 2 - 3 * t) % size) for t in range(num_frames)]
    return np.stack([texture[y : y + size, x : x + size] for y, x in offsets])


def frame_difference(frames: np.ndarray) -> torch.Tensor:
    """`(L, H, W, 3)` uint8 -> `(L - 1, H, W)` absolute grey-level differences of consecutive frames."""
    gray = torch.from_numpy(frames).float().mean(dim=-1)
    return (gray[1:] - gray[:-1]).abs()


def estimator_function(
    estimator: str, size: int, batch_size: int, device: str | None
) -> Callable[[np.ndarray], torch.Tensor]:
    """`(L, H, W, 3)` uint8 frames -> the estimator's output, as one callable per estimator."""
    if estimator == BASELINE:
        return frame_difference
    config = FlowConfig(estimator=estimator, size=size)
    return functools.partial(compute_flow, config=config, device=device, batch_size=batch_size)


def milliseconds_per_pair(run: Callable[[np.ndarray], torch.Tensor], frames: np.ndarray) -> float:
    """Time ``run`` on all ``frames`` after a warm-up on the first pair."""
    run(frames[:2])
    start = time.perf_counter()
    run(frames)
    return (time.perf_counter() - start) * 1000 / (len(frames) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=8, help="frame pairs timed per estimator")
    parser.add_argument(
        "--estimators",
        nargs="+",
        default=[*ESTIMATORS, BASELINE],
        choices=[*ESTIMATORS, BASELINE],
        help="estimators to time",
    )
    parser.add_argument("--size", type=int, default=224, help="side of the square frames and flow")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per RAFT forward pass")
    parser.add_argument("--device", default=None, help="RAFT device (default: cuda when available, else cpu)")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error(f"--pairs must be >= 1, got {args.pairs}")

    logging.getLogger("videotgb.optical_flow").setLevel(logging.ERROR)  # RAFT's random-weights warning is expected
    frames = make_frames(args.pairs + 1, args.size)
    timings = {
        name: milliseconds_per_pair(estimator_function(name, args.size, args.batch_size, args.device), frames)
        for name in args.estimators
    }
    fastest = min(timings.values())
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    threads = torch.get_num_threads()
    print(
        f"{args.pairs} pairs of {args.size}x{args.size} frames, {threads} torch threads, RAFT (random weights) on {device}"
    )
    print(f"{'estimator':<18}{'ms / pair':>12}{'x fastest':>12}")
    for name, milliseconds in sorted(timings.items(), key=lambda item: item[1]):
        print(f"{name:<18}{milliseconds:>12.2f}{milliseconds / fastest:>12.1f}")


if __name__ == "__main__":
    main()
