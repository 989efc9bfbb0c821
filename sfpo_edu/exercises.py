"""Exercises for the notebooks: write a function, check it against the library.

Every ``check_<name>(fn)`` calls your function on several cases (hand-made, random
and degenerate ones), compares each answer with the library's own implementation,
prints what it found and returns True (all cases pass) or False. For the first case
that fails it shows the input, what was expected and what came back (with shapes and
dtypes), plus a hint when the answer matches a common mistake. It never raises: an
exception from your function, including ``NotImplementedError`` from an unfinished
skeleton, is reported, so a notebook keeps running.

    from sfpo_edu.exercises import check_group_advantages

    def my_group_advantages(rewards, group_size):
        ...                                  # your code
    check_group_advantages(my_group_advantages)

``EXERCISES`` maps each notebook to its checks; the solutions are in
``notebooks/solutions/solutions.py``. The references are the library functions named
in each check's docstring, so a passing function agrees with the code that trains.
"""

from __future__ import annotations

import copy
import functools
import math
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sfpo_edu import losses, params, plotting
from sfpo_edu.rewards import extract_answer
from sfpo_edu.sfpo import StopRule, sfpo_update, update
from sfpo_edu.toy import ToyBandit, ToyBatch, lookahead_update, run_toy, toy_config

EXERCISES: dict[str, list[str]] = {
    "01_grpo_on_a_toy": [
        "check_group_advantages",
        "check_clipped_surrogate",
        "check_toy_policy_gradient",
    ],
    "02_sfpo_three_stages": [
        "check_reposition",
        "check_sfpo_sgd_step",
        "check_lookahead_sgd_step",
    ],
    "03_the_llm_policy": [
        "check_per_token_logps",
        "check_completion_mask",
        "check_last_number",
    ],
    "04_one_sfpo_step_on_an_llm": [
        "check_aggregate",
        "check_kl_k3",
        "check_interpolate_",
    ],
    "05_train_grpo_vs_sfpo": [
        "check_moving_average",
        "check_optimizer_steps",
    ],
    "06_reading_the_dashboards": [
        "check_entropy_zscore",
        "check_stop_step",
        "check_drift_metrics",
    ],
    "07_hyperparameter_lab": [
        "check_toy_expected_reward",
        "check_rollouts_per_step",
        "check_effective_alpha",
    ],
}


# --- the machinery ----------------------------------------------------------------------
@dataclass
class Case:
    """One call of the student's function and the answer the library gives."""

    label: str  # e.g. "hand-made: two groups of 4"
    args: tuple
    expected: Any
    kwargs: dict[str, Any] = field(default_factory=dict)
    shown: Any = None  # what to print as "expected", if not ``expected`` itself


Compare = Callable[[Any, Any], str | None]  # (got, expected) -> problem or None
Diagnose = Callable[[Case, Any], str | None]  # (case, got) -> hint or None


def _fmt(x: Any, limit: int = 400) -> str:
    """A short, readable rendering of a value with its shape and dtype."""
    if isinstance(x, Tensor):
        x = x.detach().cpu()
        values = np.array2string(
            x.float().numpy() if x.dtype.is_floating_point else x.numpy(),
            precision=4,
            suppress_small=True,
            threshold=24,
            edgeitems=3,
            separator=", ",
        )
        values = " ".join(values.split())
        text = f"{values}  (torch.Tensor, shape {tuple(x.shape)}, {x.dtype})"
    elif isinstance(x, np.ndarray):
        values = np.array2string(
            x, precision=4, suppress_small=True, threshold=24, separator=", "
        )
        values = " ".join(values.split())
        text = f"{values}  (numpy array, shape {x.shape}, {x.dtype})"
    elif isinstance(x, list) and x and all(callable(f) for f in x):
        text = f"[{len(x)} functions, each grad(theta) -> ∇L(theta) on its own batch]"
    elif isinstance(x, list) and x and all(isinstance(v, (int, float)) for v in x):
        shown = [f"{v:.4g}" for v in x]
        if len(shown) > 12:
            shown = shown[:8] + ["..."] + shown[-3:]
        text = f"[{', '.join(shown)}]  ({len(x)} values)"
    elif isinstance(x, (list, tuple)) and x and isinstance(x[0], Tensor):
        inner = ", ".join(_fmt(t, 160) for t in x)
        text = f"[{inner}]" if isinstance(x, list) else f"({inner})"
    elif isinstance(x, float):
        text = f"{x:.6g}"
    elif callable(x):
        text = getattr(x, "__doc__", None) or getattr(x, "__name__", "a function")
    else:
        text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clone(x: Any) -> Any:
    """A deep copy that keeps tensors' requires_grad and Parameters' identity type."""
    if isinstance(x, Tensor):
        return x.detach().clone().requires_grad_(x.requires_grad)
    if isinstance(x, list):
        return [_clone(v) for v in x]
    if isinstance(x, tuple):
        return tuple(_clone(v) for v in x)
    if isinstance(x, np.ndarray):
        return x.copy()
    if isinstance(x, (dict, SimpleNamespace)):
        return copy.deepcopy(x)
    return x


def _same(a: Any, b: Any) -> bool:
    """Bit-for-bit equality of (nested) inputs, to detect in-place changes."""
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and torch.equal(a.detach(), b.detach())
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return True


_LIBRARIES = (str(Path(__file__).resolve().parent), str(Path(torch.__file__).parent))


def _student_frame(err: BaseException) -> str:
    """'line N in your_fn: <code>' for the innermost frame outside sfpo_edu and torch."""
    frames = traceback.extract_tb(err.__traceback__)
    for frame in reversed(frames):
        if not str(Path(frame.filename).resolve()).startswith(_LIBRARIES):
            code = f": {frame.line}" if frame.line else ""
            return f" (line {frame.lineno} in {frame.name}{code})"
    return ""


def _run(
    title: str,
    fn: Any,
    cases: Sequence[Case],
    compare: Compare,
    *,
    diagnose: Diagnose | None = None,
    in_place: bool = False,
    result_of: Callable[[Case, Any], Any] | None = None,
) -> bool:
    """Call ``fn`` on every case; print friendly feedback; True if all pass.

    ``in_place``: the function is meant to change its first argument (then that
    argument, after the call, is the result unless ``result_of`` says otherwise).
    """
    if not callable(fn):
        print(f"✗ {title}: expected a function, got {_fmt(fn)}.")
        return False
    name = getattr(fn, "__name__", "your function")
    for i, case in enumerate(cases, start=1):
        args = tuple(_clone(a) for a in case.args)
        kwargs = {k: _clone(v) for k, v in case.kwargs.items()}
        where = f"case {i}/{len(cases)} ({case.label})"
        try:
            got = fn(*args, **kwargs)
        except NotImplementedError:
            print(
                f"✗ {title}: {name} is not written yet (it raised NotImplementedError)."
                f"\n  Replace `raise NotImplementedError(...)` with your code, run the "
                f"cell again."
            )
            return False
        except Exception as err:  # the student's bug: report it, never crash
            print(f"✗ {title}: {name} raised an error on {where}.")
            print(f"  input:     {_describe_args(case)}")
            print(f"  error:     {type(err).__name__}: {err}{_student_frame(err)}")
            hint = _error_hint(err)
            if hint:
                print(f"  hint:      {hint}")
            return False
        if result_of is not None:
            got = result_of(case, (args, got))
        elif in_place:
            got = args[0]
        else:
            changed = [
                j
                for j, (a, b) in enumerate(zip(args, case.args, strict=True))
                if not _same(a, b)
            ]
            if changed:
                print(f"✗ {title}: {name} changed its input in place on {where}.")
                print(f"  input:     {_describe_args(case)}")
                print(f"  argument {changed[0] + 1} became {_fmt(args[changed[0]])}")
                print(
                    "  hint:      build a new tensor (x = x - m) instead of modifying "
                    "the argument (x -= m, x.sub_(m)): the caller still needs it."
                )
                return False
        problem = compare(got, case.expected)
        if problem is not None:
            print(f"✗ {title}: {where} does not match the library.")
            print(f"  input:     {_describe_args(case)}")
            shown = case.expected if case.shown is None else case.shown
            print(f"  expected:  {_fmt(shown)}")
            print(f"  got:       {_fmt(got)}")
            print(f"  problem:   {problem}")
            hint = diagnose(case, got) if diagnose is not None else None
            if hint:
                print(f"  hint:      {hint}")
            return False
    kinds = sorted({c.label.split(":")[0] for c in cases})
    print(f"✓ {title}: all {len(cases)} cases pass ({', '.join(kinds)}).")
    return True


def _describe_args(case: Case) -> str:
    parts = [_fmt(a, 200) for a in case.args]
    parts += [f"{k}={_fmt(v, 120)}" for k, v in case.kwargs.items()]
    return "\n             ".join(parts)


def _error_hint(err: Exception) -> str | None:
    text = str(err)
    if "leaf Variable that requires grad" in text or "a view of a leaf" in text:
        return (
            "parameters that require grad can only be changed in place inside "
            "`with torch.no_grad():`."
        )
    if "must match the size" in text or "shape" in text or "size of tensor" in text:
        return "check the shapes: print(x.shape) for each tensor you combine."
    if "dtype" in text or "expected scalar type" in text:
        return "two tensors have different dtypes; convert one with .to(other.dtype)."
    return None


def _tensor_problem(
    got: Any,
    expected: Tensor,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    exact: bool = False,
    what: str = "result",
) -> str | None:
    """None if ``got`` is a tensor equal to ``expected``; else what differs."""
    if not isinstance(got, Tensor):
        kind = type(got).__name__
        fix = " (use torch operations, not Python floats or numpy)"
        return f"the {what} is a {kind}, expected a torch.Tensor{fix}"
    if tuple(got.shape) != tuple(expected.shape):
        return (
            f"the {what} has shape {tuple(got.shape)}, expected "
            f"{tuple(expected.shape)}. Check which dimension you reduced or "
            f"broadcast (unsqueeze / view)."
        )
    if expected.dtype.is_floating_point and not got.dtype.is_floating_point:
        return f"the {what} has dtype {got.dtype}; expected a floating-point tensor"
    g, e = got.detach().cpu().double(), expected.detach().cpu().double()
    bad_g, bad_e = ~torch.isfinite(g), ~torch.isfinite(e)
    if bad_g.any() and not torch.equal(bad_g, bad_e):
        where = tuple(bad_g.nonzero()[0].tolist())
        return (
            f"the {what} holds NaN or inf (first at index {where}): a division by "
            f"zero or a log of 0?"
        )
    ok = torch.equal(g, e) if exact else torch.allclose(g, e, atol=atol, rtol=rtol)
    if not ok:
        diff = (g - e).abs().nan_to_num(0.0)
        idx = tuple(int(i) for i in np.unravel_index(int(diff.argmax()), g.shape))
        at = f" at index {idx}" if idx else ""
        gv, ev = g[idx].item() if idx else g.item(), e[idx].item() if idx else e.item()
        how = "bit for bit" if exact else f"within atol={atol:g}, rtol={rtol:g}"
        return (
            f"values differ {how}: the largest difference is {diff.max().item():.3g}"
            f"{at} (got {gv:.6g}, expected {ev:.6g})"
        )
    return None


def _tensor_compare(**kw: Any) -> Compare:
    return lambda got, expected: _tensor_problem(got, expected, **kw)


def _matches(got: Any, candidate: Tensor, atol: float = 1e-5) -> bool:
    return (
        isinstance(got, Tensor)
        and tuple(got.shape) == tuple(candidate.shape)
        and torch.allclose(
            got.detach().double(), candidate.double(), atol=atol, rtol=1e-4
        )
    )


def _scalar_problem(got: Any, expected: float | None, atol: float = 1e-6) -> str | None:
    if expected is None:
        return None if got is None else f"expected None, got {_fmt(got)}"
    if got is None:
        return "got None, expected a number"
    if isinstance(got, Tensor):
        if got.numel() != 1:
            return f"got a tensor of shape {tuple(got.shape)}, expected one number"
        got = got.item()
    if not isinstance(got, (int, float, np.floating, np.integer)):
        return f"got a {type(got).__name__}, expected a number"
    if not math.isclose(float(got), float(expected), abs_tol=atol, rel_tol=1e-6):
        return f"got {float(got):.6g}, expected {float(expected):.6g}"
    return None


def _keeps_rng(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """Run a check without touching torch's global random state (some references,
    e.g. ``run_toy``, seed it), so a notebook's later cells sample as before."""

    @functools.wraps(check)
    def wrapped(fn: Any) -> bool:
        with torch.random.fork_rng(devices=[]):
            return check(fn)

    return wrapped


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- 01: GRPO on a toy --------------------------------------------------------------------
@_keeps_rng
def check_group_advantages(fn: Callable[[Tensor, int], Tensor]) -> bool:
    """``fn(rewards, group_size) -> advantages``: rewards (B,) with each group's G
    rewards consecutive; advantages (B,) = (R − group mean) / (group std + 1e-6), with
    the unbiased std. Reference: ``losses.group_advantages(rewards, G)[0]``."""
    inputs = [
        ("hand-made: two groups of 4", torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0]), 4),
        ("hand-made: reference rewards 1 / 0.1 / 0", torch.tensor([1.0, 0.1, 0.0]), 3),
        ("random: 3 groups of 8", torch.rand(24, generator=_gen(0)), 8),
        ("degenerate: a group whose rewards are all equal", torch.tensor([1.0] * 4), 4),
        ("degenerate: G = 2", torch.tensor([0.0, 1.0, 1.0, 1.0, 0.3, 0.3]), 2),
    ]
    cases = [
        Case(label, (r, g), losses.group_advantages(r, g)[0]) for label, r, g in inputs
    ]

    def diagnose(case: Case, got: Any) -> str | None:
        r, g = case.args
        grouped = r.view(-1, g)
        centred = grouped - grouped.mean(1, keepdim=True)
        if _matches(got, (centred / (grouped.std(1, unbiased=False, keepdim=True)
                                     + losses.EPS)).view(-1)):  # fmt: skip
            return (
                "you used the population std (unbiased=False). GRPO uses the "
                "unbiased one: tensor.std() (the default, divides by G − 1)."
            )
        if _matches(got, centred.view(-1)):
            return "you subtracted the mean but did not divide by the std (+ 1e-6)."
        if _matches(got, ((r - r.mean()) / (r.std() + losses.EPS))):
            return (
                "you normalised over the whole batch; each prompt's G rewards are "
                "normalised within their own group: rewards.view(-1, G)."
            )
        if isinstance(got, Tensor) and not torch.isfinite(got).all():
            return (
                "a group with equal rewards has std 0: add 1e-6 to the std, so its "
                "advantages are 0 instead of NaN."
            )
        return None

    return _run(
        "group advantages",
        fn,
        cases,
        _tensor_compare(atol=1e-4, rtol=1e-4),
        diagnose=diagnose,
    )


@_keeps_rng
def check_clipped_surrogate(
    fn: Callable[[Tensor, Tensor, Tensor, float], Tensor],
) -> bool:
    """``fn(per_token_logps, old_per_token_logps, advantages, clip_eps) -> loss``:
    logps (B, T), advantages (B,), the per-token loss (B, T) = −min(ρÂ, clip(ρ, 1 − ε,
    1 + ε)Â) with ρ = exp(logp − old). Reference: ``losses.clipped_surrogate``."""
    old = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.2, 0.2, 0.2]]))  # (2, 3)
    ratios = torch.tensor([[1.0, 1.5, 0.5], [1.0, 1.5, 0.5]])
    hand = [
        ("hand-made: ratio 1, 1.5, 0.5 with Â = +1 and −1", old + ratios.log(), old,
         torch.tensor([1.0, -1.0]), 0.2),
        ("hand-made: at θ₀ (ratio exactly 1) the loss is −Â", old.clone(), old,
         torch.tensor([2.0, -0.5]), 0.2),
    ]  # fmt: skip
    g = _gen(1)
    old_r = -torch.rand(4, 5, generator=g) * 3
    new_r = old_r + 0.4 * torch.randn(4, 5, generator=g)
    inputs = hand + [
        ("random: B = 4, T = 5, ε = 0.2", new_r, old_r, torch.randn(4, generator=g),
         0.2),
        ("random: ε = 0.1", new_r, old_r, torch.randn(4, generator=g), 0.1),
        ("degenerate: zero advantages", new_r, old_r, torch.zeros(4), 0.2),
    ]  # fmt: skip
    cases = [
        Case(label, (lp, o, a, e), losses.clipped_surrogate(lp, o, a, e)[0])
        for label, lp, o, a, e in inputs
    ]

    def diagnose(case: Case, got: Any) -> str | None:
        lp, o, a, e = case.args
        ratio = torch.exp(lp - o)
        adv = a.unsqueeze(1)
        clipped = ratio.clamp(1 - e, 1 + e) * adv
        if _matches(got, -case.expected):
            return "the sign is flipped: the loss is MINUS the clipped objective."
        if _matches(got, -torch.max(ratio * adv, clipped)):
            return "use torch.min of the two terms (the pessimistic one), not max."
        if _matches(got, -clipped):
            return (
                "take the minimum of the unclipped ρÂ and the clipped term; the "
                "clipped term alone is wrong when clipping would increase the loss."
            )
        if _matches(got, -(lp - o) * adv) or _matches(got, -(lp / o) * adv):
            return "the ratio is exp(per_token_logps − old_per_token_logps)."
        return None

    return _run(
        "clipped surrogate", fn, cases, _tensor_compare(atol=1e-5), diagnose=diagnose
    )


@_keeps_rng
def check_toy_policy_gradient(
    fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor],
) -> bool:
    """``fn(theta, features, actions, advantages) -> grad``: the gradient (2,) of the
    GRPO loss at θ = θ₀ of the toy bandit (logits = features @ θ, features (A, 2),
    actions (B,), advantages (B,)). At θ₀ the ratio is 1 and nothing is clipped, so
    ∇L(θ₀) = −mean_i Â_i ∇log π_θ(a_i), with ∇log π_θ(a) = φ_a − Σ_b π_θ(b) φ_b.
    Reference: autograd through ``ToyBandit.make_loss_fn`` (token mean, ε = 0.2)."""
    settings = [  # label, θ₀, arm angles, hand-made actions, number of groups, G
        ("hand-made: the default bandit, one group of 4", (0.5, -0.5), None,
         [3, 0, 2, 3], 1, 4),
        ("random: 2 groups of 8", (1.0, 0.3), None, None, 2, 8),
        ("random: 3 arms, θ far from 0", (2.0, -1.0), (0.0, 120.0, 240.0), None, 3,
         4),
        ("degenerate: all rewards equal (zero advantages)", (0.5, -0.5), None,
         [3, 3, 3, 3], 1, 4),
        ("hand-made: raw rewards as advantages (not zero-mean)", (0.5, -0.5), None,
         [3, 0, 2, 2], 1, 4),
    ]  # fmt: skip
    cases = []
    for i, (label, theta0, angles, actions, groups, G) in enumerate(settings):
        kw = {} if angles is None else {"arm_angles_deg": angles,
                                         "arm_rewards": (0.0, 1.0, 0.3)}  # fmt: skip
        bandit = ToyBandit(theta0, **kw)
        if actions is None:
            batch = bandit.sample_batch(groups, G, _gen(10 + i))
        else:
            batch = _toy_batch(bandit, torch.tensor(actions), G)
        if label.startswith("hand-made: raw rewards"):
            batch.advantages = batch.rewards.clone()
        loss, _ = bandit.make_loss_fn(toy_config())(batch)
        (grad,) = torch.autograd.grad(loss, bandit.theta)
        theta = bandit.theta.detach().clone()
        args = (theta, bandit.features.clone(), batch.actions, batch.advantages)
        cases.append(Case(label, args, grad))

    def diagnose(case: Case, got: Any) -> str | None:
        if _matches(got, -case.expected):
            return "the sign is flipped: this is the gradient of the LOSS, −mean(Â ∇log π)."
        theta, feats, actions, adv = case.args
        if _matches(got, -(adv.unsqueeze(1) * feats[actions]).mean(0)):
            return (
                "∇log π_θ(a) is φ_a MINUS the policy's mean feature Σ_b π_θ(b) φ_b "
                "(the softmax's normaliser depends on θ too). You only got away with "
                "it while the advantages summed to 0."
            )
        return None

    return _run(
        "toy policy gradient at θ₀",
        fn,
        cases,
        _tensor_compare(atol=1e-5),
        diagnose=diagnose,
    )


def _toy_batch(bandit: ToyBandit, actions: Tensor, group_size: int) -> ToyBatch:
    rewards = bandit.arm_rewards[actions]
    advantages, _ = losses.group_advantages(rewards, group_size)
    with torch.no_grad():
        old = bandit.log_probs()[actions].unsqueeze(1)
    return ToyBatch(actions, rewards, advantages, old, torch.ones(len(actions), 1),
                    group_size)  # fmt: skip


# --- 02: the three stages -------------------------------------------------------------
@_keeps_rng
def check_reposition(fn: Callable[[Tensor, Tensor, float], Tensor]) -> bool:
    """``fn(theta_0, theta_k, alpha) -> theta_tilde``: θ̃ = θ₀ + α(θ_K − θ₀) for flat
    vectors (D,). Reference: ``params.interpolate_`` (a ``torch.lerp``)."""
    g = _gen(2)
    inputs = [
        ("hand-made: 2-element vectors, α = 0.8", torch.tensor([0.0, 0.0]),
         torch.tensor([2.0, 1.0]), 0.8),
        ("hand-made: α = 0.5 is the midpoint", torch.tensor([1.0, -1.0]),
         torch.tensor([3.0, 1.0]), 0.5),
        ("random: D = 7", torch.randn(7, generator=g), torch.randn(7, generator=g),
         0.3),
        ("degenerate: α = 0 gives θ₀", torch.randn(5, generator=g),
         torch.randn(5, generator=g), 0.0),
        ("degenerate: α = 1 gives θ_K", torch.randn(5, generator=g),
         torch.randn(5, generator=g), 1.0),
    ]  # fmt: skip
    cases = []
    for label, t0, tk, alpha in inputs:
        expected = [tk.clone()]
        params.interpolate_(expected, [t0], alpha)
        cases.append(Case(label, (t0, tk, alpha), expected[0]))

    def diagnose(case: Case, got: Any) -> str | None:
        t0, tk, alpha = case.args
        if _matches(got, tk + alpha * (t0 - tk)):
            return "α weighs the step from θ₀ toward θ_K: θ₀ + α(θ_K − θ₀)."
        return None

    ok = _run(
        "reposition",
        fn,
        cases,
        _tensor_compare(atol=1e-5, rtol=1e-5),
        diagnose=diagnose,
    )
    if ok:  # a remark, not a failure: is α = 1 exact even when θ₀ ≫ θ_K?
        t0, tk = 1e3 * torch.randn(5, generator=g), 1e-3 * torch.randn(5, generator=g)
        try:
            exact = torch.equal(fn(t0.clone(), tk.clone(), 1.0), tk)
        except Exception:  # already passed above; never crash on the bonus remark
            exact = True
        if not exact:
            print(
                "  note: at α = 1 your θ̃ is θ_K only up to rounding (θ₀ + (θ_K − θ₀) "
                "can be off by one ulp). The library uses torch.lerp(θ_K, θ₀, 1 − α), "
                "exact at both ends, so α = 1 is bit for bit GRPO×(K+1)."
            )
    return ok


def _quadratic_problem(seed: int, dim: int = 3) -> tuple[nn.Parameter, Callable]:
    """A convex quadratic L(θ) = ½ θᵀAθ + bᵀθ: a loss_fn for sfpo_update."""
    g = _gen(seed)
    m = torch.randn(dim, dim, generator=g)
    A, b = m @ m.T / dim + torch.eye(dim), torch.randn(dim, generator=g)
    theta = nn.Parameter(torch.randn(dim, generator=g))

    def loss_fn(batch: Any) -> tuple[Tensor, dict[str, float]]:
        loss = 0.5 * theta @ A @ theta + b @ theta
        return loss, {"loss": loss.item(), "kl": 0.0, "clip_frac": 0.0}

    return theta, loss_fn


def _grad_fn(param: nn.Parameter, loss_fn: Callable, batch: Any) -> Callable:
    """grad(θ) = ∇L at the flat point θ, evaluated on a private copy of ``param``."""

    def grad(theta: Tensor) -> Tensor:
        """grad(theta) -> ∇L(theta), both shape (D,)."""
        with torch.no_grad():
            saved = param.detach().clone()
            param.copy_(torch.as_tensor(theta, dtype=param.dtype).detach())
        try:
            loss, _ = loss_fn(batch)
            (g,) = torch.autograd.grad(loss, param)
        finally:
            with torch.no_grad():
                param.copy_(saved)
        return g.detach().clone()

    return grad


def _sgd_problems() -> list[tuple[str, nn.Parameter, Callable, Any]]:
    """(label, θ₀ parameter, loss_fn, batch) of a few problems with cheap gradients."""
    out = []
    for label, seed in [("hand-made: the default toy bandit", 0),
                        ("random: the toy bandit, another batch", 5)]:  # fmt: skip
        bandit = ToyBandit()
        batch = bandit.sample_batch(1, 8, _gen(seed))
        out.append((label, bandit.theta, bandit.make_loss_fn(toy_config()), batch))
    theta, loss_fn = _quadratic_problem(3, dim=4)
    out.append(("random: a quadratic in 4 dimensions", theta, loss_fn, None))
    return out


def _sfpo_sgd_reference(
    param: nn.Parameter, loss_fn: Callable, batch: Any, K: int, alpha: float, lr: float
) -> Tensor:
    """θ_{s+1} from ``sfpo_update`` with plain SGD; ``param`` is put back after."""
    saved = param.detach().clone()
    optimizer = torch.optim.SGD([param], lr=lr)
    try:
        sfpo_update([param], optimizer, batch, loss_fn, num_fast_steps=K, alpha=alpha,
                    diagnostics=False)  # fmt: skip
        return param.detach().clone()
    finally:
        with torch.no_grad():
            param.copy_(saved)


@_keeps_rng
def check_sfpo_sgd_step(
    fn: Callable[[Tensor, Callable[[Tensor], Tensor], int, float, float], Tensor],
) -> bool:
    """``fn(theta_0, grad, num_fast_steps, alpha, lr) -> theta_next``: one SFPO update
    with plain SGD. ``grad(theta)`` returns ∇L(θ) on the fixed batch (D,). Stage I: K
    steps θ^{k+1} = θ^k − η∇L(θ^k); II: θ̃ = θ₀ + α(θ_K − θ₀); III: θ_{s+1} = θ̃ −
    η∇L(θ̃). Reference: ``sfpo.sfpo_update`` with ``torch.optim.SGD``."""
    problems = _sgd_problems()  # the toy on two batches, a quadratic
    settings = [  # (problem, K, α, η, label or None to use the problem's)
        (0, 3, 0.8, 0.5, None),
        (1, 1, 0.5, 0.3, None),
        (2, 3, 0.8, 0.2, None),
        (0, 3, 0.0, 0.5, "degenerate: α = 0 (one GRPO step)"),
        (2, 2, 1.0, 0.2, "degenerate: α = 1 (K+1 plain steps)"),
    ]
    cases = []
    for i, K, alpha, lr, name in settings:
        label, param, loss_fn, batch = problems[i]
        label = name or label
        expected = _sfpo_sgd_reference(param, loss_fn, batch, K, alpha, lr)
        grad = _grad_fn(param, loss_fn, batch)
        cases.append(
            Case(
                f"{label}, K = {K}, α = {alpha}, η = {lr}",
                (param.detach().clone(), grad, K, alpha, lr),
                expected,
            )  # fmt: skip
        )

    def diagnose(case: Case, got: Any) -> str | None:
        t0, grad, K, alpha, lr = case.args
        fast = [t0.clone()]
        for _ in range(K):
            fast.append(fast[-1] - lr * grad(fast[-1]))
        tk = fast[-1]
        tilde = t0 + alpha * (tk - t0)
        if _matches(got, tilde, atol=1e-6) and not _matches(got, case.expected):
            return "you stopped at θ̃: stage III takes one more step, θ̃ − η∇L(θ̃)."
        if _matches(got, tk - lr * grad(tk)) and alpha < 1:
            return "you skipped the reposition: the slow step starts from θ̃, not θ_K."
        if _matches(got, (t0 + (1 - alpha) * (tk - t0)) - lr * grad(t0 + (1 - alpha) * (tk - t0))):  # fmt: skip
            return "θ̃ = θ₀ + α(θ_K − θ₀): α is the share of the fast path you KEEP."
        if _matches(got, tilde - lr * grad(tk)):
            return "the slow step's gradient is evaluated AT θ̃, not at θ_K."
        return None

    return _run(
        "SFPO step with SGD",
        fn,
        cases,
        _tensor_compare(atol=1e-5, rtol=1e-4),
        diagnose=diagnose,
    )


@_keeps_rng
def check_lookahead_sgd_step(
    fn: Callable[[Tensor, list[Callable[[Tensor], Tensor]], float, float], Tensor],
) -> bool:
    """``fn(theta_0, grads, alpha, lr) -> theta_next``: one Lookahead update with SGD.
    ``grads[k](theta)`` is ∇L on the k-th FRESH batch; k = len(grads) inner steps
    θ^{k+1} = θ^k − η grads[k](θ^k), then θ₀ + α(θ_k − θ₀) and no extra step.
    Reference: ``toy.lookahead_update`` with ``torch.optim.SGD``."""
    cases = []
    for label, k, alpha, lr, seed in [
        ("hand-made: the default bandit, 3 fresh batches", 3, 0.8, 0.5, 0),
        ("random: 2 fresh batches, α = 0.5", 2, 0.5, 0.3, 7),
        ("degenerate: α = 1 (k plain steps on k batches)", 3, 1.0, 0.5, 3),
        ("degenerate: α = 0 (back to θ₀)", 2, 0.0, 0.5, 4),
    ]:
        bandit = ToyBandit()
        loss_fn = bandit.make_loss_fn(toy_config())
        gen, batches = _gen(seed), []

        def sample(bandit=bandit, gen=gen, batches=batches) -> ToyBatch:
            # a fresh batch at the CURRENT inner point; kept to give you its gradient
            batches.append(bandit.sample_batch(1, 8, gen))
            return batches[-1]

        theta_0 = bandit.theta.detach().clone()
        optimizer = torch.optim.SGD([bandit.theta], lr=lr)
        lookahead_update([bandit.theta], optimizer, sample, loss_fn,
                         num_inner_steps=k, alpha=alpha)  # fmt: skip
        expected = bandit.theta.detach().clone()
        with torch.no_grad():
            bandit.theta.copy_(theta_0)
        grads = [_grad_fn(bandit.theta, loss_fn, b) for b in batches]
        cases.append(Case(f"{label}, η = {lr}", (theta_0, grads, alpha, lr), expected))

    def diagnose(case: Case, got: Any) -> str | None:
        t0, grads, alpha, lr = case.args
        theta = t0.clone()
        for g in grads:
            theta = theta - lr * g(theta)
        back = t0 + alpha * (theta - t0)
        if _matches(got, back - lr * grads[-1](back)):
            return "Lookahead takes NO extra step after pulling back (SFPO does)."
        if _matches(got, t0 + alpha * (t0 - lr * grads[0](t0) - t0) * len(grads)):
            return "each inner step uses the gradient at the CURRENT inner point."
        return None

    return _run(
        "Lookahead step with SGD",
        fn,
        cases,
        _tensor_compare(atol=1e-5, rtol=1e-4),
        diagnose=diagnose,
    )


# --- 03: the LLM policy ---------------------------------------------------------------
class _FixedLogits(nn.Module):
    """A 'causal LM' that returns given logits (B, T + 1, V), whatever the input."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, input_ids: Tensor, logits_to_keep: int = 0, **_: Any) -> Any:
        logits = self.logits.clone()  # the library divides by T in place
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep
                               else logits)  # fmt: skip


def _library_logps(logits: Tensor, ids: Tensor, temperature: float) -> Tensor:
    """per_token_logps on logits[:, t] that predict ids[:, t] (B, T, V)."""
    from sfpo_edu.logprobs import per_token_logps  # imports transformers: only here

    B, T, V = logits.shape
    padded = torch.cat([logits, torch.zeros(B, 1, V)], dim=1)  # the last is unused
    batch = SimpleNamespace(
        prompt_ids=torch.zeros(B, 1, dtype=torch.long),
        prompt_mask=torch.ones(B, 1, dtype=torch.long),
        completion_ids=ids,
        completion_mask=torch.ones(B, T, dtype=torch.long),
    )
    with torch.no_grad():
        logps, _ = per_token_logps(_FixedLogits(padded), batch, temperature=temperature)
    return logps


@_keeps_rng
def check_per_token_logps(fn: Callable[[Tensor, Tensor, float], Tensor]) -> bool:
    """``fn(logits, completion_ids, temperature) -> per_token_logps``: logits (B, T, V)
    where logits[:, t] is the model's prediction for completion_ids[:, t] (B, T);
    returns log π(o_t) = log_softmax(logits / temperature)[o_t], (B, T). Reference:
    ``logprobs.per_token_logps`` on a model that returns these logits."""
    g = _gen(4)
    hand_logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])  # (1, 2, 3)
    inputs = [
        ("hand-made: B = 1, T = 2, V = 3, T° = 1", hand_logits,
         torch.tensor([[0, 2]]), 1.0),
        ("hand-made: the same at temperature 0.5", hand_logits,
         torch.tensor([[0, 2]]), 0.5),
        ("random: B = 3, T = 4, V = 11, T° = 0.7", 3 * torch.randn(3, 4, 11,
         generator=g), torch.randint(0, 11, (3, 4), generator=g), 0.7),
        ("degenerate: huge logits (needs a stable log-softmax)",
         torch.tensor([[[1000.0, 0.0, -1000.0]]]), torch.tensor([[1]]), 1.0),
    ]  # fmt: skip
    cases = [
        Case(label, (lg, ids, t), _library_logps(lg, ids, t))
        for label, lg, ids, t in inputs
    ]

    def diagnose(case: Case, got: Any) -> str | None:
        lg, ids, t = case.args
        pick = lambda x: x.gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # noqa: E731
        if _matches(got, pick(torch.log_softmax(lg, -1))) and t != 1.0:
            return "divide the logits by the temperature BEFORE the log-softmax."
        if _matches(got, pick(torch.log_softmax(lg, -1)) / t):
            return "divide the logits by the temperature, not the log-probabilities."
        if _matches(got, pick(torch.softmax(lg / t, -1))):
            return "these are probabilities; take the log (torch.log_softmax)."
        if isinstance(got, Tensor) and not torch.isfinite(got).all():
            return (
                "exp of a large logit overflows: use torch.log_softmax (or subtract "
                "logsumexp), which is stable."
            )
        return None

    return _run(
        "per-token log-probs",
        fn,
        cases,
        _tensor_compare(atol=1e-4, rtol=1e-4),
        diagnose=diagnose,
    )


@_keeps_rng
def check_completion_mask(
    fn: Callable[[Tensor, list[int]], tuple[Tensor, Tensor]],
) -> bool:
    """``fn(completion_ids, eos_ids) -> (completion_mask, truncated)``: ids (B, T);
    the mask (B, T) is 1 up to AND including the first EOS of each row, 0 after;
    ``truncated`` (B,) bool is True for rows with no EOS (they hit max_new_tokens).
    Reference: ``rollouts.mask_after_eos``."""
    g = _gen(6)
    inputs = [
        ("hand-made: EOS = 9 in the middle, at the end, nowhere",
         torch.tensor([[5, 9, 3, 3], [5, 6, 7, 9], [1, 2, 3, 4]]), [9]),
        ("hand-made: two EOS ids, the first one counts",
         torch.tensor([[4, 8, 9, 9], [9, 9, 1, 2]]), [8, 9]),
        ("random: B = 6, T = 7", torch.randint(0, 6, (6, 7), generator=g), [5]),
        ("degenerate: every row truncated", torch.ones(2, 3, dtype=torch.long), [0]),
    ]  # fmt: skip
    from sfpo_edu.rollouts import mask_after_eos  # imports transformers: only here

    cases = []
    for label, ids, eos in inputs:
        _, mask, truncated = mask_after_eos(ids, eos, pad_id=0)
        cases.append(Case(label, (ids, eos), (mask, truncated)))

    def compare(got: Any, expected: tuple[Tensor, Tensor]) -> str | None:
        if not (isinstance(got, tuple) and len(got) == 2):
            return f"return a pair (completion_mask, truncated), got {_fmt(got, 80)}"
        mask, truncated = got
        for what, g_, e in (("completion_mask", mask, expected[0]),
                            ("truncated", truncated, expected[1])):  # fmt: skip
            if not isinstance(g_, Tensor):
                return f"{what} is a {type(g_).__name__}, expected a torch.Tensor"
            if tuple(g_.shape) != tuple(e.shape):
                return f"{what} has shape {tuple(g_.shape)}, expected {tuple(e.shape)}"
            if not torch.equal(g_.long(), e.long()):
                return f"{what} differs: got {_fmt(g_.long())}"
        return None

    def diagnose(case: Case, got: Any) -> str | None:
        ids, eos = case.args
        if not isinstance(got, tuple) or len(got) != 2:
            return None
        mask, truncated = got
        expected_mask, expected_trunc = case.expected
        if isinstance(truncated, Tensor) and truncated.shape == expected_trunc.shape:
            if torch.equal(truncated.long(), 1 - expected_trunc.long()):
                return "truncated is True for rows WITHOUT an EOS."
        if isinstance(mask, Tensor) and mask.shape == expected_mask.shape:
            without_eos = expected_mask.long().clone()
            for row, length in enumerate(expected_mask.sum(1).tolist()):
                if not expected_trunc[row]:
                    without_eos[row, length - 1] = 0  # the first EOS's position
            if torch.equal(mask.long(), without_eos):
                return "the EOS token itself is part of the completion: keep it in."
            if (mask.long() > expected_mask.long()).any():
                return "everything after the FIRST EOS is padding: mask it out."
        return None

    return _run("completion mask", fn, cases, compare, diagnose=diagnose)


@_keeps_rng
def check_last_number(fn: Callable[[str], str | None]) -> bool:
    """``fn(text) -> str | None``: the last number in a completion, thousands commas
    removed ("1,234" → "1234"), a leading minus kept, None if there is none. Reference:
    ``rewards.extract_answer`` on texts without ``\\boxed{}`` or ``####``."""
    texts = [
        ("hand-made: the model writes the sum", "2 + 9 = 11"),
        ("hand-made: words around it", "The answer is 25."),
        ("hand-made: a negative answer", "3 - 10 = -7"),
        ("hand-made: a decimal", "Half of 7 is 3.5"),
        ("hand-made: thousands separator", "So the total is 1,234 apples."),
        ("degenerate: no number at all", "I'm here to help!"),
        ("degenerate: an empty completion", ""),
    ]
    cases = [Case(label, (t,), extract_answer(t)) for label, t in texts]

    def compare(got: Any, expected: str | None) -> str | None:
        if expected is None:
            return None if got is None else f"expected None (no number), got {got!r}"
        if not isinstance(got, str):
            return f"expected the string {expected!r}, got {_fmt(got)}"
        return None if got == expected else f"expected {expected!r}, got {got!r}"

    def diagnose(case: Case, got: Any) -> str | None:
        text = case.args[0]
        if got == "" and case.expected is None:
            return "return None, not an empty string, when there is no number."
        if got in ("234", "1,234"):
            return "remove thousands separators (1,234 is the number 1234)."
        if got == "7" and case.expected == "-7":
            return "keep a leading minus sign: -?\\d+."
        if got in ("3", "5") and case.expected == "3.5":
            return "allow a decimal part: \\d+(?:\\.\\d+)?."
        if isinstance(got, str) and got and case.expected:
            if got in text.split(case.expected)[0]:
                return "take the LAST number: small models write '2 + 9 = 11'."
        return None

    return _run("last number", fn, cases, compare, diagnose=diagnose)


# --- 04: one SFPO step on an LLM ----------------------------------------------------------
@_keeps_rng
def check_aggregate(fn: Callable[[Tensor, Tensor, str], Tensor]) -> bool:
    """``fn(per_token, completion_mask, loss_agg) -> scalar``: reduce a (B, T) loss to
    one number over the masked tokens. ``token_mean``: Σ x / Σ mask; ``seq_mean``:
    mean over rows of each row's masked mean; ``dr_grpo``: Σ x / (B·T). Reference:
    ``losses.aggregate``."""
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    g = _gen(8)
    rx = torch.randn(5, 6, generator=g)
    rmask = (torch.arange(6) < torch.tensor([6, 1, 3, 5, 2]).unsqueeze(1)).long()
    zmask = rmask.clone()
    zmask[1] = 0
    inputs = (
        [
            ("hand-made: lengths 4 and 2", x, mask, mode)
            for mode in ("token_mean", "seq_mean", "dr_grpo")
        ]
        + [
            (f"random: B = 5, T = 6, {mode}", rx, rmask, mode)
            for mode in ("token_mean", "seq_mean", "dr_grpo")
        ]
        + [("degenerate: an empty row (mask all 0) in seq_mean", rx, zmask, "seq_mean")]
    )
    cases = [
        Case(label, (v, m, mode), losses.aggregate(v, m, mode))
        for label, v, m, mode in inputs
    ]

    def diagnose(case: Case, got: Any) -> str | None:
        v, m, mode = case.args
        mf = m.float()
        if _matches(got, v.mean()):
            return "masked-out tokens (mask 0) are padding: leave them out."
        if _matches(got, (v * mf).sum() / mf.sum()) and mode != "token_mean":
            return (
                f"that is token_mean; {mode} divides differently (see the docstring)."
            )
        if _matches(got, ((v * mf).sum(1) / mf.sum(1).clamp(min=1)).mean()) and mode != "seq_mean":  # fmt: skip
            return f"that is seq_mean; {mode} divides differently (see the docstring)."
        if isinstance(got, Tensor) and not torch.isfinite(got).all():
            return "an empty row has 0 tokens: divide by the count clamped to ≥ 1."
        return None

    return _run("loss aggregation", fn, cases, _tensor_compare(atol=1e-5),
                diagnose=diagnose)  # fmt: skip


@_keeps_rng
def check_kl_k3(fn: Callable[[Tensor, Tensor], Tensor]) -> bool:
    """``fn(per_token_logps, ref_per_token_logps) -> kl``: the k3 estimate per token,
    exp(r) − r − 1 with r = log π_ref − log π_θ, (B, T). Reference: ``losses.kl_k3``."""
    g = _gen(9)
    a = -torch.rand(3, 5, generator=g) * 4
    inputs = [
        ("hand-made: equal log-probs give 0", torch.log(torch.tensor([[0.5, 0.25]])),
         torch.log(torch.tensor([[0.5, 0.25]]))),
        ("hand-made: π_θ = 0.5, π_ref = 0.25 and the reverse",
         torch.log(torch.tensor([[0.5, 0.25]])), torch.log(torch.tensor([[0.25, 0.5]]))),
        ("random: B = 3, T = 5", a, a + 0.5 * torch.randn(3, 5, generator=g)),
        ("degenerate: a very unlikely token under π_ref", torch.tensor([[-0.1]]),
         torch.tensor([[-12.0]])),
    ]  # fmt: skip
    cases = [Case(label, (p, r), losses.kl_k3(p, r)) for label, p, r in inputs]

    def diagnose(case: Case, got: Any) -> str | None:
        p, r = case.args
        swapped = p - r
        if _matches(got, torch.exp(swapped) - swapped - 1):
            return "r = log π_ref − log π_θ (reference minus current), not the reverse."
        if _matches(got, p - r) or _matches(got, r - p):
            return "that is the k1 estimate (a log-ratio, can be negative); k3 is exp(r) − r − 1."  # fmt: skip
        return None

    return _run("k3 KL estimate", fn, cases, _tensor_compare(atol=1e-5),
                diagnose=diagnose)  # fmt: skip


@_keeps_rng
def check_interpolate_(fn: Callable[[list[Tensor], list[Tensor], float], None]) -> bool:
    """``fn(params, theta_0, alpha) -> None``: reposition a LIST of parameters IN
    PLACE, p ← θ₀ + α(p − θ₀), under ``torch.no_grad()``; exact at α = 0 and α = 1
    (use ``torch.lerp``); bf16 parameters are computed in fp32 and cast back.
    Reference: ``params.interpolate_``."""
    g = _gen(11)

    def make(dtypes: Sequence[torch.dtype]) -> tuple[list[Tensor], list[Tensor]]:
        shapes = [(4, 3), (5,), (2, 2)]
        ps = [nn.Parameter(torch.randn(s, generator=g).to(d))
              for s, d in zip(shapes, dtypes, strict=False)]  # fmt: skip
        t0 = [p.detach().float() + 0.3 * torch.randn(p.shape, generator=g) for p in ps]
        return ps, t0

    settings = [
        ("hand-made: one 2-element parameter, α = 0.8", None, 0.8),
        ("random: three fp32 LoRA-like matrices, α = 0.6",
         (torch.float32,) * 3, 0.6),
        ("random: a bf16 parameter among fp32 ones, α = 0.5",
         (torch.float32, torch.bfloat16, torch.float32), 0.5),
        ("degenerate: α = 1 must leave θ_K bit for bit", (torch.float32,) * 3, 1.0),
        ("degenerate: α = 0 must return θ₀ bit for bit", (torch.float32,) * 2, 0.0),
    ]  # fmt: skip
    cases = []
    for label, dtypes, alpha in settings:
        if dtypes is None:
            ps = [nn.Parameter(torch.tensor([2.0, 1.0]))]
            t0 = [torch.tensor([0.0, 0.0])]
        else:
            ps, t0 = make(dtypes)
        expected = [p.detach().clone() for p in ps]
        params.interpolate_(expected, t0, alpha)
        cases.append(Case(label, (ps, t0, alpha), (alpha, expected), shown=expected))

    def compare(got: Any, expected: tuple[float, list[Tensor]]) -> str | None:
        alpha, tensors = expected
        for i, (g_, e) in enumerate(zip(got, tensors, strict=True)):
            if g_.dtype != e.dtype:
                return (
                    f"parameter {i} changed dtype to {g_.dtype} (was {e.dtype}); "
                    "cast the result back: p.copy_(...) keeps the dtype."
                )
            tol = 1e-2 if e.dtype == torch.bfloat16 else 1e-6  # bf16 keeps 8 bits
            exact = alpha in (0.0, 1.0)  # what makes α = 0 / 1 equal GRPO bit for bit
            problem = _tensor_problem(g_, e, atol=tol, rtol=tol, exact=exact,
                                      what=f"parameter {i}")  # fmt: skip
            if problem:
                return problem
        return None

    def diagnose(case: Case, got: Any) -> str | None:
        ps, t0, alpha = case.args
        if all(torch.equal(g_.detach(), p.detach()) for g_, p in zip(got, ps, strict=True)):  # fmt: skip
            return (
                "the parameters did not change: update them in place "
                "(p.lerp_(...) or p.copy_(...)), returning new tensors is not enough."
            )
        if alpha in (0.0, 1.0) and compare(got, (0.5, case.expected[1])) is None:
            return (
                "right up to rounding, but θ₀ + α(θ − θ₀) is not exact in floating "
                "point. p.lerp_(θ₀, 1 − α) is exact at α = 0 and α = 1, which is what "
                "lets the tests check α = 1 ≡ GRPO×(K+1) with torch.equal."
            )
        return None

    return _run("reposition in place", fn, cases, compare, diagnose=diagnose,
                in_place=True)  # fmt: skip


# --- 05: training ----------------------------------------------------------------------
@_keeps_rng
def check_moving_average(fn: Callable[[np.ndarray, int], np.ndarray]) -> bool:
    """``fn(y, window) -> smoothed``: trailing moving average of a 1-D array, the
    same length as ``y``; point i averages y[max(0, i − window + 1) : i + 1] (shorter
    at the start). Reference: ``plotting.smooth_curve``."""
    rng = np.random.default_rng(0)
    inputs = [
        ("hand-made: window 2", np.array([0.0, 1.0, 0.0, 1.0]), 2),
        ("hand-made: window 3", np.array([3.0, 6.0, 9.0, 0.0, 0.0]), 3),
        ("random: 30 rewards, window 5", rng.random(30), 5),
        ("degenerate: window 1 changes nothing", rng.random(6), 1),
        ("degenerate: window longer than the data", np.array([1.0, 2.0, 3.0]), 10),
    ]
    cases = [
        Case(label, (y, w), plotting.smooth_curve(y.copy(), w))
        for label, y, w in inputs
    ]

    def compare(got: Any, expected: np.ndarray) -> str | None:
        if isinstance(got, Tensor):
            got = got.numpy()
        if not isinstance(got, (np.ndarray, list)):
            return f"expected a numpy array, got a {type(got).__name__}"
        got = np.asarray(got, dtype=float)
        if got.shape != expected.shape:
            return (
                f"shape {got.shape}, expected {expected.shape}: the smoothed curve has "
                f"one point per input point"
            )
        if not np.allclose(got, expected, atol=1e-9):
            i = int(np.abs(got - expected).argmax())
            return f"differs at index {i}: got {got[i]:.6g}, expected {expected[i]:.6g}"
        return None

    def diagnose(case: Case, got: Any) -> str | None:
        y, w = case.args
        if w > 1 and isinstance(got, np.ndarray) and len(got) == len(y):
            centred = np.convolve(y, np.ones(w) / w, mode="same")
            if np.allclose(got, centred):
                return (
                    "np.convolve(mode='same') is centred and pads with zeros; the "
                    "curve must be TRAILING (only past points) and average fewer "
                    "points at the start."
                )
            if w < len(y) and np.allclose(got[w - 1 :], case.expected[w - 1 :]):
                return "the first window − 1 points average only the points so far."
        if isinstance(got, np.ndarray) and len(got) == len(y) - w + 1:
            return "mode='valid' drops the first points; keep one output per input."
        return None

    return _run("moving average", fn, cases, compare, diagnose=diagnose)


class _CountingSGD(torch.optim.SGD):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps = 0

    def step(self, closure: Any = None) -> Any:
        self.steps += 1
        return super().step(closure)


def _count_optimizer_steps(algo: str, K: int, M: int, stopped: bool) -> int:
    """Optimizer steps one ``sfpo.update`` takes on a toy batch of 2M completions."""
    extra = {"stop_rule": "step", "stop_step": 0} if stopped else {}
    cfg = toy_config(algo=algo, num_fast_steps=K, num_minibatches=M, num_prompts=M,
                     group_size=2, **extra)  # fmt: skip
    bandit = ToyBandit()
    batch = bandit.sample_batch(M, 2, _gen(0))
    optimizer = _CountingSGD([bandit.theta], lr=cfg.lr)
    update([bandit.theta], optimizer, batch, bandit.make_loss_fn(cfg), cfg,
           StopRule.from_config(cfg), step=0)  # fmt: skip
    return optimizer.steps


@_keeps_rng
def check_optimizer_steps(fn: Callable[[str, int, int, bool], int]) -> bool:
    """``fn(algo, num_fast_steps, num_minibatches, stopped) -> int``: optimizer steps
    one outer step takes on its rollout batch, for ``algo`` in grpo, grpo_multi,
    sfpo; ``stopped`` means the stop rule has switched SFPO off. Reference: counting
    ``optimizer.step()`` calls inside ``sfpo.update`` on the toy."""
    settings = [
        ("hand-made: GRPO", "grpo", 3, 1, False),
        ("hand-made: GRPO×(K+1), K = 3", "grpo_multi", 3, 1, False),
        ("hand-made: SFPO, K = 3", "sfpo", 3, 1, False),
        ("hand-made: SFPO, K = 3, 4 mini-batches (the reference code)", "sfpo", 3, 4,
         False),
        ("random: SFPO, K = 5, 2 mini-batches", "sfpo", 5, 2, False),
        ("degenerate: SFPO after the stop rule fired", "sfpo", 3, 2, True),
        ("degenerate: GRPO, 'stopped' changes nothing", "grpo", 3, 2, True),
    ]  # fmt: skip
    cases = [
        Case(label, (algo, K, M, stopped), _count_optimizer_steps(algo, K, M, stopped))
        for label, algo, K, M, stopped in settings
    ]

    def compare(got: Any, expected: int) -> str | None:
        if isinstance(got, bool) or not isinstance(got, (int, np.integer)):
            return f"expected an int, got {_fmt(got)}"
        return None if got == expected else f"got {got}, expected {expected}"

    def diagnose(case: Case, got: Any) -> str | None:
        algo, K, M, stopped = case.args
        if got == case.expected // M:
            return "each pass takes one optimizer step PER MINI-BATCH."
        if algo == "sfpo" and stopped and got == (K + 1) * M:
            return "once stopped, SFPO runs with α = 0 and skips the K fast passes."
        if algo == "sfpo" and got == K * M:
            return "K fast passes, then ONE slow pass: K + 1 passes in all."
        return None

    return _run("optimizer steps per batch", fn, cases, compare, diagnose=diagnose)


# --- 06: dashboards and the stop rule ----------------------------------------------------
@_keeps_rng
def check_entropy_zscore(fn: Callable[[list[float], int], float | None]) -> bool:
    """``fn(entropies, window) -> z or None``: z = (H[-1] − mean(H[-ω:])) /
    (std(H[-ω:]) + 1e-9), POPULATION std, the window including the latest value; None
    when fewer than ω entropies exist. Reference: ``sfpo.StopRule.zscore``."""
    rng = np.random.default_rng(1)
    inputs = [
        ("hand-made: [1, 2, 3], ω = 3", [1.0, 2.0, 3.0], 3),
        ("hand-made: a spike after a flat stretch", [1.0] * 5 + [1.5], 6),
        ("hand-made: a steady fall, ω = 30 (|z| ≈ 1.68)",
         [2.0 - 0.01 * i for i in range(40)], 30),
        ("random: noise, ω = 10", list(rng.normal(1.0, 0.1, 25)), 10),
        ("degenerate: fewer than ω values", [1.0, 0.9], 3),
        ("degenerate: a constant entropy (std 0)", [0.7] * 5, 5),
    ]  # fmt: skip
    cases = [
        Case(label, (h, w), StopRule(window=w, entropies=list(h)).zscore())
        for label, h, w in inputs
    ]

    def diagnose(case: Case, got: Any) -> str | None:
        h, w = case.args
        if case.expected is None:
            return "the rule cannot judge before ω entropies exist: return None."
        recent = np.asarray(h[-w:])
        if isinstance(got, (float, int)) and np.isclose(
            got, (recent[-1] - recent.mean()) / (recent.std(ddof=1) + 1e-9)
        ):
            return "use the POPULATION std (statistics.pstdev, np.std with ddof=0)."
        prev = np.asarray(h[-w - 1 : -1])
        if (
            len(prev) == w
            and isinstance(got, (float, int))
            and np.isclose(got, (recent[-1] - prev.mean()) / (prev.std() + 1e-9))
        ):
            return "the window INCLUDES the latest value: H[-ω:]."
        if isinstance(got, (float, int)) and np.isclose(got, abs(case.expected)):
            return "return the signed z; the 'abs' rule takes |z| itself."
        return None

    return _run(
        "entropy z-score",
        fn,
        cases,
        lambda got, exp: _scalar_problem(got, exp, atol=1e-6),
        diagnose=diagnose,
    )


def _first_fire(entropies: list[float], rule: str, window: int, threshold: float):
    stop = StopRule(rule=rule, window=window, threshold=threshold)
    for s in range(len(entropies) + 1):
        if stop.check(s):
            return s
        if s < len(entropies):
            stop.record(entropies[s])
    return None


@_keeps_rng
def check_stop_step(fn: Callable[[list[float], str, int, float], int | None]) -> bool:
    """``fn(entropies, rule, window, threshold) -> step or None``: the first outer
    step s at which the stop rule fires, where the check at step s sees the entropies
    H_0 … H_{s−1} of the earlier steps (s = 0 … len(entropies)); ``rule`` is ``rise``
    (z ≥ τ) or ``abs`` (|z| ≥ τ). None if it never fires. Reference: ``StopRule``'s
    ``check`` / ``record`` as ``sfpo.update`` calls them."""
    rng = np.random.default_rng(2)
    falling = [2.0 - 0.01 * i for i in range(40)]
    spike = [1.0 + 0.01 * (i % 2) for i in range(12)] + [1.5, 1.0, 1.0]
    noise = list(rng.normal(1.0, 0.05, 20))
    inputs = [
        ("hand-made: a steady fall, rise", falling, "rise", 30, 1.0),
        ("hand-made: a steady fall, abs (fires as soon as ω values exist)", falling,
         "abs", 30, 1.0),
        ("hand-made: a spike at index 12, rise, ω = 5", spike, "rise", 5, 1.0),
        ("random: noise, abs, ω = 5, τ = 1.5", noise, "abs", 5, 1.5),
        ("degenerate: never before ω values exist", [1.0, 5.0, 1.0], "abs", 5, 0.1),
    ]  # fmt: skip
    cases = [
        Case(label, (h, r, w, t), _first_fire(h, r, w, t))
        for label, h, r, w, t in inputs
    ]

    def compare(got: Any, expected: int | None) -> str | None:
        if expected is None:
            return None if got is None else f"expected None (never fires), got {got!r}"
        if isinstance(got, bool) or not isinstance(got, (int, np.integer)):
            return f"expected the step number {expected}, got {_fmt(got)}"
        return None if got == expected else f"got step {got}, expected step {expected}"

    def diagnose(case: Case, got: Any) -> str | None:
        if isinstance(got, (int, np.integer)) and case.expected is not None:
            if got == case.expected - 1:
                return (
                    "the check at step s happens BEFORE step s's update, so it sees "
                    "only H_0 … H_{s−1}: one step later than the entropy's index."
                )
            if got < case.args[2]:
                return "the rule cannot fire before ω entropies are recorded."
        return None

    return _run("stop step", fn, cases, compare, diagnose=diagnose)


@_keeps_rng
def check_drift_metrics(fn: Callable[[Tensor, Tensor, Tensor, float], dict]) -> bool:
    """``fn(theta_0, theta_k, theta_next, alpha) -> dict``: flat vectors (D,) in,
    a dict with ``sfpo/drift_norm`` ‖θ_K − θ₀‖, ``sfpo/reposition_norm`` ‖θ̃ − θ₀‖,
    ``sfpo/slow_step_norm`` ‖θ_{s+1} − θ̃‖ and ``sfpo/cos_fast_slow`` cos(θ_K − θ₀,
    θ_{s+1} − θ̃) (0 if a vector is zero), as floats. Reference:
    ``params.drift_metrics``."""
    keys = ("sfpo/drift_norm", "sfpo/reposition_norm", "sfpo/slow_step_norm",
            "sfpo/cos_fast_slow")  # fmt: skip
    g = _gen(12)
    inputs = [
        ("hand-made: θ₀ = 0, θ_K = (2, 0), slow step (0, 1)", torch.zeros(2),
         torch.tensor([2.0, 0.0]), torch.tensor([1.6, 1.0]), 0.8),
        ("hand-made: the slow step continues the fast direction", torch.zeros(2),
         torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0]), 0.5),
        ("random: D = 50", torch.randn(50, generator=g), torch.randn(50, generator=g),
         torch.randn(50, generator=g), 0.8),
        ("degenerate: the fast steps did not move (θ_K = θ₀)", torch.ones(3),
         torch.ones(3), torch.tensor([1.0, 2.0, 1.0]), 0.8),
    ]  # fmt: skip
    cases = []
    for label, t0, tk, tn, alpha in inputs:
        ref = params.drift_metrics([t0], [tk], [tn], alpha)
        cases.append(Case(label, (t0, tk, tn, alpha), {k: ref[k] for k in keys}))

    def compare(got: Any, expected: dict) -> str | None:
        if not isinstance(got, dict):
            return f"expected a dict, got a {type(got).__name__}"
        missing = [k for k in keys if k not in got]
        if missing:
            return f"missing key(s) {missing}"
        for k in keys:
            problem = _scalar_problem(got[k], expected[k], atol=1e-5)
            if problem:
                return f"{k}: {problem}"
        return None

    def diagnose(case: Case, got: Any) -> str | None:
        if not isinstance(got, dict):
            return None
        t0, tk, tn, alpha = case.args
        tilde = t0 + alpha * (tk - t0)
        slow = got.get("sfpo/slow_step_norm")
        if slow is not None and math.isclose(float(slow), (tn - tk).norm().item(),
                                             rel_tol=1e-5) and alpha < 1:  # fmt: skip
            return "the slow step starts at θ̃ = θ₀ + α(θ_K − θ₀), not at θ_K."
        cos = got.get("sfpo/cos_fast_slow")
        if cos is not None and not math.isfinite(float(cos)):
            return "if either vector is zero the cosine is undefined: return 0.0."
        if slow is not None and math.isclose(float(slow), (tn - t0).norm().item(),
                                             rel_tol=1e-5):  # fmt: skip
            return f"‖θ_{{s+1}} − θ̃‖ is from θ̃ = {_fmt(tilde)}, not from θ₀."
        return None

    return _run("drift metrics", fn, cases, compare, diagnose=diagnose)


# --- 07: the hyperparameter lab ----------------------------------------------------------
@_keeps_rng
def check_toy_expected_reward(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> bool:
    """``fn(theta, features, arm_rewards) -> J``: the exact expected reward of the
    toy bandit, J(θ) = Σ_a softmax(features @ θ)_a r_a, θ (2,), features (A, 2),
    rewards (A,), J a 0-dim tensor. Reference: ``ToyBandit.expected_reward``."""
    settings = [
        ("hand-made: the default bandit at its start", (0.5, -0.5), None, None),
        ("hand-made: θ = 0 (uniform policy)", (0.0, 0.0), None, None),
        ("random: 3 arms", (1.3, -0.4), (10.0, 130.0, 250.0), (0.2, 0.9, 0.4)),
        ("degenerate: a huge θ (the softmax is one-hot; needs stability)",
         (800.0, 0.0), None, None),
        ("degenerate: all arms pay the same", (0.3, 2.0), None, (0.5,) * 6),
    ]  # fmt: skip
    cases = []
    for label, theta, angles, rewards in settings:
        kw = {}
        if angles is not None:
            kw["arm_angles_deg"] = angles
        if rewards is not None:
            kw["arm_rewards"] = rewards
            if angles is None:
                kw["arm_angles_deg"] = tuple(60.0 * i for i in range(len(rewards)))
        bandit = ToyBandit(theta, **kw)
        args = (bandit.theta.detach().clone(), bandit.features.clone(),
                bandit.arm_rewards.clone())  # fmt: skip
        cases.append(Case(label, args, bandit.expected_reward()))

    def diagnose(case: Case, got: Any) -> str | None:
        theta, feats, rewards = case.args
        if _matches(got, (theta @ feats.T) @ rewards):
            return "turn the logits into probabilities first: torch.softmax."
        if isinstance(got, Tensor) and not torch.isfinite(got).all():
            return "exp of a large logit overflows: torch.softmax is stable."
        return None

    return _run("toy expected reward", fn, cases, _tensor_compare(atol=1e-5),
                diagnose=diagnose)  # fmt: skip


@_keeps_rng
def check_rollouts_per_step(fn: Callable[[str, int, int, int], int]) -> bool:
    """``fn(algo, num_prompts, group_size, num_fast_steps) -> int``: completions one
    outer step samples, for ``algo`` in grpo, grpo_multi, sfpo, lookahead (whose K
    inner steps each need a FRESH batch). Reference: ``toy.run_toy``'s rollout count."""
    settings = [
        ("hand-made: GRPO, 1 prompt × G = 8", "grpo", 1, 8, 3),
        ("hand-made: SFPO, K = 3", "sfpo", 1, 8, 3),
        ("hand-made: GRPO×(K+1)", "grpo_multi", 1, 8, 3),
        ("hand-made: Lookahead, K = 3", "lookahead", 1, 8, 3),
        ("random: Lookahead, 2 prompts × G = 4, K = 5", "lookahead", 2, 4, 5),
        ("degenerate: SFPO with K = 1, G = 2", "sfpo", 3, 2, 1),
    ]  # fmt: skip
    cases = []
    for label, algo, n, G, K in settings:
        cfg = toy_config(num_prompts=n, group_size=G, num_fast_steps=K)
        used = int(run_toy(cfg, algo=algo, num_steps=1).rollouts[1])
        cases.append(Case(label, (algo, n, G, K), used))

    def compare(got: Any, expected: int) -> str | None:
        if isinstance(got, bool) or not isinstance(got, (int, np.integer)):
            return f"expected an int, got {_fmt(got)}"
        return None if got == expected else f"got {got}, expected {expected}"

    def diagnose(case: Case, got: Any) -> str | None:
        algo, n, G, K = case.args
        if algo != "lookahead" and got == (K + 1) * n * G:
            return "extra passes REUSE the batch: no new completions are sampled."
        if algo == "lookahead" and got == n * G:
            return "each Lookahead inner step samples a fresh batch: K batches."
        return None

    return _run("rollouts per step", fn, cases, compare, diagnose=diagnose)


def _effective_alpha(algo: str, alpha: float, stopped: bool) -> float:
    """The α ``sfpo.update`` reports (``sfpo/alpha``) on one toy step."""
    extra = {"stop_rule": "step", "stop_step": 0} if stopped else {}
    cfg = toy_config(algo=algo, alpha=alpha, **extra)
    bandit = ToyBandit()
    batch = bandit.sample_batch(1, 8, _gen(0))
    optimizer = torch.optim.SGD([bandit.theta], lr=cfg.lr)
    metrics = update([bandit.theta], optimizer, batch, bandit.make_loss_fn(cfg), cfg,
                     StopRule.from_config(cfg), step=0)  # fmt: skip
    return metrics["sfpo/alpha"]


@_keeps_rng
def check_effective_alpha(fn: Callable[[str, float, bool], float]) -> bool:
    """``fn(algo, alpha, stopped) -> float``: the reposition coefficient an outer step
    really uses for ``algo`` in grpo, grpo_multi, sfpo, given the configured ``alpha``
    and whether the stop rule has fired. Reference: the ``sfpo/alpha`` metric that
    ``sfpo.update`` logs."""
    settings = [
        ("hand-made: SFPO, α = 0.8", "sfpo", 0.8, False),
        ("hand-made: GRPO ignores α", "grpo", 0.8, False),
        ("hand-made: GRPO×(K+1) is α = 1", "grpo_multi", 0.3, False),
        ("random: SFPO, α = 0.35", "sfpo", 0.35, False),
        ("degenerate: SFPO after the stop rule fired", "sfpo", 0.8, True),
        ("degenerate: GRPO×(K+1) has no stop rule", "grpo_multi", 0.8, True),
    ]  # fmt: skip
    cases = [
        Case(label, (algo, a, s), _effective_alpha(algo, a, s))
        for label, algo, a, s in settings
    ]

    def diagnose(case: Case, got: Any) -> str | None:
        algo, alpha, stopped = case.args
        if algo == "sfpo" and stopped and got == alpha:
            return "once the stop rule fires, SFPO runs as GRPO: α = 0."
        if algo != "sfpo" and got == alpha:
            return "GRPO is the α = 0 case and GRPO×(K+1) the α = 1 case of SFPO."
        if algo == "grpo_multi" and stopped and got == 0:
            return "the stop rule switches off SFPO only; GRPO×(K+1) keeps its passes."
        return None

    return _run(
        "effective α",
        fn,
        cases,
        lambda got, exp: _scalar_problem(got, exp, atol=1e-9),
        diagnose=diagnose,
    )


__all__ = ["EXERCISES", *(name for names in EXERCISES.values() for name in names)]
