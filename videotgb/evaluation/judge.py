"""The Video-ChatGPT judge: an LLM rates each open-ended answer yes / no and 0-5 (docs/evaluation.md#the-judge).

The prompt is copied word for word from Video-ChatGPT (https://github.com/mbzuai-oryx/Video-ChatGPT,
``quantitative_evaluation/evaluate_activitynet_qa.py``, commit 659e04b2ce4bb518b663eb06f7db27b4971e8bde), the
protocol behind the MSVD-QA, MSRVTT-QA and ActivityNet-QA numbers of the paper (gpt-3.5-turbo as the judge):
a system message with the instructions and a user message with the question, the correct answer and the
predicted answer, asking for a Python dict ``{'pred': 'yes' | 'no', 'score': 0..5}``. Accuracy is
yes / (yes + no); the score is the mean over the judged items.

What this implementation adds to the original script:

- any OpenAI-compatible endpoint (a hosted API, vLLM, llama.cpp ...) by base URL, model and API key, through the
  ``openai`` client library;
- a thread pool with a concurrency limit; the client's retries with exponential backoff on connection errors,
  timeouts, 408 / 409 / 429 and 5xx (``Retry-After`` honoured), every HTTP attempt counted per item;
- a disk cache keyed by the SHA-256 of (judge model, messages): a rerun sends no request for a cached item;
- replies that do not parse (:func:`parse_reply`, ``ast.literal_eval`` of a dict as in the original) are asked
  again up to ``parse_retries`` times, then counted and listed, never scored (the original printed and skipped
  them); a ``pred`` other than yes / no or a score outside 0-5 does not parse either (the original tested
  ``"yes" in pred``);
- the model the server reports (``response.model``) and its ``system_fingerprint`` are kept with every item, as
  judge versions move these numbers by several points;
- scores are kept as the judge gave them (floats); the original's truncation to ``int`` is an option of
  :func:`summarize`.

Not remote code: the model, processor and video files never import this module.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tqdm.auto import tqdm
from transformers.utils import logging

logger = logging.get_logger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
"""Where the judge is asked when neither ``--judge-base-url`` nor ``OPENAI_BASE_URL`` says otherwise."""

DEFAULT_MODEL = "gpt-3.5-turbo"
"""The paper's judge."""

PROMPT_SOURCE = (
    "https://github.com/mbzuai-oryx/Video-ChatGPT/blob/659e04b2ce4bb518b663eb06f7db27b4971e8bde/"
    "quantitative_evaluation/evaluate_activitynet_qa.py"
)
"""The file and commit the prompt is copied from."""

SYSTEM_PROMPT = (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
    "question-answer pairs. "
    "Your task is to compare the predicted answer with the correct answer and determine if they match meaningfully. "
    "Here's how you can accomplish the task:"
    "------"
    "##INSTRUCTIONS: "
    "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Evaluate the correctness of the prediction compared to the answer."
)
"""Video-ChatGPT's system message, verbatim (its pieces are concatenated without separators, as there)."""

USER_PROMPT_TAIL = (
    "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 and 5, with 5 "
    "indicating the highest meaningful match. "
    "Please generate the response in the form of a Python dictionary string with keys 'pred' and 'score', where "
    "value of 'pred' is  a string of 'yes' or 'no' and value of 'score' is in INTEGER, not STRING."
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
    "For example, your response should look like this: {'pred': 'yes', 'score': 4.8}."
)
"""The end of Video-ChatGPT's user message, verbatim (the double space in "is  a string" is the original's)."""


class JudgeError(ValueError):
    """The judge cannot be asked with these settings (no key, unreachable URL, rejected key or model): a problem of
    the inputs, reported by the command line without a traceback."""


class JudgeConfigError(JudgeError):
    """A judge setting is missing or impossible; the message names its flag or environment variable."""


class JudgeConnectionError(JudgeError):
    """The judge's base URL refuses connections or cannot be reached."""


class ReplyParseError(ValueError):
    """A judge reply is not the ``{'pred': 'yes' | 'no', 'score': 0..5}`` dict the prompt asks for."""


def judge_messages(question: str, answer: str, prediction: str) -> list[dict[str, str]]:
    """The chat messages that ask the judge about one item: Video-ChatGPT's system and user messages.

    Example:
        >>> messages = judge_messages("what is he doing?", "cooking", "he cooks")
        >>> [message["role"] for message in messages]
        ['system', 'user']
        >>> messages[1]["content"].splitlines()[2:5]
        ['Question: what is he doing?', 'Correct Answer: cooking', 'Predicted Answer: he cooks']
    """
    user = (
        "Please evaluate the following video-based question-answer pair:\n\n"
        f"Question: {question}\n"
        f"Correct Answer: {answer}\n"
        f"Predicted Answer: {prediction}\n\n" + USER_PROMPT_TAIL
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_reply(reply: str | None) -> tuple[str, float]:
    """The verdict (``"yes"`` or ``"no"``) and score of a judge reply.

    The reply must be a Python dict literal (``ast.literal_eval``, as in Video-ChatGPT) with ``pred`` a string that
    is yes or no (any case, surrounding spaces ignored) and ``score`` a number (or a numeric string) from 0 to 5.

    Raises:
        ReplyParseError: anything else, with the reason.

    Examples:
        >>> parse_reply("{'pred': 'Yes', 'score': 4.8}")
        ('yes', 4.8)
        >>> parse_reply("yes, 4")
        Traceback (most recent call last):
        ...
        videotgb.evaluation.judge.ReplyParseError: the reply is not a Python dict literal: 'yes, 4'
    """
    if not isinstance(reply, str):
        raise ReplyParseError("the reply has no text")
    try:
        value = ast.literal_eval(reply.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ReplyParseError(f"the reply is not a Python dict literal: {reply[:200]!r}") from None
    if not isinstance(value, dict) or "pred" not in value or "score" not in value:
        raise ReplyParseError(f"the reply is not a dict with keys 'pred' and 'score': {reply[:200]!r}")
    verdict, score = value["pred"], value["score"]
    if not isinstance(verdict, str) or verdict.strip().lower() not in ("yes", "no"):
        raise ReplyParseError(f"'pred' is {verdict!r}, not 'yes' or 'no'")
    if isinstance(score, bool):
        raise ReplyParseError(f"'score' is {score!r}, not a number")
    try:
        number = float(score)
    except (TypeError, ValueError):
        raise ReplyParseError(f"'score' is {score!r}, not a number") from None
    if not 0 <= number <= 5:
        raise ReplyParseError(f"'score' is {score!r}, outside 0..5")
    return verdict.strip().lower(), number


def cache_key(model: str, messages: Sequence[dict[str, str]]) -> str:
    """SHA-256 (hex) of the judge model and the full messages: the name of an item's cache file.

    Example:
        >>> cache_key("m", [{"role": "user", "content": "x"}])[:16]
        'fd58d28a54b86be0'
    """
    text = json.dumps({"model": model, "messages": list(messages)}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def public_url(url: str) -> str:
    """`url` without user name, password, query or fragment, fit to be written into results.

    Example:
        >>> public_url("https://user:secret@example.com/v1?key=abc")
        'https://example.com/v1'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass
class JudgeSettings:
    """How to reach and ask the judge.

    Args:
        model: the judge model name the endpoint serves (``--judge-model``).
        base_url: OpenAI-compatible base URL, e.g. ``http://127.0.0.1:8000/v1`` (``--judge-base-url``; default the
            ``OPENAI_BASE_URL`` environment variable, else :data:`DEFAULT_BASE_URL`).
        api_key: the endpoint's API key (``--judge-api-key``; default ``OPENAI_API_KEY``). Required: a local server
            that checks none takes any string. Never written anywhere.
        concurrency: requests in flight at once (``--judge-concurrency``).
        timeout: seconds per HTTP request before it counts as timed out and is retried (``--judge-timeout``).
        max_retries: HTTP retries per request on connection errors, timeouts, 408, 409, 429 and 5xx, with the
            client's exponential backoff (``--judge-max-retries``).
        parse_retries: times a reply that does not parse is asked for again (``--judge-parse-retries``).
        cache_dir: folder of cached replies (``--judge-cache``); None: no cache.
    """

    model: str = DEFAULT_MODEL
    base_url: str | None = None
    api_key: str | None = None
    concurrency: int = 4
    timeout: float = 60.0
    max_retries: int = 5
    parse_retries: int = 2
    cache_dir: str | os.PathLike | None = None

    def resolved_base_url(self) -> str:
        return (self.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")

    def resolved_api_key(self) -> str:
        key = self.api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            raise JudgeConfigError(
                f"no API key for the judge at {public_url(self.resolved_base_url())}: pass --judge-api-key KEY or set "
                "OPENAI_API_KEY (a local server that checks no key takes any string, e.g. --judge-api-key local), "
                "or score without the judge (--no-judge)"
            )
        return key

    def check(self) -> None:
        """JudgeConfigError naming the flag of an impossible setting."""
        for flag, value, minimum in (
            ("--judge-concurrency", self.concurrency, 1),
            ("--judge-max-retries", self.max_retries, 0),
            ("--judge-parse-retries", self.parse_retries, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise JudgeConfigError(f"{flag} {value!r}: must be an integer >= {minimum}")
        if not self.timeout > 0:
            raise JudgeConfigError(f"--judge-timeout {self.timeout!r}: must be a positive number of seconds")
        if not self.model:
            raise JudgeConfigError("--judge-model: empty model name")


@dataclass(frozen=True)
class JudgeItem:
    """One open-ended answer to judge."""

    id: str
    question: str
    answer: str
    prediction: str


_attempts = threading.local()


def _count_attempt(request: Any) -> None:
    """httpx2 request hook: every HTTP attempt (first tries and the client's retries) of the current thread."""
    _attempts.count = getattr(_attempts, "count", 0) + 1


class VideoChatGPTJudge:
    """Asks an OpenAI-compatible chat endpoint Video-ChatGPT's judge question for each item.

    Example (a server answering on loopback)::

        judge = VideoChatGPTJudge(JudgeSettings(model="qwen", base_url="http://127.0.0.1:8000/v1", api_key="local"))
        judgements = judge.judge([JudgeItem("0", "what is he doing?", "cooking", "he is cooking")])
        summary = summarize(judgements)  # {"judge_accuracy": ..., "judge_score": ..., "counts": ..., ...}
    """

    def __init__(self, settings: JudgeSettings) -> None:
        import openai

        settings.check()
        self.settings = settings
        self.base_url = settings.resolved_base_url()
        self.cache_dir = Path(settings.cache_dir) if settings.cache_dir is not None else None
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=settings.resolved_api_key(),
            timeout=settings.timeout,
            max_retries=settings.max_retries,
            http_client=openai.DefaultHttpxClient(event_hooks={"request": [_count_attempt]}),
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def __enter__(self) -> VideoChatGPTJudge:
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()

    def info(self, judgements: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        """The results' ``judge`` block: requested model, the model(s) and fingerprint(s) the server reported for
        `judgements` (one value when all agree, else a sorted list; None when nothing was reported), the base URL
        without credentials, and the prompt's source."""

        def reported(field: str) -> Any:
            values = sorted({str(j[field]) for j in judgements if j.get(field) is not None})
            return values[0] if len(values) == 1 else (values or None)

        return {
            "model": reported("response_model"),
            "requested_model": self.settings.model,
            "base_url": public_url(self.base_url),
            "system_fingerprint": reported("system_fingerprint"),
            "prompt": PROMPT_SOURCE,
            "parse_retries": self.settings.parse_retries,
            "max_retries": self.settings.max_retries,
            "timeout": self.settings.timeout,
        }

    # ---- cache --------------------------------------------------------------------------------------------------

    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.json"

    def _read_cache(self, key: str) -> dict[str, Any] | None:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            logger.warning(f"judge cache file {path} is unreadable ({error}); asking the judge again")
            return None
        if entry.get("key") != key or not isinstance(entry.get("replies"), list):
            logger.warning(f"judge cache file {path} does not hold key {key}; asking the judge again")
            return None
        return entry

    def _write_cache(self, key: str, entry: dict[str, Any]) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_text(json.dumps(entry, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, path)

    # ---- asking -------------------------------------------------------------------------------------------------

    def _ask(self, messages: list[dict[str, str]]) -> tuple[str | None, str | None, str | None]:
        """One chat completion (with the client's retries): reply text, reported model, system fingerprint."""
        import openai

        try:
            completion = self._client.chat.completions.create(model=self.settings.model, messages=messages)
        except openai.APITimeoutError:
            raise
        except openai.APIConnectionError as error:
            cause = error.__cause__ or error
            raise JudgeConnectionError(
                f"cannot connect to the judge at {public_url(self.base_url)} (--judge-base-url / OPENAI_BASE_URL): "
                f"{type(cause).__name__}: {cause}; is the server running and the URL right?"
            ) from error
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as error:
            raise JudgeError(
                f"the judge at {public_url(self.base_url)} refused the request with HTTP {error.status_code} "
                f"(check --judge-api-key / OPENAI_API_KEY and --judge-model {self.settings.model!r}): {error.message}"
            ) from error
        choice = completion.choices[0] if completion.choices else None
        text = choice.message.content if choice is not None else None
        return text, completion.model, completion.system_fingerprint

    def judge_one(self, item: JudgeItem) -> dict[str, Any]:
        """Judge one item (from the cache when it is there).

        Returns:
            A JSON-ready dict: ``id``, ``status`` (``judged``, ``parse_failure`` or ``request_failure``),
            ``verdict`` (``yes`` / ``no`` / None), ``score`` (float as replied, or None), ``reply`` (the last reply),
            ``replies`` (all of them), ``parse_error``, ``error`` (the request failure), ``requests`` (HTTP
            attempts made now: 0 from the cache), ``http_retries``, ``parse_retries``, ``cached``, ``cache_key``,
            ``requested_model``, ``response_model``, ``system_fingerprint``.
        """
        import openai

        messages = judge_messages(item.question, item.answer, item.prediction)
        key = cache_key(self.settings.model, messages)
        result: dict[str, Any] = {
            "id": item.id,
            "status": "parse_failure",
            "verdict": None,
            "score": None,
            "reply": None,
            "replies": [],
            "parse_error": None,
            "error": None,
            "requests": 0,
            "http_retries": 0,
            "parse_retries": 0,
            "cached": False,
            "cache_key": key,
            "requested_model": self.settings.model,
            "response_model": None,
            "system_fingerprint": None,
        }
        entry = self._read_cache(key)
        if entry is not None:
            result.update(
                cached=True,
                replies=entry["replies"],
                response_model=entry.get("response_model"),
                system_fingerprint=entry.get("system_fingerprint"),
            )
        else:
            calls = 0
            _attempts.count = 0
            try:
                for _ in range(self.settings.parse_retries + 1):
                    calls += 1
                    text, model, fingerprint = self._ask(messages)
                    result["replies"].append(text)
                    result.update(response_model=model, system_fingerprint=fingerprint)
                    try:
                        parse_reply(text)
                        break
                    except ReplyParseError:
                        continue
            except openai.APIError as error:  # timeouts and HTTP errors left after the retries
                result.update(status="request_failure", error=f"{type(error).__name__}: {error}")
            result.update(
                requests=_attempts.count,
                http_retries=_attempts.count - calls,
                parse_retries=max(len(result["replies"]) - 1, 0),
            )
            if result["status"] == "request_failure":
                result["reply"] = result["replies"][-1] if result["replies"] else None
                return result
            self._write_cache(
                key,
                {
                    "key": key,
                    "requested_model": self.settings.model,
                    "messages": messages,
                    "replies": result["replies"],
                    "response_model": result["response_model"],
                    "system_fingerprint": result["system_fingerprint"],
                },
            )
        result["reply"] = result["replies"][-1] if result["replies"] else None
        try:
            result["verdict"], result["score"] = parse_reply(result["reply"])
            result["status"] = "judged"
        except ReplyParseError as error:
            result["parse_error"] = str(error)
        return result

    def judge(self, items: Sequence[JudgeItem], progress: bool = False) -> list[dict[str, Any]]:
        """Judge `items` with at most ``concurrency`` requests in flight; results in the order of `items`.

        Raises:
            JudgeConnectionError: the base URL cannot be reached (after the client's retries); no item is left
                half-judged: the items judged so far are in the cache.
            JudgeError: the endpoint rejects the key or the model.
        """
        ids = Counter(item.id for item in items)
        repeated = [name for name, count in ids.items() if count > 1]
        if repeated:
            raise ValueError(f"judge items need unique ids; repeated: {', '.join(map(repr, repeated[:5]))}")
        results: list[dict[str, Any] | None] = [None] * len(items)
        executor = ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="judge")
        try:
            futures = {executor.submit(self.judge_one, item): index for index, item in enumerate(items)}
            with tqdm(total=len(items), desc="judge", unit="item", disable=not progress) as bar:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update(1)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
        return [result for result in results if result is not None]


def summarize(judgements: Sequence[dict[str, Any]], truncate_scores: bool = False) -> dict[str, Any]:
    """Accuracy, score and counts of :meth:`VideoChatGPTJudge.judge` results.

    Args:
        truncate_scores: score each item by ``int(score)`` (4.8 -> 4), as Video-ChatGPT's script did; by default
            the judge's scores are averaged as given.

    Returns:
        ``{"judge_accuracy": yes / (yes + no), "judge_score": mean score over judged items, "counts": {"judged",
        "yes", "no", "parse_failures", "request_failures", "cached", "requests", "http_retries", "parse_retries"},
        "parse_failures": [{"id", "reply", "replies", "error"}], "request_failures": [{"id", "error"}]}`` (NaN for
        an accuracy or score over no items).

    Example:
        >>> summarize([{"id": "a", "status": "judged", "verdict": "yes", "score": 4.8},
        ...            {"id": "b", "status": "judged", "verdict": "no", "score": 1.0}], truncate_scores=True)["judge_score"]
        2.5
    """
    judged = [j for j in judgements if j["status"] == "judged"]
    yes = sum(j["verdict"] == "yes" for j in judged)
    no = sum(j["verdict"] == "no" for j in judged)
    scores = [float(int(j["score"])) if truncate_scores else float(j["score"]) for j in judged]
    parse_failures = [j for j in judgements if j["status"] == "parse_failure"]
    request_failures = [j for j in judgements if j["status"] == "request_failure"]
    return {
        "judge_accuracy": yes / (yes + no) if yes + no else float("nan"),
        "judge_score": sum(scores) / len(scores) if scores else float("nan"),
        "counts": {
            "judged": len(judged),
            "yes": yes,
            "no": no,
            "parse_failures": len(parse_failures),
            "request_failures": len(request_failures),
            "cached": sum(bool(j.get("cached")) for j in judgements),
            "requests": sum(j.get("requests", 0) for j in judgements),
            "http_retries": sum(j.get("http_retries", 0) for j in judgements),
            "parse_retries": sum(j.get("parse_retries", 0) for j in judgements),
        },
        "parse_failures": [
            {"id": j["id"], "reply": j["reply"], "replies": j["replies"], "error": j["parse_error"]}
            for j in parse_failures
        ],
        "request_failures": [{"id": j["id"], "error": j["error"]} for j in request_failures],
    }


__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "PROMPT_SOURCE",
    "SYSTEM_PROMPT",
    "USER_PROMPT_TAIL",
    "JudgeConfigError",
    "JudgeConnectionError",
    "JudgeError",
    "JudgeItem",
    "JudgeSettings",
    "ReplyParseError",
    "VideoChatGPTJudge",
    "cache_key",
    "judge_messages",
    "parse_reply",
    "public_url",
    "summarize",
]
