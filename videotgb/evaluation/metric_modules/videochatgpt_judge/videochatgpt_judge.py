"""The Video-ChatGPT judge (yes / no and a 0-5 score per answer, asked of an OpenAI-compatible endpoint), for
`evaluate`.

Load offline with ``evaluate.load(videotgb.evaluation.metric_modules.metric_path("videochatgpt_judge"))``; the
prompt, retries, cache and parse rules are those of :mod:`videotgb.evaluation.judge`.
"""

import datasets
import evaluate

from videotgb.evaluation.judge import DEFAULT_MODEL, JudgeItem, JudgeSettings, VideoChatGPTJudge, summarize

_CITATION = """@inproceedings{maaz2024videochatgpt,
  title={Video-ChatGPT: Towards Detailed Video Understanding via Large Vision and Language Models},
  author={Maaz, Muhammad and Rasheed, Hanoona and Khan, Salman and Khan, Fahad Shahbaz},
  booktitle={ACL},
  year={2024}
}"""

_DESCRIPTION = """Video-ChatGPT's judged accuracy and score of open-ended video QA: an LLM judge reads the question,
the correct answer and the predicted answer and replies {'pred': 'yes' | 'no', 'score': 0..5}. Accuracy is
yes / (yes + no); the score is the mean over the judged items. Replies that do not parse are asked again, then
counted and listed, never scored. The judge model the server reported is returned with the numbers."""

_INPUTS = """
Args:
    predictions: generated answers.
    references: gold answers.
    questions: the questions.
    judge_model: model name at the endpoint (default gpt-3.5-turbo).
    judge_base_url: OpenAI-compatible base URL (default OPENAI_BASE_URL, else https://api.openai.com/v1).
    judge_api_key: API key (default OPENAI_API_KEY); never returned.
    concurrency, timeout, max_retries, parse_retries: as the JudgeSettings of videotgb.evaluation.judge.
    cache_dir: folder of cached replies (None: no cache).
    truncate_scores: average int(score) as Video-ChatGPT's script did.
Returns:
    accuracy, score, counts (judged, yes, no, parse_failures, request_failures, cached, requests, http_retries,
    parse_retries), parse_failures, request_failures, judge (the model and fingerprint the server reported, the
    base URL, the prompt's source), judgements (every item's replies).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class VideochatgptJudge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Value("string"),
                    "questions": datasets.Value("string"),
                }
            ),
        )

    def _compute(
        self,
        predictions,
        references,
        questions,
        judge_model=DEFAULT_MODEL,
        judge_base_url=None,
        judge_api_key=None,
        concurrency=4,
        timeout=60.0,
        max_retries=5,
        parse_retries=2,
        cache_dir=None,
        truncate_scores=False,
    ):
        items = [
            JudgeItem(str(index), question, reference, prediction)
            for index, (prediction, reference, question) in enumerate(
                zip(predictions, references, questions, strict=True)
            )
        ]
        with VideoChatGPTJudge(
            JudgeSettings(
                model=judge_model,
                base_url=judge_base_url,
                api_key=judge_api_key,
                concurrency=concurrency,
                timeout=timeout,
                max_retries=max_retries,
                parse_retries=parse_retries,
                cache_dir=cache_dir,
            )
        ) as judge:
            judgements = judge.judge(items)
            info = judge.info(judgements)
        summary = summarize(judgements, truncate_scores=truncate_scores)
        return {
            "accuracy": summary["judge_accuracy"],
            "score": summary["judge_score"],
            "counts": summary["counts"],
            "parse_failures": summary["parse_failures"],
            "request_failures": summary["request_failures"],
            "judge": info | {"score_truncation": truncate_scores},
            "judgements": judgements,
        }
