"""Bytes and seconds per video of flow side shards (`videotgb data flow`), float16 against uint8.

For each video: the processor reads its frames (`load_video`) and computes its flow (`video_flow`) as the command
does; the flow is then stored both ways in a one-row Parquet side shard (zstd, as the command writes it), and the
uint8 copy is read back against the float32 flow. Reported: flow steps, decode and flow milliseconds, raw and
compressed bytes of each dtype, and the largest uint8 error next to its bound (half the per-video scale).

The processor comes from a checkpoint folder (`videotgb/default_model`, the shipped one); its frame and flow settings can be
overridden to those of VideoTGB-7B, the defaults here. Run from the repository root with the package installed (or
``PYTHONPATH=.``):

    python benchmarks/bench_side_shards.py --model videotgb/default_model video1.mp4 video2.mkv
    python benchmarks/bench_side_shards.py --model videotgb/default_model --flow-size 112 --max-flow-steps 32 v.mp4
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from videotgb import VideoTGBProcessor
from videotgb.data.precompute import FlowComputer, decode_flow


def parquet_bytes(computer: FlowComputer, rows: list[dict]) -> int:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=computer.schema()), buffer, compression="zstd")
    return buffer.tell()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="+", help="video files")
    parser.add_argument("--model", required=True, help="VideoTGB checkpoint folder (its processor)")
    parser.add_argument("--candidates", type=int, default=32, help="candidate frames (default: %(default)s)")
    parser.add_argument("--max-flow-steps", type=int, default=64, help="most flow steps (default: %(default)s)")
    parser.add_argument("--flow-size", type=int, default=224, help="flow size S (default: %(default)s)")
    parser.add_argument("--estimator", default="dis", help="flow estimator (default: %(default)s)")
    arguments = parser.parse_args()
    processor = VideoTGBProcessor.from_pretrained(
        arguments.model,
        num_candidate_frames=arguments.candidates,
        max_flow_steps=arguments.max_flow_steps,
        flow_config={"estimator": arguments.estimator, "size": arguments.flow_size},
    )
    computers = {dtype: FlowComputer(processor, dtype) for dtype in ("float16", "uint8")}
    print("video | steps | decode ms | flow ms | float16 raw / zstd | uint8 raw / zstd | uint8 max error / bound")
    for video in arguments.videos:
        start = time.perf_counter()
        clip = processor.load_video(video)
        decoded = time.perf_counter()
        flow = processor.video_flow(clip).numpy()
        computed = time.perf_counter()
        sizes, rows = {}, {}
        for dtype, computer in computers.items():
            rows[dtype] = computer.rows([{"id": video}], [clip])[0]
            sizes[dtype] = (len(rows[dtype]["flow"]), parquet_bytes(computer, [rows[dtype]]))
        uint8 = rows["uint8"]
        back = decode_flow(uint8["flow"], "uint8", uint8["flow_scale"], steps=len(flow), size=arguments.flow_size)
        print(
            f"{video} | {len(flow)} | {(decoded - start) * 1000:.0f} | {(computed - decoded) * 1000:.0f} | "
            f"{sizes['float16'][0]} / {sizes['float16'][1]} | {sizes['uint8'][0]} / {sizes['uint8'][1]} | "
            f"{np.abs(back - flow).max():.5f} / {uint8['flow_scale'] / 2:.5f}"
        )


if __name__ == "__main__":
    main()
