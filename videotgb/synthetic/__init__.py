"""The synthetic long-video grounding benchmark (docs/synthetic.md): videos the package generates itself, with
questions about short motion events, their gold answers and true spans, in splits, as plain files, a JSON index and
training shards.

Not remote code: the model, processor and video files never import this package.
"""

from .generator import (
    COLOURS,
    DIRECTIONS,
    HELD_OUT_PAIRS,
    INDEX_NAME,
    INDEX_VERSION,
    MOTION_WORDS,
    QUESTION_TYPES,
    SHAPES,
    SPLITS,
    Event,
    Scene,
    SyntheticConfig,
    SyntheticConfigError,
    SyntheticIndexError,
    background,
    encode_scene,
    generate,
    load_index,
    make_scene,
    question_and_answer,
    render_frames,
    samples,
    scene_record,
    shape_mask,
    video_file,
)

__all__ = [
    "COLOURS",
    "DIRECTIONS",
    "HELD_OUT_PAIRS",
    "INDEX_NAME",
    "INDEX_VERSION",
    "MOTION_WORDS",
    "QUESTION_TYPES",
    "SHAPES",
    "SPLITS",
    "Event",
    "Scene",
    "SyntheticConfig",
    "SyntheticConfigError",
    "SyntheticIndexError",
    "background",
    "encode_scene",
    "generate",
    "load_index",
    "make_scene",
    "question_and_answer",
    "render_frames",
    "samples",
    "scene_record",
    "shape_mask",
    "video_file",
]
