"""Tests for sfpo_edu.rewards: extraction, verification, schemes, hostile input.

Run: ``pytest tests/test_rewards.py``. The hostile-input tests check three things
for each string: nothing from it runs, every call returns within its time limit,
and the reward is 0.
"""

import threading
import time

import pytest

from sfpo_edu import rewards
from sfpo_edu.rewards import extract_answer, is_correct, reward, score_completions

TIMEOUT_S = 0.5
# Starting (or restarting, after a kill) the math_verify helper takes about 0.5 s
# and is not counted in the time limit; allow it and a loaded machine on top.
SLACK_S = 3.0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is \\boxed{42}.", "42"),
        ("First \\boxed{1}, then \\boxed{7}", "7"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\{1, \\{2\\}\\}}", "\\{1, \\{2\\}\\}"),
        ("She has 3 + 4 = 7 apples.\n#### 7", "7"),
        ("#### 1,234\nand then 5", "1234"),
        ("2 + 9 = 11", "11"),
        ("It is -3 degrees.", "-3"),
        ("3-2", "2"),
        ("Pi is about 3.14.", "3.14"),
        ("It costs 1,234,567 dollars", "1234567"),
        ("1, 2, 3", "3"),
        ("I'm here to help.", None),
        ("\\boxed{}", None),
        ("", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_unbalanced_or_too_deep_boxed_falls_back_to_last_number() -> None:
    assert extract_answer("\\boxed{12") == "12"
    assert extract_answer("5 \\boxed{" + "{" * 50 + "x" + "}" * 51) == "5"


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("5", "5"),
        ("5.0", "5"),
        ("1,234", "1234"),
        ("-3", "-3"),
        ("\\frac{1}{2}", "0.5"),
        ("0.5", "\\frac{1}{2}"),
        ("\\frac{10}{2}", "5"),
    ],
)
def test_is_correct_true(pred: str, gold: str) -> None:
    assert is_correct(pred, gold)


@pytest.mark.parametrize(
    "pred, gold",
    [("6", "5"), ("-5", "5"), ("", "5"), ("\\frac{1}{3}", "0.5"), ("abc", "5")],
)
def test_is_correct_false(pred: str, gold: str) -> None:
    assert not is_correct(pred, gold)


def test_schemes() -> None:
    assert reward("so 2 + 3 = 5", "5") == 1.0
    assert reward("so 2 + 3 = 6", "5") == 0.0
    assert reward("I don't know", "5") == 0.0
    assert reward("so 2 + 3 = 5", "5", scheme="reference") == 1.0
    assert reward("so 2 + 3 = 6", "5", scheme="reference") == 0.1
    assert reward("I don't know", "5", scheme="reference") == 0.0


def test_score_completions_metrics() -> None:
    completions = ["5", "the sum is 6", "no idea", "\\boxed{5}"]
    rewards, metrics = score_completions(completions, ["5"] * 4, scheme="reference")
    assert rewards == [1.0, 0.1, 0.0, 1.0]
    assert metrics == {"reward/accuracy": 0.5, "reward/format": 0.75}


def test_score_completions_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        score_completions(["1", "2"], ["1"])
    with pytest.raises(ValueError, match="'bogus'.*binary.*reference"):
        score_completions(["1"], ["1"], scheme="bogus")
    with pytest.raises(ValueError, match="'bogus'"):
        reward("1", "1", scheme="bogus")


def _hostile_strings(marker: str) -> list[str]:
    command = f"touch {marker}"
    return [
        f"import os\nos.system('{command}')\nprint(1 + 1)",
        f"__import__('os').system('{command}')",
        f'\\boxed{{__import__("os").system("{command}")}}',
        '\\boxed{__import__("os")}',
        "\\boxed{9^{9^{9}}}",  # makes sympy build a 370-million-digit number
        "\\boxed{100000000!}",
        "9" * 10**6,
        "\\boxed{" + "{" * 10**5 + "1" + "}" * 10**5 + "}",
        "{" * 10**5,
        "x = " + "1 + " * 10**6 + "1",
    ]


def test_hostile_strings_run_nothing_return_in_time_and_score_zero(tmp_path) -> None:
    marker = tmp_path / "pwned"
    is_correct("\\frac{1}{2}", "0.5")  # start the helper outside the timings
    for text in _hostile_strings(str(marker)):
        start = time.perf_counter()
        assert reward(text, "5") == 0.0, text[:60]
        elapsed = time.perf_counter() - start
        # reward() uses is_correct's default limit of 1 s.
        assert elapsed < 1.0 + SLACK_S, (text[:60], elapsed)
    assert not marker.exists()
    assert is_correct("\\frac{1}{2}", "0.5")  # the helper recovers after kills


def test_slow_verification_is_cut_at_the_time_limit() -> None:
    start = time.perf_counter()
    assert not is_correct("9^{9^{9}}", "5", timeout_s=TIMEOUT_S)
    assert TIMEOUT_S * 0.9 < time.perf_counter() - start < TIMEOUT_S + SLACK_S


def test_score_completions_from_a_worker_thread() -> None:
    completions = ["\\boxed{\\frac{1}{2}}", "\\boxed{9^{9^{9}}}", "2 + 3 = 5", "7"]
    answers = ["0.5", "5", "5", "5"]
    results = {}

    def work() -> None:
        start = time.perf_counter()
        results["out"] = score_completions(completions, answers)
        results["elapsed"] = time.perf_counter() - start

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    rewards, metrics = results["out"]
    assert rewards == [1.0, 0.0, 1.0, 0.0]
    assert metrics["reward/accuracy"] == 0.5
    # Two calls reach the helper: each may wait up to 1 s plus a (re)start.
    assert results["elapsed"] < 2 * (1.0 + SLACK_S)


def test_a_batch_of_slow_answers_stays_within_the_batch_budget() -> None:
    # issue 19: 16 answers that time out took 25 s (1 s each plus a helper restart)
    rewards._stop_worker()  # the budget counts the helper's (re)starts too
    completions = ["\\boxed{9^{9^{9}}}"] * 16
    start = time.perf_counter()
    with pytest.warns(UserWarning, match="used up its 2 s budget"):
        scores, metrics = score_completions(completions, ["5"] * 16, time_budget_s=2.0)
    elapsed = time.perf_counter() - start
    assert scores == [0.0] * 16 and metrics["reward/format"] == 1.0
    assert elapsed < 2.0 + SLACK_S, elapsed
    assert is_correct("\\frac{1}{2}", "0.5")  # the helper still works afterwards
