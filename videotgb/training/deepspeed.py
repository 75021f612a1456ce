"""DeepSpeed configurations shipped with the package, selectable by name (`--deepspeed zero3`) or by path.

`zero2` and `zero3` leave the optimizer to `transformers.Trainer` (AdamW, no DeepSpeed op to compile);
`zero3_offload` offloads parameters and optimizer state to the CPU, which needs DeepSpeed's own (CPU) AdamW, so it
names one. Every size, precision and step value is `"auto"`: Trainer fills them from `TrainingArguments`.
Not part of a checkpoint's remote code.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_FOLDER = Path(__file__).resolve().parent / "deepspeed_configs"
NAMED_CONFIGS = ("zero2", "zero3", "zero3_offload")


def resolve_deepspeed_config(name_or_path: str) -> str:
    """Path of the DeepSpeed JSON for a shipped name (`zero2`, `zero3`, `zero3_offload`) or a file.

    Raises ValueError naming `--deepspeed` when the file does not exist, does not parse, or lacks a
    `zero_optimization` section.
    """
    if name_or_path in NAMED_CONFIGS:
        return str(CONFIG_FOLDER / f"{name_or_path}.json")
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise ValueError(f"--deepspeed {name_or_path}: not one of {', '.join(NAMED_CONFIGS)} and no such file")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"--deepspeed {name_or_path}: not a readable JSON file ({error})") from None
    if not isinstance(config, dict) or not isinstance(config.get("zero_optimization"), dict):
        raise ValueError(f'--deepspeed {name_or_path}: a DeepSpeed config needs a "zero_optimization" object')
    return str(path)


__all__ = ["NAMED_CONFIGS", "resolve_deepspeed_config"]
