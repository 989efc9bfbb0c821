"""The notebook exercises: every check passes its solution, fails wrong answers kindly.

A check must (1) pass the library's reference and the solution in
notebooks/solutions/solutions.py, (2) fail, without raising, an unfinished skeleton, a
crashing function and every common mistake in its own table, (3) name each of those
mistakes with its hint, beside the failing input, the expected value and what came
back, and (4) print its feedback and return None, so a notebook cell shows no stray
True / False.
"""

import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest
import torch

from sfpo_edu import exercises
from sfpo_edu.exercises import EXERCISES
from sfpo_edu.exercises.grader import Exercise, _error_hint, show
from sfpo_edu.exercises.sfpo_step import quadratic
from sfpo_edu.toy import ToyBandit

ROOT = Path(__file__).resolve().parents[1]
ALL_CHECKS = [name for names in EXERCISES.values() for name in names]
CHECKS: dict[str, Exercise] = {name: getattr(exercises, name) for name in ALL_CHECKS}
MISTAKES = [
    (name, wrong, hint) for name in ALL_CHECKS for wrong, hint in CHECKS[name].mistakes
]


def load_solutions():
    path = ROOT / "notebooks" / "solutions" / "solutions.py"
    spec = importlib.util.spec_from_file_location("exercise_solutions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


S = load_solutions()
SOLUTIONS = S.SOLUTIONS


def test_every_notebook_check_exists_and_has_a_solution():
    assert set(SOLUTIONS) == set(ALL_CHECKS)
    assert len(ALL_CHECKS) == len(set(ALL_CHECKS))
    for name in ALL_CHECKS:
        assert isinstance(CHECKS[name], Exercise)
        assert CHECKS[name].__doc__ and "Reference:" in CHECKS[name].__doc__
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("0*.ipynb")}
    if notebooks:  # the notebooks exist: each exercise notebook is one of them
        assert set(EXERCISES) <= notebooks
    assert all(2 <= len(v) <= 4 for v in EXERCISES.values())


@pytest.mark.parametrize("name", ALL_CHECKS)
def test_the_reference_and_the_solution_pass(name, capsys):
    check = CHECKS[name]
    for fn in (check.reference, SOLUTIONS[name]):
        assert check.grade(fn) is True
        out = capsys.readouterr().out
        assert out.startswith("✓") and "✗" not in out and "note:" not in out


@pytest.mark.parametrize("name", ALL_CHECKS)
def test_a_check_prints_and_returns_none(name, capsys):
    # a notebook cell ends with the call: None shows nothing under the feedback
    assert CHECKS[name](SOLUTIONS[name]) is None
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("name", ALL_CHECKS)
def test_an_unfinished_skeleton_is_reported_not_raised(name, capsys):
    def skeleton(*args, **kwargs):
        raise NotImplementedError("your code here")

    assert CHECKS[name].grade(skeleton) is False
    out = capsys.readouterr().out
    assert "not written yet" in out and "NotImplementedError" in out


@pytest.mark.parametrize("name", ALL_CHECKS)
def test_a_crash_is_reported_with_the_input(name, capsys):
    def crashes(*args, **kwargs):
        return {}["missing"]

    assert CHECKS[name].grade(crashes) is False
    out = capsys.readouterr().out
    assert "raised an error" in out and "KeyError" in out and "input:" in out
    assert "line" in out  # points at the student's line


@pytest.mark.parametrize(
    ("name", "wrong", "hint"),
    MISTAKES,
    ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(MISTAKES)],
)
def test_each_common_mistake_is_diagnosed_as_itself(name, wrong, hint, capsys):
    assert CHECKS[name].grade(wrong) is False
    out = capsys.readouterr().out
    assert out.startswith("✗"), out
    assert f"  hint:      {hint}\n" in out, f"expected the hint {hint!r} in:\n{out}"
    assert "input:" in out and ("expected:" in out or "error:" in out)


def _argmax_mask(ids, eos_ids):
    """The classic bug: argmax of a row without EOS is 0, like an EOS at position 0."""
    first = torch.isin(ids, torch.tensor(eos_ids)).long().argmax(1)
    truncated = first == 0
    last = torch.where(truncated, ids.shape[1], first)
    return (torch.arange(ids.shape[1]) <= last.unsqueeze(1)).long(), truncated


def _trailing_dot(text):
    """Reads the full stop of "The answer is 25." as a decimal point."""
    numbers = re.findall(r"-?[\d,]+\.?\d*", text)
    return numbers[-1].replace(",", "") if numbers else None


def _grpo_multi(wrong):
    """check_rollouts_per_step's solution, but ``wrong(n, G, K)`` for grpo_multi."""

    def rollouts(algo, n, G, K):
        if algo == "grpo_multi":
            return wrong(n, G, K)
        return S.rollouts_per_step(algo, n, G, K)

    return rollouts


# wrong answers a review found passing once the cases that catch them were dropped
REVIEWED_WRONG_ANSWERS = [
    (
        "check_effective_alpha",
        lambda a, al, s: 0.0 if s else S.effective_alpha(a, al, s),
    ),
    ("check_rollouts_per_step", _grpo_multi(lambda n, G, K: (K + 1) * n * G)),
    ("check_rollouts_per_step", _grpo_multi(lambda n, G, K: None)),
    ("check_stop_step", lambda h, rule, w, t: S.stop_step(h, "abs", w, t)),
    (
        "check_lookahead_sgd_step",
        lambda t0, g, a, lr: S.lookahead_sgd_step(t0, g, a, 0.5),
    ),
    (
        "check_toy_policy_gradient",
        lambda t, f, a, adv: S.toy_policy_gradient(t, ToyBandit().features, a, adv),
    ),
    ("check_completion_mask", _argmax_mask),
    ("check_last_number", _trailing_dot),
    ("check_moving_average", lambda y, w: S.moving_average(y, w) if w != 2 else y),
    (
        "check_optimizer_steps",
        lambda a, K, M, s: M if s else S.optimizer_steps(a, K, M, s),
    ),
]


@pytest.mark.parametrize(("name", "wrong"), REVIEWED_WRONG_ANSWERS)
def test_wrong_answers_found_in_review_fail(name, wrong, capsys):
    assert CHECKS[name].grade(wrong) is False
    assert capsys.readouterr().out.startswith("✗")


def test_lists_are_summarised():
    assert show([quadratic(0)] * 3).startswith("[3 functions, each grad(theta) -> ")
    falling = [2.0 - 0.01 * i for i in range(40)]
    assert show(falling) == "[2. , 1.99, 1.98, ..., 1.63, 1.62, 1.61] (40 values)"


def test_every_check_has_common_mistakes():
    assert all(CHECKS[name].mistakes for name in ALL_CHECKS)


def test_something_that_is_not_a_function(capsys):
    assert exercises.check_kl_k3.grade("kl") is False
    assert "expected a function" in capsys.readouterr().out


def test_a_changed_input_is_reported(capsys):
    def advantages_in_place(rewards, group_size):
        rewards -= rewards.mean()
        return rewards

    assert exercises.check_group_advantages.grade(advantages_in_place) is False
    assert "changed its input in place" in capsys.readouterr().out


def test_an_error_without_a_known_mistake_gets_a_general_hint(capsys):
    def interpolate_without_no_grad(ps, theta_0, alpha):
        for p, t in zip(ps, theta_0, strict=True):
            p.copy_(torch.lerp(p.float(), t, 1 - alpha))

    assert exercises.check_interpolate_.grade(interpolate_without_no_grad) is False
    assert "torch.no_grad" in capsys.readouterr().out


def test_a_list_changed_in_place_is_reported(capsys):
    def zscore_appending(entropies, window):
        entropies.append(0.0)

    assert exercises.check_entropy_zscore.grade(zscore_appending) is False
    out = capsys.readouterr().out
    assert "changed its input in place" in out and "(41 values)" in out


def test_a_stub_returning_none_gets_no_misleading_hint(capsys):
    assert exercises.check_entropy_zscore.grade(lambda entropies, window: None) is False
    assert "hint:" not in capsys.readouterr().out


def test_an_error_in_the_reference_is_a_library_bug_and_raises():
    def broken(*args):
        raise RuntimeError("library bug")

    check = dataclasses.replace(exercises.check_kl_k3, reference=broken)
    with pytest.raises(RuntimeError, match="library bug"):
        check.grade(SOLUTIONS["check_kl_k3"])


def test_a_general_hint_answers_only_its_errors():
    assert "shapes" in _error_hint("The size of tensor a (3) must match the size of b")
    assert "dtypes" in _error_hint("expected scalar type Float but found Double")
    assert _error_hint("batch size 3 is not a multiple of 2") is None


def test_an_unknown_wrong_answer_shows_the_difference_without_a_hint(capsys):
    assert exercises.check_kl_k3.grade(lambda p, ref: 2 * losses_kl(p, ref)) is False
    out = capsys.readouterr().out
    assert "problem:   Tensor-likes are not close" in out and "hint:" not in out


def losses_kl(p, ref):
    r = ref - p
    return torch.exp(r) - r - 1


def test_feedback_shows_shapes_and_dtypes(capsys):
    population_std, _ = exercises.check_group_advantages.mistakes[0]
    exercises.check_group_advantages(population_std)
    out = capsys.readouterr().out
    assert "shape (8,)" in out and "torch.float32" in out
    exercises.check_clipped_surrogate(lambda lp, old, adv, eps: (lp - old).sum(1))
    out = capsys.readouterr().out
    assert "torch.Size([2]) != torch.Size([2, 3])" in out and "unsqueeze" in out


def test_the_reposition_remark_on_an_inexact_alpha_1(capsys):
    assert exercises.check_reposition.grade(lambda t0, tk, a: t0 + a * (tk - t0))
    assert "note:" in capsys.readouterr().out


def test_sfpo_points_agrees_with_sfpo_update():
    # the reference of the drawing exercise ends where the library's update does
    theta_0, grad = torch.tensor([1.0, -1.0]), quadratic(3)
    _, _, theta_next = exercises.check_sfpo_points.reference(theta_0, grad, 0.2, 4, 0.6)
    expected = exercises.check_sfpo_sgd_step.reference(theta_0, grad, 4, 0.6, 0.2)
    torch.testing.assert_close(theta_next, expected, rtol=1e-6, atol=1e-6)


def test_checks_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    exercises.check_sfpo_sgd_step(SOLUTIONS["check_sfpo_sgd_step"])
    exercises.check_rollouts_per_step(SOLUTIONS["check_rollouts_per_step"])
    assert torch.equal(torch.rand(3), expected)
