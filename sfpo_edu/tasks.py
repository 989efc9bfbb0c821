"""Tasks: the prompts a policy trains on, each with its gold answer.

``load_task(task, n, seed=0, split="train")`` returns ``n`` ``Problem`` objects, e.g.
``Problem("What is 7 + 12? Answer with just the number.", "19", "arithmetic")``.
``task`` is one of:

- ``"arithmetic"`` (default): a + b with a, b in 1..20, offline. A small instruct model
  solves some from the start, so GRPO has signal from the first step.
- ``"arithmetic-hard"``: two + / - operations on 1..50 (``"What is 31 - 7 + 44? ..."``).
- ``"arithmetic-mix"``: alternately ``"arithmetic"`` and a ± b on 1..50, which keeps a
  run from saturating early (the regime map's task).
- a path ending in ``.jsonl``: one ``{"prompt": ..., "answer": ...}`` object a line.
- ``"gsm8k"``: word problems from the Hugging Face hub (offline: ``load_gsm8k(path=)``).
- ``"reasoning_gym:<name>"``: the optional package's generators (``chain_sum``, ...).

``"train"`` and ``"heldout"`` never share a problem (an arithmetic expression's split is
fixed by a hash of its text, GSM8K has train and test), except a JSONL file (``split``
is ignored: held-out = training problems) and reasoning-gym (``"heldout"`` is another
seed; repeats possible). A task with fewer problems than ``n`` is dealt out in
shuffled passes, like epochs.
"""

import hashlib
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "heldout")
OPS = ("+", "-", "*")
HELDOUT_PERCENT = 20  # share of arithmetic expressions that belong to "heldout"
PROMPT_TEMPLATE = "What is {expression}? Answer with just the number."
GSM8K_INSTRUCTION = "Solve the problem, then give the final answer as just a number."
_ENUMERATE_LIMIT = 50_000  # arithmetic spaces up to this size are listed in full
MAX_PROMPT_CHARS = 32_768  # ~8 K tokens: SmolLM2's context; the trainer checks tokens


@dataclass(frozen=True)
class Problem:
    """A user-turn ``prompt`` (no chat template), its gold ``answer`` and ``source``."""

    prompt: str
    answer: str
    source: str = ""


def arithmetic_problems(
    n: int,
    *,
    seed: int = 0,
    split: str = "train",
    min_operand: int = 1,
    max_operand: int = 20,
    ops: tuple[str, ...] = ("+",),
    num_steps: int = 1,
) -> list[Problem]:
    """``n`` seeded problems like ``"What is 3 + 4 * 2? ..."``: ``num_steps`` operations
    from ``ops`` (``*`` first) on integers in ``[min_operand, max_operand]``. Spaces of
    up to ``_ENUMERATE_LIMIT`` expressions are dealt out in full, larger ones sampled."""
    _check_split(split)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    if min_operand > max_operand:
        raise ValueError(
            f"min_operand={min_operand} must be <= max_operand={max_operand}."
        )
    if not ops or any(op not in OPS for op in ops):
        raise ValueError(f"ops must be a non-empty tuple drawn from {OPS}, got {ops}.")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    rng = random.Random(seed)
    operands = range(min_operand, max_operand + 1)
    size = len(operands) ** (num_steps + 1) * len(ops) ** num_steps
    if size <= _ENUMERATE_LIMIT:
        pool = [
            (numbers, chosen_ops)
            for numbers in itertools.product(operands, repeat=num_steps + 1)
            for chosen_ops in itertools.product(ops, repeat=num_steps)
            if _split_of(_expression_text(numbers, chosen_ops)) == split
        ]
        if not pool:
            space = f"{min_operand}..{max_operand}, ops {ops}, {num_steps} step(s)"
            fix = "Fix: widen the operand range or add steps."
            raise ValueError(f"{split!r} split is empty for operands {space}. {fix}")
        expressions = _deal(pool, n, rng)
    else:
        expressions = []
        while len(expressions) < n:
            numbers = tuple(rng.choice(operands) for _ in range(num_steps + 1))
            chosen_ops = tuple(rng.choice(ops) for _ in range(num_steps))
            if _split_of(_expression_text(numbers, chosen_ops)) == split:
                expressions.append((numbers, chosen_ops))
    problems = []
    for nums, chosen in expressions:
        prompt = PROMPT_TEMPLATE.format(expression=_expression_text(nums, chosen))
        problems.append(Problem(prompt, str(_evaluate(nums, chosen)), "arithmetic"))
    return problems


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}.")


def _expression_text(numbers: tuple[int, ...], ops: tuple[str, ...]) -> str:
    """Canonical text: ``(3, 4, 2), ("+", "-")`` gives ``"3 + 4 - 2"``."""
    parts = [str(numbers[0])]
    for op, number in zip(ops, numbers[1:], strict=True):
        parts += [op, str(number)]
    return " ".join(parts)


def _split_of(expression: str) -> str:
    """``"heldout"`` for ``HELDOUT_PERCENT`` % of expressions (by SHA-256), else train."""
    bucket = int.from_bytes(hashlib.sha256(expression.encode()).digest()[:4], "big")
    return "heldout" if bucket % 100 < HELDOUT_PERCENT else "train"


def _evaluate(numbers: tuple[int, ...], ops: tuple[str, ...]) -> int:
    """Value with ``*`` before ``+``/``-``: a sum of terms, each a product."""
    terms = [numbers[0]]
    for op, number in zip(ops, numbers[1:], strict=True):
        if op == "*":
            terms[-1] *= number
        else:
            terms.append(number if op == "+" else -number)
    return sum(terms)


def _deal(pool: list, n: int, rng: random.Random) -> list:
    """``n`` items from ``pool`` in shuffled passes: no repeats until all are used."""
    pool = list(pool)
    dealt: list = []
    while len(dealt) < n:
        rng.shuffle(pool)
        dealt += pool
    return dealt[:n]


def load_jsonl(
    path: str | Path, *, prompt_key: str = "prompt", answer_key: str = "answer"
) -> list[Problem]:
    """Problems from a UTF-8 JSONL file of string prompts and answers; a bad row raises
    ``ValueError`` naming its line and the fix."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f'no task file {str(path)!r}. Fix: pass a JSONL file of {{"{prompt_key}": '
            f'..., "{answer_key}": ...}} lines, or a built-in task such as arithmetic.'
        )
    problems = []
    with open(path, "rb") as f:  # bytes, so a decoding error can name its line
        for line_number, raw in enumerate(f, start=1):
            where = f"{path}, line {line_number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{where}: not UTF-8 text (byte {raw[e.start]:#04x} at column "
                    f"{e.start + 1}). Fix: save the file as UTF-8."
                ) from None
            if line.strip():
                row = _read_row(line, where, prompt_key, answer_key)
                answer = row[answer_key].strip()
                problems.append(Problem(row[prompt_key], answer, Path(path).name))
    if not problems:
        raise ValueError(f"{path}: no rows; add one JSON object a line.")
    return problems


def _read_row(line: str, where: str, prompt_key: str, answer_key: str) -> dict:
    """One JSONL line as a checked row, or a ValueError that says what to fix."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{where}: not valid JSON ({e.msg}); write one object a line, "
            f'like {{"{prompt_key}": "What is 2 + 3?", "{answer_key}": "5"}}.'
        ) from None
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {row!r:.60}.")
    for key in (prompt_key, answer_key):
        value = row.get(key)
        if value is None:
            raise ValueError(
                f"{where}: missing key {key!r} (keys present: {sorted(row)}); "
                "add it, or pass prompt_key=/answer_key= to name yours."
            )
        if not isinstance(value, str) or not value.strip():
            raise ValueError(
                f"{where}: {key!r} must be a non-empty string, got "
                f'{value!r:.60}; write numbers as strings, e.g. "42".'
            )
    if len(row[prompt_key]) > MAX_PROMPT_CHARS:
        raise ValueError(
            f"{where}: the prompt has {len(row[prompt_key]):,} characters, more than "
            f"{MAX_PROMPT_CHARS:,} (the models' context). Fix: shorten or drop it."
        )
    return row


def load_gsm8k(
    split: str = "test", *, path: str | Path | None = None, n: int | None = None
) -> list[Problem]:
    """The first ``n`` GSM8K problems of the hub's ``split`` ("train"/"test") or of a
    JSONL copy at ``path``: the question plus ``GSM8K_INSTRUCTION``, and the number
    after ``####`` without commas. Raises ``ConnectionError`` when the hub fails."""
    if path is None:
        import datasets  # here, not at the top: only the hub needs it

        try:
            rows = datasets.load_dataset("openai/gsm8k", "main", split=split)
        except Exception as e:
            raise ConnectionError(
                f"could not load openai/gsm8k ({split!r}) from the Hugging Face hub "
                f"({type(e).__name__}: {e}). Fix: pass path= to a local JSONL copy, "
                "or use the offline task 'arithmetic'."
            ) from e
        source = where = f"gsm8k/{split}"
        pairs = [(row["question"], row["answer"]) for row in rows]
    else:
        source, where = Path(path).name, str(path)
        rows = load_jsonl(path, prompt_key="question", answer_key="answer")
        pairs = [(row.prompt, row.answer) for row in rows]
    problems = []
    for row_number, (question, solution) in enumerate(pairs[:n], start=1):
        answer = solution.rsplit("####", 1)[-1].strip().replace(",", "")
        if "####" not in solution or not answer:
            rule = "'answer' must end with '#### <number>', as in GSM8K"
            raise ValueError(f"{where}, row {row_number}: {rule}.")
        prompt = f"{question.strip()}\n{GSM8K_INSTRUCTION}"
        problems.append(Problem(prompt, answer, source))
    return problems


def load_task(
    task: str, n: int, *, seed: int = 0, split: str = "train"
) -> list[Problem]:
    """``n`` problems of ``task`` (see the module docstring for the valid forms)."""
    _check_split(split)
    if task == "arithmetic":
        return arithmetic_problems(n, seed=seed, split=split)
    wide = dict(seed=seed, split=split, max_operand=50, ops=("+", "-"))  # ± on 1..50
    if task == "arithmetic-hard":
        return arithmetic_problems(n, num_steps=2, **wide)
    if task == "arithmetic-mix":
        easy = arithmetic_problems(n - n // 2, seed=seed, split=split)
        harder = arithmetic_problems(n // 2, **wide)
        return [p for pair in itertools.zip_longest(easy, harder) for p in pair if p]
    if task.endswith(".jsonl"):
        return _deal(load_jsonl(task), n, random.Random(seed))
    if task == "gsm8k":
        gsm8k_split = "test" if split == "heldout" else "train"
        return _deal(load_gsm8k(gsm8k_split), n, random.Random(seed))
    if task.startswith("reasoning_gym:"):
        try:
            import reasoning_gym
        except ImportError as e:
            raise ImportError(f"task {task!r} needs: pip install reasoning-gym") from e
        # No splits in reasoning-gym: a far-away seed gives a different sample.
        seed = seed if split == "train" else seed + 1_000_003
        dataset = reasoning_gym.create_dataset(task.split(":", 1)[1], size=n, seed=seed)
        return [Problem(row["question"], str(row["answer"]), task) for row in dataset]
    raise ValueError(
        f"unknown task {task!r}; use 'arithmetic', 'arithmetic-hard', 'arithmetic-mix',"
        " a path ending in '.jsonl', 'gsm8k' or 'reasoning_gym:<name>'."
    )
