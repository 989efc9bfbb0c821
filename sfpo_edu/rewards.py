"""Rewards: read the answer out of a completion and check it against the gold answer.

1. ``extract_answer(text)``: the last ``\\boxed{...}``, else ``#### <n>`` (GSM8K), else
   the last number: a small model writes ``2 + 9 = 11``, meaning 11.
2. ``is_correct(pred, gold)``: plain numbers are compared exactly (``5 == 5.0``),
   anything else (``\\frac{1}{2}`` vs ``0.5``) by ``math_verify``.
3. ``reward(completion, answer, scheme)``: ``"binary"`` gives 1 or 0; ``"reference"``
   (the SFPO reference code) 1 correct, 0.1 extractable but wrong, 0 when none.
4. ``score_completions(completions, answers, scheme)``: the trainer's batch call.

Model output is untrusted: nothing calls ``eval``/``exec`` or sympifies a raw string,
and every step is bounded (the ``MAX_*`` constants). ``math_verify`` can still hang in
C code (``\\boxed{9^{9^{9}}}``), so it runs in one helper process, killed when a reply
takes over ``timeout_s`` (the answer counts as wrong; the next call starts a new one).
``score_completions`` gives it ``BATCH_TIME_BUDGET_S`` per batch, starts included.

Departure from the SFPO reference code, which rewards only a ``\\boxed{}`` answer:
``#### n`` and a bare last number count too (SmolLM2-135M almost never boxes).
"""

import atexit
import json
import queue
import re
import subprocess
import sys
import threading
import time
import warnings
from decimal import Decimal

SCHEMES = ("binary", "reference")
MAX_TEXT_CHARS = 20_000  # only the end of a completion is read
MAX_ANSWER_CHARS = 1_000  # longer \boxed{} contents or answers are rejected
MAX_BRACE_DEPTH = 20  # deeper nesting inside \boxed{} is rejected
MAX_NUMBER_DIGITS = 50  # longer digit strings are not "plain numbers"
BATCH_TIME_BUDGET_S = 5.0  # math_verify seconds per batch, helper (re)starts included

# An optional sign (not after a letter or digit: "3-2" is not "-2"), thousands
# groups like 1,234 or plain digits, then an optional decimal part.
_NUMBER = r"(?:(?<![\w.])-)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_HASH_ANSWER_RE = re.compile(r"####\s*\$?\s*(" + _NUMBER + ")")
_PLAIN_NUMBER_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def extract_answer(text: str) -> str | None:
    """The answer at the end of ``text``, or None; numbers lose thousands commas."""
    tail = text[-MAX_TEXT_CHARS:]
    boxed = _last_boxed(tail)
    if boxed is not None:
        return boxed
    hashes = tail.rfind("####")
    if hashes != -1:
        match = _HASH_ANSWER_RE.match(tail, hashes)
        if match:
            return match.group(1).replace(",", "")
    numbers = _NUMBER_RE.findall(tail)
    return numbers[-1].replace(",", "") if numbers else None


def _last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` with balanced braces, within bounds."""
    start = text.rfind("\\boxed{")
    if start == -1:
        return None
    begin = start + len("\\boxed{")
    depth = 1
    for i in range(begin, min(len(text), begin + MAX_ANSWER_CHARS + 1)):
        if text[i] == "{":
            depth += 1
            if depth > MAX_BRACE_DEPTH:
                return None
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[begin:i].strip() or None
    return None  # unbalanced, or longer than MAX_ANSWER_CHARS


def is_correct(
    pred: str, gold: str, timeout_s: float = 1.0, *, deadline: float | None = None
) -> bool:
    """True if ``pred`` equals ``gold``; never for empty or over-long answers, nor when
    ``math_verify`` takes over ``timeout_s`` or runs past ``deadline`` (monotonic)."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}.")
    pred, gold = pred.strip(), gold.strip()
    if not pred or not gold or max(len(pred), len(gold)) > MAX_ANSWER_CHARS:
        return False
    pred_number, gold_number = _as_number(pred), _as_number(gold)
    if pred_number is not None and gold_number is not None:
        return pred_number == gold_number
    return _math_verify(pred, gold, timeout_s, deadline)


def _as_number(s: str) -> Decimal | None:
    """The value of a plain number string, or None if it is not one (or too long)."""
    if len(s) > MAX_NUMBER_DIGITS or not _PLAIN_NUMBER_RE.fullmatch(s):
        return None
    return Decimal(s.replace(",", ""))


def reward(completion: str, answer: str, scheme: str = "binary") -> float:
    """Reward of one completion: see ``SCHEMES`` and the module docstring."""
    _check_scheme(scheme)
    return _reward_value(*_judge(completion, answer, None), scheme)


def score_completions(
    completions: list[str],
    answers: list[str],
    scheme: str = "binary",
    time_budget_s: float = BATCH_TIME_BUDGET_S,
) -> tuple[list[float], dict[str, float]]:
    """Rewards, ``reward/accuracy`` (fraction correct) and ``reward/format`` (fraction
    with an answer); ``math_verify`` gets ``time_budget_s`` seconds for the batch."""
    _check_scheme(scheme)
    if len(completions) != len(answers):
        raise ValueError(
            f"got {len(completions)} completions but {len(answers)} answers; pass one "
            "per completion (each prompt's answer G times)."
        )
    deadline = time.monotonic() + time_budget_s
    judged = [_judge(c, a, deadline) for c, a in zip(completions, answers, strict=True)]
    if time.monotonic() > deadline:
        warnings.warn(
            f"reward verification used up its {time_budget_s:g} s budget for this "
            "batch; unchecked answers count as wrong.",
            stacklevel=2,
        )
    rewards = [_reward_value(*verdict, scheme) for verdict in judged]
    n = max(len(judged), 1)
    metrics = {
        "reward/accuracy": sum(correct for _, correct in judged) / n,
        "reward/format": sum(extracted for extracted, _ in judged) / n,
    }
    return rewards, metrics


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown reward scheme {scheme!r}; choose one of {SCHEMES}.")


def _judge(completion: str, answer: str, deadline: float | None) -> tuple[bool, bool]:
    """(an answer was extracted, it is correct)."""
    pred = extract_answer(completion)
    if pred is None:
        return False, False
    return True, is_correct(pred, answer, deadline=deadline)


def _reward_value(extracted: bool, correct: bool, scheme: str) -> float:
    if correct:
        return 1.0
    return 0.1 if extracted and scheme == "reference" else 0.0


# --- math_verify in a helper process, killed when it runs over time ---------------

# Reads one JSON [pred, gold] per line, writes "1" or "0" per line. Both answers are
# wrapped in \boxed{} so math_verify parses the whole string as one LaTeX answer.
_WORKER_CODE = r"""
import json, sys
from math_verify import parse, verify
print("ready", flush=True)
for line in sys.stdin:
    pred, gold = json.loads(line)
    try:
        gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=None)
        pred_parsed = parse("\\boxed{" + pred + "}", parsing_timeout=None)
        ok = verify(gold_parsed, pred_parsed, timeout_seconds=None)
    except Exception:
        ok = False
    print(int(bool(ok)), flush=True)
"""
_STARTUP_TIMEOUT_S = 60.0
_lock = threading.Lock()
_worker: subprocess.Popen | None = None
_replies: queue.Queue[str | None] = queue.Queue()


def _math_verify(
    pred: str, gold: str, timeout_s: float, deadline: float | None = None
) -> bool:
    """``math_verify`` on (pred, gold) within ``timeout_s`` and ``deadline``."""
    with _lock:  # one question at a time, so each reply matches its question
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if _worker is None or _worker.poll() is not None:
            _start_worker()
        if deadline is not None:
            timeout_s = min(timeout_s, deadline - time.monotonic())
            if timeout_s <= 0:  # the start used up the budget: keep the helper
                return False
        try:
            _worker.stdin.write(json.dumps([pred, gold]) + "\n")
            _worker.stdin.flush()
            reply = _replies.get(timeout=timeout_s)
        except (queue.Empty, OSError):
            reply = None
        if reply is None:  # over time, or the helper died: start afresh next time
            _stop_worker()
        return reply == "1"


def _start_worker() -> None:
    global _worker, _replies
    replies: queue.Queue[str | None] = queue.Queue()
    proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER_CODE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    # A thread turns the helper's stdout into a queue, so waits can have a timeout
    # on every OS (select() does not work on pipes on Windows).
    threading.Thread(target=_pump, args=(proc.stdout, replies), daemon=True).start()
    try:
        first = replies.get(timeout=_STARTUP_TIMEOUT_S)
    except queue.Empty:
        first = None
    if first != "ready":
        proc.kill()
        proc.wait()
        raise RuntimeError(
            "could not start the math_verify helper; check that `"
            f"{sys.executable} -c 'import math_verify'` works (pip install math-verify)."
        )
    _worker, _replies = proc, replies


def _pump(stream, replies: queue.Queue[str | None]) -> None:
    for line in stream:
        replies.put(line.strip())
    replies.put(None)  # end of output: the helper exited


def _stop_worker() -> None:
    global _worker
    if _worker is not None:
        _worker.kill()
        _worker.wait()
        _worker = None


atexit.register(_stop_worker)
