"""The notebook exercises: every check passes its solution, fails wrong answers kindly.

A check must (1) return True for the solution in notebooks/solutions/solutions.py,
(2) return False, without raising, for an unfinished skeleton, a crashing function or
a wrong one, and (3) say what went wrong: the failing input, the expected value and a
hint that names the mistake.
"""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from sfpo_edu import exercises
from sfpo_edu.exercises import EXERCISES

ROOT = Path(__file__).resolve().parents[1]
ALL_CHECKS = [name for names in EXERCISES.values() for name in names]


def load_solutions():
    path = ROOT / "notebooks" / "solutions" / "solutions.py"
    spec = importlib.util.spec_from_file_location("exercise_solutions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SOLUTIONS = load_solutions().SOLUTIONS


def test_every_notebook_check_exists_and_has_a_solution():
    assert set(SOLUTIONS) == set(ALL_CHECKS)
    assert len(ALL_CHECKS) == len(set(ALL_CHECKS))
    for name in ALL_CHECKS:
        assert callable(getattr(exercises, name)), name
        assert name in exercises.__all__
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("0*.ipynb")}
    if notebooks:  # the notebooks exist: each exercise notebook is one of them
        assert set(EXERCISES) <= notebooks
    assert all(2 <= len(v) <= 4 for v in EXERCISES.values())


@pytest.mark.parametrize("name", ALL_CHECKS)
def test_the_solution_passes(name, capsys):
    assert getattr(exercises, name)(SOLUTIONS[name]) is True
    out = capsys.readouterr().out
    assert out.startswith("✓") and "✗" not in out


@pytest.mark.parametrize("name", ALL_CHECKS)
def test_an_unfinished_skeleton_is_reported_not_raised(name, capsys):
    def skeleton(*args, **kwargs):
        raise NotImplementedError("your code here")

    assert getattr(exercises, name)(skeleton) is False
    out = capsys.readouterr().out
    assert "not written yet" in out and "NotImplementedError" in out


@pytest.mark.parametrize("name", ALL_CHECKS)
def test_a_crash_is_reported_with_the_input(name, capsys):
    def crashes(*args, **kwargs):
        return {}["missing"]

    assert getattr(exercises, name)(crashes) is False
    out = capsys.readouterr().out
    assert "raised an error" in out and "KeyError" in out and "input:" in out
    assert "line" in out  # points at the student's line


def test_something_that_is_not_a_function():
    assert exercises.check_kl_k3("kl") is False


# --- wrong answers: (check, wrong implementation, words the feedback must contain) ----
def grouped(r, g):
    return r.view(-1, g)


def adv_population_std(r, g):
    x = grouped(r, g)
    return ((x - x.mean(1, keepdim=True)) / (x.std(1, unbiased=False, keepdim=True)
                                             + 1e-6)).view(-1)  # fmt: skip


def adv_no_eps(r, g):
    x = grouped(r, g)
    return ((x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)).view(-1)


def adv_whole_batch(r, g):
    return (r - r.mean()) / (r.std() + 1e-6)


def adv_in_place(r, g):
    r -= r.mean()
    return r


def surrogate_max(lp, old, adv, eps):
    ratio, a = torch.exp(lp - old), adv.unsqueeze(1)
    return -torch.max(ratio * a, ratio.clamp(1 - eps, 1 + eps) * a)


def surrogate_sign(lp, old, adv, eps):
    ratio, a = torch.exp(lp - old), adv.unsqueeze(1)
    return torch.min(ratio * a, ratio.clamp(1 - eps, 1 + eps) * a)


def surrogate_no_unsqueeze(lp, old, adv, eps):
    ratio = torch.exp(lp - old)
    return -torch.min(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)


def gradient_without_baseline(theta, features, actions, adv):
    return -(adv.unsqueeze(1) * features[actions]).mean(0)


def reposition_backwards(t0, tk, alpha):
    return tk + alpha * (t0 - tk)


def sfpo_without_reposition(t0, grad, K, alpha, lr):
    theta = t0.clone()
    for _ in range(K):
        theta = theta - lr * grad(theta)
    return theta - lr * grad(theta)


def sfpo_without_slow_step(t0, grad, K, alpha, lr):
    theta = t0.clone()
    for _ in range(K):
        theta = theta - lr * grad(theta)
    return t0 + alpha * (theta - t0)


def lookahead_with_extra_step(t0, grads, alpha, lr):
    theta = t0.clone()
    for g in grads:
        theta = theta - lr * g(theta)
    back = t0 + alpha * (theta - t0)
    return back - lr * grads[-1](back)


def logps_temperature_after(logits, ids, temperature):
    logp = torch.log_softmax(logits, -1) / temperature
    return logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def logps_unstable(logits, ids, temperature):
    p = torch.exp(logits / temperature)
    p = p / p.sum(-1, keepdim=True)
    return torch.log(p).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def mask_without_eos(ids, eos):
    is_eos = torch.isin(ids, torch.tensor(eos))
    return (is_eos.long().cumsum(1) == 0).long(), ~is_eos.any(1)


def mask_truncated_inverted(ids, eos):
    is_eos = torch.isin(ids, torch.tensor(eos)).long()
    return ((is_eos.cumsum(1) - is_eos) == 0).long(), is_eos.bool().any(1)


def first_number(text):
    found = re.findall(r"-?\d+", text)
    return found[0] if found else None


def last_number_no_commas(text):
    found = re.findall(r"-?\d+(?:\.\d+)?", text)
    return found[-1] if found else None


def aggregate_ignores_mask(x, mask, mode):
    return x.mean()


def aggregate_always_token_mean(x, mask, mode):
    return (x * mask).sum() / mask.sum()


def kl_swapped(p, ref):
    r = p - ref
    return torch.exp(r) - r - 1


def kl_k1(p, ref):
    return p - ref


def interpolate_without_no_grad(ps, theta_0, alpha):
    for p, t in zip(ps, theta_0, strict=True):
        p.copy_(torch.lerp(p.float(), t, 1 - alpha))


def interpolate_not_in_place(ps, theta_0, alpha):
    return [torch.lerp(p.float(), t, 1 - alpha) for p, t in zip(ps, theta_0, strict=True)]  # fmt: skip


def interpolate_literal(ps, theta_0, alpha):
    with torch.no_grad():
        for p, t in zip(ps, theta_0, strict=True):
            p.copy_(t + alpha * (p.float() - t))


def centred_average(y, w):
    return np.convolve(y, np.ones(w) / w, mode="same")


def valid_average(y, w):
    return np.convolve(y, np.ones(w) / w, mode="valid")


def steps_ignoring_minibatches(algo, K, M, stopped):
    return 1 if algo == "grpo" else K + 1


def steps_ignoring_stop(algo, K, M, stopped):
    return M if algo == "grpo" else (K + 1) * M


def z_sample_std(h, w):
    return None if len(h) < w else (h[-1] - np.mean(h[-w:])) / (np.std(h[-w:], ddof=1) + 1e-9)  # fmt: skip


def z_always(h, w):
    return (h[-1] - np.mean(h[-w:])) / (np.std(h[-w:]) + 1e-9)


def stop_one_step_early(h, rule, w, tau):
    for s in range(w - 1, len(h)):
        recent = np.asarray(h[s - w + 1 : s + 1])
        z = (recent[-1] - recent.mean()) / (recent.std() + 1e-9)
        if z >= tau or (rule == "abs" and abs(z) >= tau):
            return s
    return None


def drift_slow_from_theta_k(t0, tk, tn, alpha):
    fast, slow = tk - t0, tn - tk
    return {
        "sfpo/drift_norm": fast.norm().item(),
        "sfpo/reposition_norm": alpha * fast.norm().item(),
        "sfpo/slow_step_norm": slow.norm().item(),
        "sfpo/cos_fast_slow": (fast @ slow / (fast.norm() * slow.norm())).item(),
    }


def expected_reward_overflows(theta, features, rewards):
    e = torch.exp(features @ theta)
    return (e / e.sum()) @ rewards


def expected_reward_of_logits(theta, features, rewards):
    return (features @ theta) @ rewards


WRONG = [
    ("check_group_advantages", adv_population_std, ["unbiased", "expected:", "got:"]),
    ("check_group_advantages", adv_no_eps, ["NaN", "1e-6"]),
    ("check_group_advantages", adv_whole_batch, ["own group"]),
    ("check_group_advantages", adv_in_place, ["changed its input in place"]),
    ("check_clipped_surrogate", surrogate_max, ["torch.min"]),
    ("check_clipped_surrogate", surrogate_sign, ["sign is flipped"]),
    ("check_clipped_surrogate", surrogate_no_unsqueeze, ["raised an error", "shape"]),
    ("check_toy_policy_gradient", gradient_without_baseline, ["MINUS the policy's"]),
    ("check_reposition", reposition_backwards, ["θ₀ + α(θ_K − θ₀)"]),
    ("check_sfpo_sgd_step", sfpo_without_reposition, ["skipped the reposition"]),
    ("check_sfpo_sgd_step", sfpo_without_slow_step, ["stopped at θ̃"]),
    ("check_lookahead_sgd_step", lookahead_with_extra_step, ["NO extra step"]),
    ("check_per_token_logps", logps_temperature_after, ["temperature"]),
    ("check_per_token_logps", logps_unstable, ["log_softmax"]),
    ("check_completion_mask", mask_without_eos, ["EOS token itself"]),
    ("check_completion_mask", mask_truncated_inverted, ["WITHOUT an EOS"]),
    ("check_last_number", first_number, ["LAST number"]),
    ("check_last_number", last_number_no_commas, ["thousands"]),
    ("check_aggregate", aggregate_ignores_mask, ["padding"]),
    ("check_aggregate", aggregate_always_token_mean, ["that is token_mean"]),
    ("check_kl_k3", kl_swapped, ["reference minus current"]),
    ("check_kl_k3", kl_k1, ["k1"]),
    ("check_interpolate_", interpolate_without_no_grad, ["torch.no_grad"]),
    ("check_interpolate_", interpolate_not_in_place, ["in place"]),
    ("check_interpolate_", interpolate_literal, ["lerp", "bit for bit"]),
    ("check_moving_average", centred_average, ["TRAILING"]),
    ("check_moving_average", valid_average, ["one output per input"]),
    ("check_optimizer_steps", steps_ignoring_minibatches, ["PER MINI-BATCH"]),
    ("check_optimizer_steps", steps_ignoring_stop, ["skips the K fast passes"]),
    ("check_entropy_zscore", z_sample_std, ["POPULATION std"]),
    ("check_entropy_zscore", z_always, ["return None"]),
    ("check_stop_step", stop_one_step_early, ["BEFORE step s's update"]),
    ("check_drift_metrics", drift_slow_from_theta_k, ["not at θ_K"]),
    ("check_toy_expected_reward", expected_reward_overflows, ["NaN", "softmax"]),
    ("check_toy_expected_reward", expected_reward_of_logits, ["probabilities"]),
    ("check_rollouts_per_step", lambda a, n, g, k: n * g, ["fresh batch"]),
    ("check_rollouts_per_step", lambda a, n, g, k: (k + 1) * n * g, ["REUSE"]),
    ("check_effective_alpha", lambda a, alpha, s: alpha, ["α = 0 case"]),
    (
        "check_effective_alpha",
        lambda a, alpha, s: {"grpo": 0.0, "grpo_multi": 1.0}.get(a, alpha),
        ["stop rule fires"],
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    ("name", "wrong", "words"),
    WRONG,
    ids=[f"{n}-{getattr(w, '__name__', 'lambda')}" for n, w, _ in WRONG],
)
def test_a_wrong_answer_fails_with_a_helpful_message(name, wrong, words, capsys):
    assert getattr(exercises, name)(wrong) is False
    out = capsys.readouterr().out
    assert out.startswith("✗"), out
    for word in words:
        assert word in out, f"{word!r} not in:\n{out}"


def test_every_check_is_tried_with_a_wrong_answer():
    assert {name for name, _, _ in WRONG} == set(ALL_CHECKS)


def test_feedback_shows_shapes_and_dtypes(capsys):
    exercises.check_group_advantages(adv_population_std)
    out = capsys.readouterr().out
    assert "shape (8,)" in out and "torch.float32" in out
    exercises.check_clipped_surrogate(lambda lp, old, adv, eps: (lp - old).sum(1))
    out = capsys.readouterr().out
    assert "has shape (2,), expected (2, 3)" in out


def test_checks_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    exercises.check_sfpo_sgd_step(SOLUTIONS["check_sfpo_sgd_step"])
    exercises.check_rollouts_per_step(SOLUTIONS["check_rollouts_per_step"])
    assert torch.equal(torch.rand(3), expected)
