"""The Video-ChatGPT judge against a real chat-completions server on loopback (tests/judge_server.py): scores, retry
counts and parse failures exactly as scripted, the cache, and clear errors for an unreachable URL or a missing key."""

from __future__ import annotations

import hashlib
import json

import pytest
from judge_server import (
    FINGERPRINT,
    REPORTED_MODEL_SUFFIX,
    JudgeServer,
    free_port,
    reply,
    serve,
    sleep,
    status,
    verdict,
)

from videotgb.evaluation.judge import (
    JudgeConfigError,
    JudgeConnectionError,
    JudgeItem,
    JudgeSettings,
    ReplyParseError,
    VideoChatGPTJudge,
    judge_messages,
    parse_reply,
    summarize,
)

KEY = "sk-test-secret-9f3a7c"
MODEL = "judge-test"

# question -> the server's actions, request by request (the last repeats)
SCRIPT = {
    "q-yes": [verdict("yes", 4)],
    "q-no": [verdict("no", 1.5)],
    "q-malformed-then-ok": [reply("yes I think so"), verdict("yes", 3)],
    "q-malformed": [reply("no idea, sorry")],
    "q-429": [status(429), verdict("no", 0)],
    "q-timeout": [sleep(3.0, verdict("yes", 5)), verdict("yes", 2)],  # past the 2 s timeout
    "q-500": [status(500), verdict("yes", 4.8)],
    "q-500-always": [status(500)],
}
# question -> (status, verdict, score, HTTP requests, HTTP retries, parse retries) with max_retries 2, parse_retries 2
EXPECTED = {
    "q-yes": ("judged", "yes", 4.0, 1, 0, 0),
    "q-no": ("judged", "no", 1.5, 1, 0, 0),
    "q-malformed-then-ok": ("judged", "yes", 3.0, 2, 0, 1),
    "q-malformed": ("parse_failure", None, None, 3, 0, 2),
    "q-429": ("judged", "no", 0.0, 2, 1, 0),
    "q-timeout": ("judged", "yes", 2.0, 2, 1, 0),
    "q-500": ("judged", "yes", 4.8, 2, 1, 0),
    "q-500-always": ("request_failure", None, None, 3, 2, 0),
}


def items(questions):
    return [JudgeItem(f"id-{q}", q, "gold answer", f"predicted for {q}") for q in questions]


def settings(url, cache, **changes):
    values = dict(model=MODEL, base_url=url, api_key=KEY, concurrency=4, timeout=2.0, max_retries=2, parse_retries=2)
    return JudgeSettings(**(values | {"cache_dir": cache} | changes))


def test_prompt_is_video_chatgpts():
    # SHA-256 of the messages rendered by Video-ChatGPT's evaluate_activitynet_qa.py (commit 659e04b) for these values
    messages = judge_messages("Q?", "A!", "P.")
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
    assert digest == "1559ee3ab1ced98fe6e61cc82cd2a786b92ac71c8bb3e01374931e5aff967de2"


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("{'pred': 'yes', 'score': 4}", ("yes", 4.0)),
        (" {'pred': ' NO ', 'score': '2.5'}\n", ("no", 2.5)),
        ("{'pred': 'maybe', 'score': 3}", "not 'yes' or 'no'"),
        ("{'pred': 'yes', 'score': 7}", "outside 0..5"),
        ("{'pred': 'yes', 'score': True}", "not a number"),
        ("{'pred': 'yes'}", "keys 'pred' and 'score'"),
        ("```python\n{'pred': 'yes', 'score': 4}\n```", "not a Python dict literal"),
        (None, "no text"),
    ],
)
def test_parse_reply(text, parsed):
    if isinstance(parsed, tuple):
        assert parse_reply(text) == parsed
    else:
        with pytest.raises(ReplyParseError, match=parsed):
            parse_reply(text)


def test_judge_scripted_server_scores_retries_failures_and_cache(tmp_path):
    with serve(JudgeServer(script=SCRIPT)) as server:
        judge = VideoChatGPTJudge(settings(server.url, tmp_path / "cache"))
        judgements = judge.judge(items(SCRIPT))
        by_question = {j["id"][3:]: j for j in judgements}
        fields = ("status", "verdict", "score", "requests", "http_retries", "parse_retries")
        for question, expected in EXPECTED.items():
            assert tuple(by_question[question][k] for k in fields) == expected, question
            assert server.requests[question] == expected[3], question
        assert [j["id"] for j in judgements] == [f"id-{q}" for q in SCRIPT]  # in the order asked
        assert server.total == 16
        assert {j["response_model"] for j in judgements if j["status"] != "request_failure"} == {
            MODEL + REPORTED_MODEL_SUFFIX
        }
        assert by_question["q-yes"]["system_fingerprint"] == FINGERPRINT
        assert by_question["q-malformed"]["replies"] == ["no idea, sorry"] * 3
        assert "InternalServerError" in by_question["q-500-always"]["error"]

        summary = summarize(judgements)
        assert summary["judge_accuracy"] == pytest.approx(4 / 6)
        assert summary["judge_score"] == pytest.approx((4 + 1.5 + 3 + 0 + 2 + 4.8) / 6)
        assert summarize(judgements, truncate_scores=True)["judge_score"] == pytest.approx((4 + 1 + 3 + 0 + 2 + 4) / 6)
        assert summary["counts"] == {
            "judged": 6,
            "yes": 4,
            "no": 2,
            "parse_failures": 1,
            "request_failures": 1,
            "cached": 0,
            "requests": 16,
            "http_retries": 5,
            "parse_retries": 3,
        }
        assert summary["parse_failures"] == [
            {
                "id": "id-q-malformed",
                "reply": "no idea, sorry",
                "replies": ["no idea, sorry"] * 3,
                "error": "the reply is not a Python dict literal: 'no idea, sorry'",
            }
        ]
        assert summary["request_failures"] == [
            {"id": "id-q-500-always", "error": by_question["q-500-always"]["error"]}
        ]
        assert judge.info(judgements)["model"] == MODEL + REPORTED_MODEL_SUFFIX
        assert all(header["authorization"] == f"Bearer {KEY}" for header in server.headers)

        # a rerun: everything but the request failure comes from the cache, with no request at all
        again = VideoChatGPTJudge(settings(server.url, tmp_path / "cache")).judge(items(list(SCRIPT)[:-1]))
        assert server.total == 16
        rerun = summarize(again)
        assert rerun["counts"]["cached"] == 7 and rerun["counts"]["requests"] == 0
        for key in ("judge_accuracy", "judge_score", "parse_failures"):
            assert rerun[key] == summary[key]
        # a failed request was not cached: asking again asks the server again
        VideoChatGPTJudge(settings(server.url, tmp_path / "cache")).judge(items(["q-500-always"]))
        assert server.total == 19

    cached = [path.read_text() for path in (tmp_path / "cache").rglob("*.json")]
    assert len(cached) == 7 and not any(KEY in text for text in cached)


def test_concurrency_limit_holds(tmp_path):
    questions = [f"slow-{number}" for number in range(6)]
    script = {question: [sleep(0.4, verdict("yes", 5))] for question in questions}
    with serve(JudgeServer(script=script)) as server:
        judgements = VideoChatGPTJudge(settings(server.url, None, concurrency=3, timeout=10.0)).judge(items(questions))
    assert [j["status"] for j in judgements] == ["judged"] * 6
    assert server.most_in_flight == 3


def test_refused_connection_names_the_url(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    judge = VideoChatGPTJudge(settings(url, tmp_path / "cache", max_retries=0))
    with pytest.raises(JudgeConnectionError, match=f"cannot connect to the judge at {url}"):
        judge.judge(items(["q-yes", "q-no"]))


def test_missing_key_names_flag_and_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(JudgeConfigError, match="--judge-api-key KEY or set OPENAI_API_KEY"):
        VideoChatGPTJudge(JudgeSettings(base_url="http://127.0.0.1:9/v1"))
    monkeypatch.setenv("OPENAI_API_KEY", "from-environment")
    assert VideoChatGPTJudge(JudgeSettings(base_url="http://127.0.0.1:9/v1")).base_url == "http://127.0.0.1:9/v1"


@pytest.mark.parametrize(
    "change, flag", [({"concurrency": 0}, "--judge-concurrency"), ({"timeout": 0}, "--judge-timeout")]
)
def test_bad_settings_name_their_flag(change, flag):
    with pytest.raises(JudgeConfigError, match=flag):
        VideoChatGPTJudge(JudgeSettings(api_key="x", **change))
