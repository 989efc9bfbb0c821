"""Tests for sfpo_edu.tasks: the arithmetic generator, the loaders, load_task.

Run: ``pytest tests/test_tasks.py``. Everything runs offline: GSM8K is read from
the local fixture ``data/tasks/gsm8k_sample.jsonl`` (same schema, our own text).
"""

import ast
import json
import operator
import re
import sys
import types
from pathlib import Path

import pytest

from sfpo_edu import tasks
from sfpo_edu.tasks import (
    Problem,
    arithmetic_problems,
    load_gsm8k,
    load_jsonl,
    load_task,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "tasks"
PROMPT_RE = re.compile(r"What is (.+)\? Answer with just the number\.")
HARD = dict(max_operand=50, ops=("+", "-", "*"), num_steps=2)


def _expression(problem: Problem) -> str:
    match = PROMPT_RE.fullmatch(problem.prompt)
    assert match, problem.prompt
    return match.group(1)


def _value(expression: str) -> int:
    """Evaluate with Python's own parser (precedence included), no eval()."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.BinOp):
            return ops[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        assert isinstance(node, ast.Constant) and isinstance(node.value, int)
        return node.value

    return walk(ast.parse(expression, mode="eval").body)


def test_default_prompt_text() -> None:
    problem = arithmetic_problems(1)[0]
    a, b = map(int, _expression(problem).split(" + "))
    assert problem.prompt == f"What is {a} + {b}? Answer with just the number."
    assert problem.answer == str(a + b)


def test_same_seed_same_problems_other_seed_others() -> None:
    assert arithmetic_problems(50, seed=3) == arithmetic_problems(50, seed=3)
    assert arithmetic_problems(50, seed=3) != arithmetic_problems(50, seed=4)
    assert arithmetic_problems(50, seed=3, **HARD) == arithmetic_problems(
        50, seed=3, **HARD
    )


@pytest.mark.parametrize("knobs", [{}, HARD, dict(ops=("-", "*"), max_operand=9)])
def test_train_and_heldout_never_share_an_expression(knobs: dict) -> None:
    train, heldout = set(), set()
    for seed in range(5):
        train |= {p.prompt for p in arithmetic_problems(300, seed=seed, **knobs)}
        heldout |= {
            p.prompt
            for p in arithmetic_problems(300, seed=seed, split="heldout", **knobs)
        }
    assert train and heldout
    assert not train & heldout


def test_small_space_is_dealt_without_repeats_until_used_up() -> None:
    heldout = arithmetic_problems(64, split="heldout")
    assert len(set(heldout)) == 64
    everything = arithmetic_problems(1000, split="train")  # 400 sums, ~80% train
    assert 300 < len(set(everything)) < 400


@pytest.mark.parametrize(
    "knobs",
    [
        {},
        HARD,
        dict(min_operand=-5, max_operand=5, ops=("*",), num_steps=3),
        dict(min_operand=100, max_operand=999, ops=("+", "-"), num_steps=1),
    ],
)
def test_answers_are_correct_and_knobs_respected(knobs: dict) -> None:
    problems = arithmetic_problems(200, seed=1, **knobs)
    lo, hi = knobs.get("min_operand", 1), knobs.get("max_operand", 20)
    ops_seen = set()
    for problem in problems:
        expression = _expression(problem)
        assert problem.answer == str(_value(expression))
        tokens = expression.split(" ")
        assert len(tokens) == 2 * knobs.get("num_steps", 1) + 1
        assert all(lo <= int(t) <= hi for t in tokens[::2])
        ops_seen |= set(tokens[1::2])
    assert ops_seen == set(knobs.get("ops", ("+",)))


def test_precedence_multiplication_first() -> None:
    assert tasks._evaluate((2, 3, 4), ("+", "*")) == 14
    assert tasks._evaluate((2, 3, 4), ("-", "*")) == -10
    assert tasks._evaluate((2, 3, 4), ("*", "-")) == 2


@pytest.mark.parametrize(
    "knobs, message",
    [
        (dict(n=0), "n must be"),
        (dict(split="test"), "'test'.*train.*heldout"),
        (dict(min_operand=5, max_operand=1), "min_operand"),
        (dict(ops=("/",)), "ops must"),
        (dict(num_steps=0), "num_steps"),
        (dict(min_operand=1, max_operand=1), "split is empty"),
    ],
)
def test_bad_knobs_raise(knobs: dict, message: str) -> None:
    knobs = {"n": 4, **knobs}
    if "split" not in knobs and knobs.get("max_operand") == 1:
        # "1 + 1" is the only expression; ask for the split it is not in.
        only = tasks._split_of("1 + 1")
        knobs["split"] = "train" if only == "heldout" else "heldout"
    with pytest.raises(ValueError, match=message):
        arithmetic_problems(**knobs)


def test_heldout_fixture_matches_the_generator() -> None:
    rows = load_jsonl(DATA / "arithmetic_heldout.jsonl")
    expected = arithmetic_problems(64, seed=0, split="heldout")
    assert [(r.prompt, r.answer) for r in rows] == [
        (p.prompt, p.answer) for p in expected
    ]


def test_load_jsonl_reads_rows_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_text('{"q": "What is 1 + 1?", "a": " 2 "}\n\n{"q": "x?", "a": "y"}\n')
    problems = load_jsonl(path, prompt_key="q", answer_key="a")
    assert problems == [
        Problem("What is 1 + 1?", "2", "ok.jsonl"),
        Problem("x?", "y", "ok.jsonl"),
    ]


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"prompt": "hi", "answer": ', "not valid JSON"),
        ('["prompt", "answer"]', "expected a JSON object"),
        ('{"prompt": "hi"}', "missing key 'answer'"),
        ('{"prompt": "hi", "answer": 42}', "'answer' must be a non-empty string"),
        ('{"prompt": "  ", "answer": "4"}', "'prompt' must be a non-empty string"),
        # issue 19: a 1 MB prompt was accepted, then training hung
        ('{"prompt": "' + "7 " * 500_000 + '", "answer": "4"}', "1,000,000 char"),
    ],
)
def test_load_jsonl_errors_name_file_and_line(
    tmp_path: Path, bad_line: str, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "fine", "answer": "1"}\n\n' + bad_line + "\n")
    with pytest.raises(ValueError, match=message) as info:
        load_jsonl(path)
    assert f"{path}, line 3" in str(info.value)


def test_load_jsonl_non_utf8_names_file_line_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        b'{"prompt": "ok", "answer": "1"}\n{"prompt": "caf\xe9", "answer": "2"}\n'
    )
    with pytest.raises(ValueError) as info:
        load_jsonl(path)
    message = str(info.value)
    assert f"{path}, line 2: not UTF-8" in message and "0xe9" in message
    assert "Fix: save the file as UTF-8" in message


@pytest.mark.parametrize("name", ["missing.jsonl", "a_folder.jsonl"])
def test_load_jsonl_of_no_file_says_what_a_task_file_is(tmp_path: Path, name) -> None:
    (tmp_path / "a_folder.jsonl").mkdir()
    with pytest.raises(FileNotFoundError, match=r'no task file .* \{"prompt": \.\.\.'):
        load_jsonl(tmp_path / name)


def test_load_jsonl_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(ValueError, match="no rows"):
        load_jsonl(path)


def test_load_gsm8k_from_local_fixture() -> None:
    problems = load_gsm8k(path=DATA / "gsm8k_sample.jsonl")
    rows = [json.loads(line) for line in (DATA / "gsm8k_sample.jsonl").open()]
    assert len(problems) == len(rows) == 8
    for problem, row in zip(problems, rows, strict=True):
        assert problem.prompt.startswith(row["question"])
        assert problem.prompt.endswith(tasks.GSM8K_INSTRUCTION)
        assert row["answer"].endswith("#### " + problem.answer) or "," in row["answer"]
        assert re.fullmatch(r"-?\d+", problem.answer)
    assert problems[3].answer == "2400"  # "#### 2,400": commas removed
    assert len(load_gsm8k(path=DATA / "gsm8k_sample.jsonl", n=3)) == 3


def test_load_gsm8k_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "gsm.jsonl"
    path.write_text(
        '{"question": "q", "answer": "a\\n#### 3"}\n{"question": "q", "answer": "7"}\n'
    )
    with pytest.raises(ValueError, match=r"row 2: 'answer' must end with '#### "):
        load_gsm8k(path=path)
    path.write_text('{"answer": "#### 3"}\n')  # a local copy is read by load_jsonl
    with pytest.raises(ValueError, match="line 1: missing key 'question'"):
        load_gsm8k(path=path)


def test_load_gsm8k_offline_hub_error_says_what_to_do(monkeypatch) -> None:
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConnectionError, match="path=.*'arithmetic'"):
        load_gsm8k("test")


def test_load_task_dispatch(monkeypatch) -> None:
    assert load_task("arithmetic", 8, seed=2) == arithmetic_problems(8, seed=2)
    hard = load_task("arithmetic-hard", 8, split="heldout")
    assert all(len(_expression(p).split(" ")) == 5 for p in hard)
    mix = load_task("arithmetic-mix", 9, seed=3, split="heldout")
    assert mix[::2] == arithmetic_problems(5, seed=3, split="heldout")
    assert mix[1::2] == arithmetic_problems(
        4, seed=3, split="heldout", max_operand=50, ops=("+", "-")
    )
    assert not set(mix) & set(load_task("arithmetic-mix", 400, seed=3))
    from_file = load_task(str(DATA / "arithmetic_heldout.jsonl"), 100, seed=1)
    assert len(from_file) == 100 and len(set(from_file)) == 64

    calls = []

    def fake_gsm8k(split: str = "test", **kwargs) -> list[Problem]:
        calls.append(split)
        return [Problem("q", "1", "gsm8k")]

    monkeypatch.setattr(tasks, "load_gsm8k", fake_gsm8k)
    assert load_task("gsm8k", 3, split="heldout") == [Problem("q", "1", "gsm8k")] * 3
    load_task("gsm8k", 1)
    assert calls == ["test", "train"]


def test_load_task_unknown_task_lists_valid_forms() -> None:
    with pytest.raises(ValueError, match="'nope'.*arithmetic.*jsonl.*gsm8k"):
        load_task("nope", 4)
    with pytest.raises(ValueError, match="split"):
        load_task("arithmetic", 4, split="validation")


def test_reasoning_gym_adapter() -> None:
    pytest.importorskip("reasoning_gym")
    problems = load_task("reasoning_gym:chain_sum", 5, seed=0)
    assert len(problems) == 5
    assert problems == load_task("reasoning_gym:chain_sum", 5, seed=0)
    for problem in problems:
        assert problem.source == "reasoning_gym:chain_sum"
        assert re.fullmatch(r"-?\d+", problem.answer)


def test_reasoning_gym_adapter_with_a_stand_in(monkeypatch) -> None:
    calls = []

    def create_dataset(name: str, size: int, seed: int) -> list[dict]:
        calls.append((name, size, seed))
        return [{"question": f"q{i}", "answer": i} for i in range(size)]

    stand_in = types.SimpleNamespace(create_dataset=create_dataset)
    monkeypatch.setitem(sys.modules, "reasoning_gym", stand_in)
    task = "reasoning_gym:chain_sum"
    assert load_task(task, 2, seed=5, split="heldout") == [
        Problem("q0", "0", task),
        Problem("q1", "1", task),
    ]
    load_task(task, 1, seed=5)
    assert calls == [("chain_sum", 2, 5 + 1_000_003), ("chain_sum", 1, 5)]
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # not installed
    with pytest.raises(ImportError, match="pip install reasoning-gym"):
        load_task(task, 1)
