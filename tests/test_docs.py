"""The documentation is self-contained: it cites nothing outside the repository, and its links resolve.

(a) No tracked file refers to the project's internal reference documents, which people who clone or install the
    package do not have; what they need lives in `docs/`.
(b) Every relative Markdown link in README.md and docs/*.md points to an existing file and, for `#anchor` links into
    Markdown files, to an existing heading (GitHub's anchor rules).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Built from pieces so that this file does not match itself.
_INTERNAL_NAMES = ["DESIGN", "ENVIRONMENT", "CONVENTIONS"]
INTERNAL_REFERENCE = re.compile(
    "|".join([re.escape("shared" + "/")] + [re.escape(name + ".md") for name in _INTERNAL_NAMES])
)

LINK = re.compile(r"(?<!!)\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMAGE = re.compile(r"!\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def tracked_files() -> list[Path]:
    result = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [ROOT / name for name in result.stdout.decode().split("\0") if name]


def read_text(path: Path) -> str | None:
    """The file's text, or None for binary or unreadable files."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def markdown_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if match:
            marker = match.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
            continue
        if fence is None:
            lines.append((number, line))
    return lines


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: text only, lowercase, punctuation other than `-` and `_` dropped, each
    space turned into `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images keep their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = "".join(char for char in text if char.isalnum() or char in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Anchors of every heading of a Markdown file, with GitHub's `-1`, `-2` ... suffixes for repeated headings."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in markdown_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        anchor = github_anchor(match.group(2))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def documentation_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_github_anchor_rules():
    assert github_anchor("Keyframe selection") == "keyframe-selection"
    assert github_anchor("Building from BLIP-2, InstructBLIP and BERT") == "building-from-blip-2-instructblip-and-bert"
    assert github_anchor("`config.json` and `flow_size`") == "configjson-and-flow_size"
    assert github_anchor("Planned (training and evaluation)") == "planned-training-and-evaluation"


def test_no_tracked_file_cites_internal_reference_documents():
    offending = []
    for path in tracked_files():
        text = read_text(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if INTERNAL_REFERENCE.search(line):
                offending.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not offending, (
        "these lines cite documents that are not in the repository; point to docs/ instead:\n" + "\n".join(offending)
    )


@pytest.mark.parametrize("document", documentation_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve(document):
    if not document.exists():
        pytest.skip(f"{document.relative_to(ROOT)} does not exist")
    broken = []
    for number, line in markdown_lines(document.read_text(encoding="utf-8")):
        line = re.sub(r"`[^`]*`", "", line)  # links inside inline code are not links
        for match in [*LINK.finditer(line), *IMAGE.finditer(line)]:
            target = match.group(1)
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
                continue  # http:, https:, mailto: ...
            path_part, _, anchor = target.partition("#")
            resolved = (document.parent / unquote(path_part)).resolve() if path_part else document
            where = f"{document.relative_to(ROOT)}:{number}: {target}"
            if not resolved.is_relative_to(ROOT):
                broken.append(f"{where} (outside the repository)")
            elif not resolved.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and resolved.suffix == ".md" and unquote(anchor).lower() not in anchors(resolved):
                broken.append(f"{where} (no heading with anchor #{anchor} in {resolved.relative_to(ROOT)})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_ci_runs_the_readme_two_commands_exactly():
    """`.ci/run` runs the README's two commands as written there, in that order."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Two commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("bash scripts/setup.sh")]
    assert len(commands) == 2 and ci == commands
