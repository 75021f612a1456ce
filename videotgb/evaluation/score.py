"""`videotgb eval score`: predictions JSONL -> judged and judge-free scores, report and results file
(docs/evaluation.md).

Every benchmark in the predictions is scored: the Video-ChatGPT judge (:mod:`videotgb.evaluation.judge`) on the
open-ended items when a judge is asked (not ``--no-judge``), exact match and token F1 on every open-ended item,
multiple-choice accuracy on multiple-choice items, and temporal IoU where an item has a gold and a predicted span.
Items that failed (an ``error`` in their line) are counted and listed, and scored by no metric.

Written into ``--out``: ``results.json`` (every benchmark's numbers, judge and counts; the model card's model-index
reads it, `videotgb export --eval-results`), ``report.md`` and
``report.json`` (a table per benchmark, counts and failures), ``judgements.jsonl`` (every judged item's replies,
parse and attempts) and ``report.png`` (a bar chart). No API key is written anywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .judge import DEFAULT_MODEL, JudgeItem, JudgeSettings, VideoChatGPTJudge, summarize
from .metrics import (
    IOU_THRESHOLDS,
    check_letter,
    exact_match,
    multiple_choice_accuracy,
    recall_key,
    temporal_iou,
    token_f1,
)

FORMATS = ("videochatgpt", "multiple_choice", "synthetic")
"""The ``format`` values of a predictions line."""

RESULTS_FORMAT = "videotgb-eval-results"
RESULTS_VERSION = 1

OUTPUT_FILES = ("results.json", "report.md", "report.json", "judgements.jsonl", "report.png")
"""What `videotgb eval score` writes into ``--out``."""


class PredictionsError(ValueError):
    """A predictions line that cannot be scored; the message names the file and line number."""


# ---- reading predictions ---------------------------------------------------------------------------------------


def _check_span(value: Any, where: str, name: str, gold: bool) -> list[float] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in value)
    ):
        raise PredictionsError(f"{where}: {name} must be null or [start, end] in seconds, got {value!r}")
    if gold and not value[0] < value[1]:
        raise PredictionsError(f"{where}: {name} {value!r} is empty (start must come before end)")
    return [float(value[0]), float(value[1])]


def check_record(record: Any, where: str) -> dict[str, Any]:
    """A predictions line's object, checked; PredictionsError naming `where` (``file:line``) and the field."""
    if not isinstance(record, dict):
        raise PredictionsError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for name in ("benchmark", "format", "id", "question", "answer"):
        if not isinstance(record.get(name), str) or (name in ("benchmark", "id") and not record[name]):
            raise PredictionsError(f"{where}: field {name!r} must be a non-empty string, got {record.get(name)!r}")
    if record["format"] not in FORMATS:
        raise PredictionsError(f"{where}: format {record['format']!r} is not one of {', '.join(FORMATS)}")
    for name in ("prediction", "error"):
        if record.get(name) is not None and not isinstance(record[name], str):
            raise PredictionsError(f"{where}: field {name!r} must be a string or null, got {record[name]!r}")
    if record.get("error") is None and record.get("prediction") is None:
        raise PredictionsError(f"{where}: an item without 'error' needs a 'prediction' string")
    if record["format"] == "multiple_choice":
        options = record.get("options")
        if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) for o in options):
            raise PredictionsError(f"{where}: a multiple-choice item needs 'options', a list of 2 or more strings")
        for name in ("answer", "predicted_letter"):
            if record.get(name) is None and name == "predicted_letter":
                continue
            try:
                check_letter(record[name], len(options))
            except ValueError as error:
                raise PredictionsError(f"{where}: field {name!r}: {error} ({len(options)} options)") from None
    record["gold_span_seconds"] = _check_span(record.get("gold_span_seconds"), where, "gold_span_seconds", True)
    record["predicted_span_seconds"] = _check_span(
        record.get("predicted_span_seconds"), where, "predicted_span_seconds", False
    )
    return record


def read_predictions(paths: Sequence[str | os.PathLike]) -> dict[str, list[dict[str, Any]]]:
    """The items of predictions JSONL files, grouped by benchmark (in order of first appearance).

    Raises:
        FileNotFoundError: a file is missing.
        PredictionsError: a line is not JSON, misses or has a wrong field, or repeats an id of its benchmark; the
            message names the file and line number (and the line of the first occurrence for a repeated id).
    """
    benchmarks: dict[str, list[dict[str, Any]]] = {}
    seen: dict[tuple[str, str], str] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"--predictions {path}: no such file")
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise PredictionsError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
                record = check_record(record, where)
                key = (record["benchmark"], record["id"])
                if key in seen:
                    raise PredictionsError(
                        f"{where}: id {record['id']!r} of benchmark {record['benchmark']!r} repeats {seen[key]}"
                    )
                seen[key] = where
                benchmarks.setdefault(record["benchmark"], []).append(record)
    if not benchmarks:
        raise PredictionsError(f"--predictions {', '.join(map(str, paths))}: no predictions in the file(s)")
    return benchmarks


# ---- scoring ---------------------------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def score_benchmark(
    records: Sequence[dict[str, Any]],
    judge: VideoChatGPTJudge | None = None,
    truncate_scores: bool = False,
    progress: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Scores of one benchmark's items.

    Returns:
        The benchmark's entry of ``results.json`` (``items``, ``failed_items``, ``judge``, ``metrics`` with only the
        metrics that apply, ``counts``, ``parse_failures``, ``request_failures``, ``failures`` (the failed items'
        ids and errors)) and the judgements of its open-ended items (empty without a judge).
    """
    failed = [r for r in records if r.get("error") is not None]
    valid = [r for r in records if r.get("error") is None]
    open_ended = [r for r in valid if r["format"] != "multiple_choice"]
    multiple_choice = [r for r in valid if r["format"] == "multiple_choice"]
    spans = [r for r in valid if r["gold_span_seconds"] is not None and r["predicted_span_seconds"] is not None]
    metrics: dict[str, float] = {}
    counts: dict[str, int] = {
        "open_ended": len(open_ended),
        "multiple_choice": len(multiple_choice),
        "spans": len(spans),
    }
    entry: dict[str, Any] = {"items": len(records), "failed_items": len(failed), "judge": None}
    judgements: list[dict[str, Any]] = []
    if judge is not None and open_ended:
        items = [JudgeItem(r["id"], r["question"], r["answer"], r["prediction"]) for r in open_ended]
        judgements = judge.judge(items, progress=progress)
        summary = summarize(judgements, truncate_scores=truncate_scores)
        entry["judge"] = judge.info(judgements) | {"score_truncation": truncate_scores}
        metrics.update(judge_accuracy=summary["judge_accuracy"], judge_score=summary["judge_score"])
        counts.update(summary["counts"])
        entry["parse_failures"] = summary["parse_failures"]
        entry["request_failures"] = summary["request_failures"]
    if open_ended:
        metrics["exact_match"] = _mean([exact_match(r["prediction"], r["answer"]) for r in open_ended])
        metrics["token_f1"] = _mean([token_f1(r["prediction"], r["answer"]) for r in open_ended])
    if multiple_choice:
        letters = [r.get("predicted_letter") for r in multiple_choice]
        metrics["mc_accuracy"] = multiple_choice_accuracy(letters, [r["answer"] for r in multiple_choice])
        counts["mc_no_letter"] = sum(letter is None for letter in letters)
    if spans:
        metrics.update(
            temporal_iou([r["predicted_span_seconds"] for r in spans], [r["gold_span_seconds"] for r in spans])
        )
    entry.update(
        metrics=metrics,
        counts=counts,
        failures=[{"id": r["id"], "error": r["error"]} for r in failed],
    )
    entry.setdefault("parse_failures", [])
    entry.setdefault("request_failures", [])
    return entry, judgements


def _json_ready(value: Any) -> Any:
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    return value


def score(
    predictions: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    judge_settings: JudgeSettings | None = None,
    truncate_scores: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Score predictions files and write :data:`OUTPUT_FILES` into `out`.

    Args:
        predictions: JSONL files written by `videotgb eval run` (one line per item).
        out: output folder (created).
        judge_settings: how to ask the judge; None scores without it (judge-free metrics only). The judge's cache
            defaults to ``<out>/judge-cache``.
        truncate_scores: average ``int(score)`` as Video-ChatGPT did, instead of the judge's scores.
        overwrite: replace output files that exist.

    Returns:
        The report: ``results`` (the content of ``results.json``) and ``settings``.
    """
    out = Path(out)
    existing = [out / name for name in OUTPUT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"--out {out}: {existing[0]} exists; choose another folder or pass --overwrite")
    benchmarks = read_predictions(predictions)
    judge = None
    needs_judge = any(
        r["format"] != "multiple_choice" and r.get("error") is None for b in benchmarks.values() for r in b
    )
    if judge_settings is not None and needs_judge:
        cache_dir = out / "judge-cache" if judge_settings.cache_dir is None else judge_settings.cache_dir
        judge = VideoChatGPTJudge(dataclasses.replace(judge_settings, cache_dir=cache_dir))
    models = sorted({str(r["model"]) for b in benchmarks.values() for r in b if r.get("model") is not None})
    results: dict[str, Any] = {
        "format": RESULTS_FORMAT,
        "version": RESULTS_VERSION,
        "model": models[0] if len(models) == 1 else (models or None),
        "benchmarks": {},
    }
    all_judgements: list[dict[str, Any]] = []
    failures: dict[str, list[dict[str, Any]]] = {}
    try:
        for name, records in benchmarks.items():
            entry, judgements = score_benchmark(records, judge, truncate_scores=truncate_scores, progress=progress)
            failures[name] = entry.pop("failures")
            results["benchmarks"][name] = entry
            questions = {r["id"]: r for r in records}
            for judgement in judgements:
                record = questions[judgement["id"]]
                all_judgements.append(
                    {"benchmark": name, **judgement}
                    | {key: record[key] for key in ("question", "answer", "prediction")}
                )
    finally:
        if judge is not None:
            judge.close()
    results = _json_ready(results)
    report = {
        "results": results,
        "failed_items": failures,
        "settings": {
            "predictions": [str(path) for path in predictions],
            "judge": judge is not None,
            "truncate_scores": truncate_scores,
            "iou_thresholds": list(IOU_THRESHOLDS),
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    with open(out / "judgements.jsonl", "w", encoding="utf-8") as lines:
        for judgement in all_judgements:
            lines.write(json.dumps(_json_ready(judgement), ensure_ascii=False) + "\n")
    (out / "report.md").write_text(format_report(report), encoding="utf-8")
    plot_report(results, out / "report.png")
    return report


# ---- report and plot -------------------------------------------------------------------------------------------

_METRIC_LABELS = {
    "judge_accuracy": "judge accuracy",
    "judge_score": "judge score (0-5)",
    "exact_match": "exact match",
    "token_f1": "token F1",
    "mc_accuracy": "multiple-choice accuracy",
    "miou": "mIoU",
    **{recall_key(t): f"R@{t:g}" for t in IOU_THRESHOLDS},
}


def _value(name: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if name == "judge_score" else f"{100 * value:.1f}%"


def format_report(report: dict[str, Any]) -> str:
    """Markdown: per benchmark the judge, a table of its metrics, its counts and its failures."""
    results = report["results"]
    lines = [f"# Scores of {results['model']}", ""]
    for name, entry in results["benchmarks"].items():
        judge = entry["judge"]
        lines += [f"## {name}", ""]
        if judge is None:
            lines.append("judge: none (judge-free metrics only)")
        else:
            lines.append(
                f"judge: {judge['model']} (asked for {judge['requested_model']} at {judge['base_url']}; "
                f"system fingerprint {judge['system_fingerprint']}; "
                f"{'scores truncated to int' if judge['score_truncation'] else 'float scores'})"
            )
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {_METRIC_LABELS[key]} | {_value(key, value)} |" for key, value in entry["metrics"].items()]
        counts = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in entry["counts"].items())
        lines += ["", f"items {entry['items']}, failed {entry['failed_items']}; {counts}"]
        shown = 20
        for title, listed, text in (
            ("failed items", report["failed_items"].get(name, []), "error"),
            ("unparsable judge replies", entry["parse_failures"], "reply"),
            ("judge requests that failed", entry["request_failures"], "error"),
        ):
            if listed:
                lines += ["", f"{title} ({len(listed)}):", ""]
                lines += [f"- {item['id']}: {str(item[text])[:200]!r}" for item in listed[:shown]]
                if len(listed) > shown:
                    lines.append(f"- ... and {len(listed) - shown} more (report.json)")
        lines.append("")
    return "\n".join(lines)


def plot_report(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Bar chart of every benchmark's fraction metrics (%) and its judge score (right axis, 0-5), saved as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    benchmarks = results["benchmarks"]
    names = [key for key in _METRIC_LABELS if any(key in e["metrics"] for e in benchmarks.values())]
    figure = Figure(figsize=(2.0 + 1.6 * len(benchmarks), 3.8))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    width = 0.8 / max(len(names), 1)
    for number, key in enumerate(names):
        positions = [index + (number - (len(names) - 1) / 2) * width for index in range(len(benchmarks))]
        values = [entry["metrics"].get(key) for entry in benchmarks.values()]
        scale = 20 if key == "judge_score" else 100  # the score's 0-5 drawn on the same 0-100 axis
        heights = [float("nan") if value is None else scale * value for value in values]
        bars = axes.bar(positions, heights, width, label=_METRIC_LABELS[key] + (" x20" if scale == 20 else ""))
        axes.bar_label(bars, labels=[_value(key, v).rstrip("%") for v in values], fontsize=6)
    axes.set_xticks(range(len(benchmarks)), list(benchmarks))
    axes.set_ylabel("% (judge score x20)" if "judge_score" in names else "%")
    axes.set_ylim(0, 110)
    if names:
        axes.legend(fontsize=7, ncols=min(len(names), 4), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png", dpi=120)
    return path


# ---- command line ----------------------------------------------------------------------------------------------

_DESCRIPTION = """\
Score predictions (JSONL written by `videotgb eval run`) and write a report.

For every benchmark in the files:
  judge         Video-ChatGPT's judge question (yes/no + 0-5) on each open-ended answer, asked of any
                OpenAI-compatible endpoint: accuracy = yes / (yes + no), score = mean (skip: --no-judge)
  exact match   and token F1 of open-ended answers (SQuAD normalisation)
  multiple-choice accuracy of the predicted letters
  temporal IoU  mIoU, R@0.3, R@0.5 of predicted spans where the benchmark gives spans

written into --out: results.json, report.md, report.json, judgements.jsonl (every judge reply), report.png.
Judge replies are cached in --judge-cache (default <out>/judge-cache): a rerun asks nothing again.
The API key comes from --judge-api-key or OPENAI_API_KEY and is never written.

examples:
  videotgb eval score --predictions preds.jsonl --out scores --no-judge
  OPENAI_API_KEY=... videotgb eval score --predictions preds.jsonl --out scores --judge-model gpt-3.5-turbo
  videotgb eval score --predictions preds.jsonl --out scores \\
      --judge-base-url http://127.0.0.1:8000/v1 --judge-model Qwen2.5-7B-Instruct --judge-api-key local

See docs/evaluation.md.
"""


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predictions", required=True, nargs="+", metavar="FILE", help="predictions JSONL file(s)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the results and the report")
    judge = parser.add_argument_group("judge")
    judge.add_argument("--no-judge", action="store_true", help="judge-free metrics only; no request is made")
    judge.add_argument(
        "--judge-base-url",
        default=None,
        metavar="URL",
        help="OpenAI-compatible base URL (default: OPENAI_BASE_URL, else https://api.openai.com/v1)",
    )
    judge.add_argument(
        "--judge-model", default=DEFAULT_MODEL, metavar="MODEL", help="judge model (default: %(default)s)"
    )
    judge.add_argument(
        "--judge-api-key",
        default=None,
        metavar="KEY",
        help="API key (default: OPENAI_API_KEY); any string for a local server that checks none",
    )
    defaults = JudgeSettings()
    judge.add_argument(
        "--judge-concurrency",
        type=int,
        default=defaults.concurrency,
        metavar="N",
        help="requests in flight (default: %(default)s)",
    )
    judge.add_argument(
        "--judge-timeout",
        type=float,
        default=defaults.timeout,
        metavar="SECONDS",
        help="seconds per request (default: %(default)s)",
    )
    judge.add_argument(
        "--judge-max-retries",
        type=int,
        default=defaults.max_retries,
        metavar="N",
        help="retries with backoff on 429, 5xx, timeouts and connection errors (default: %(default)s)",
    )
    judge.add_argument(
        "--judge-parse-retries",
        type=int,
        default=defaults.parse_retries,
        metavar="N",
        help="times a reply that does not parse is asked for again (default: %(default)s)",
    )
    judge.add_argument("--judge-cache", default=None, metavar="DIR", help="reply cache (default: <out>/judge-cache)")
    judge.add_argument(
        "--truncate-scores", action="store_true", help="average int(score) as Video-ChatGPT did (default: as given)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the report files in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=_score_command)


def add_score_parser(eval_commands) -> None:
    """Register `videotgb eval score` on the `eval` command's subparsers."""
    parser = eval_commands.add_parser(
        "score",
        help="judge and score predictions: results.json, report.md/.json/.png, judgements.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_DESCRIPTION,
    )
    _configure(parser)


def _score_command(arguments: argparse.Namespace) -> int:
    settings = None
    if not arguments.no_judge:
        settings = JudgeSettings(
            model=arguments.judge_model,
            base_url=arguments.judge_base_url,
            api_key=arguments.judge_api_key,
            concurrency=arguments.judge_concurrency,
            timeout=arguments.judge_timeout,
            max_retries=arguments.judge_max_retries,
            parse_retries=arguments.judge_parse_retries,
            cache_dir=arguments.judge_cache,
        )
    report = score(
        arguments.predictions,
        arguments.out,
        judge_settings=settings,
        truncate_scores=arguments.truncate_scores,
        overwrite=arguments.overwrite,
        progress=not arguments.no_progress,
    )
    print(format_report(report), end="")
    print(f"results: {Path(arguments.out) / 'results.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m videotgb.evaluation.score ...`, the same as `videotgb eval score ...`."""
    from ..cli import main as cli_main

    return cli_main(["eval", "score", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "FORMATS",
    "OUTPUT_FILES",
    "PredictionsError",
    "add_score_parser",
    "check_record",
    "format_report",
    "main",
    "plot_report",
    "read_predictions",
    "score",
    "score_benchmark",
]
