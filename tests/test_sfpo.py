"""The degenerate cases that pin grpo_update / sfpo_update / StopRule (sfpo-notes.md)."""

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from sfpo_edu.config import SFPOConfig
from sfpo_edu.losses import grpo_loss
from sfpo_edu.params import flatten, reposition, snapshot
from sfpo_edu.records import StepPath
from sfpo_edu.sfpo import (
    NonFiniteError,
    StopRule,
    grpo_update,
    replay_stop_rule,
    sfpo_update,
    split_batch,
    train_pass,
    update,
)
from sfpo_edu.toy import run_toy, toy_config


@dataclass
class SeqBatch:
    tokens: torch.Tensor  # (B, T)
    advantages: torch.Tensor  # (B,)
    old_per_token_logps: torch.Tensor  # (B, T)
    completion_mask: torch.Tensor  # (B, T)
    group_size: int = 4


class SeqPolicy(nn.Module):
    """A tiny 'language model': free logits per position plus a shared bias."""

    def __init__(self, T=5, V=7, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(T, V, generator=g))
        self.b = nn.Parameter(torch.randn(V, generator=g) * 0.1)

    def per_token_logps(self, tokens):
        logp = torch.log_softmax(self.w + self.b, dim=-1)  # (T, V)
        return logp.gather(1, tokens.T).T  # (B, T)


def make_problem(seed=0, B=8, T=5, V=7):
    policy = SeqPolicy(T, V, seed)
    g = torch.Generator().manual_seed(seed + 1)
    tokens = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T)
    mask[::3, -2:] = 0  # some shorter completions
    with torch.no_grad():
        old = policy.per_token_logps(tokens)
    batch = SeqBatch(tokens, torch.randn(B, generator=g), old, mask)
    calls = []

    def loss_fn(mb):
        calls.append(mb.old_per_token_logps.clone())
        return grpo_loss(
            policy.per_token_logps(mb.tokens),
            mb.old_per_token_logps,
            mb.advantages,
            mb.completion_mask,
            clip_eps=0.2,
        )

    return policy, batch, loss_fn, calls


def adamw(policy):
    return torch.optim.AdamW(policy.parameters(), lr=0.05, weight_decay=0.01)


@pytest.mark.parametrize("num_minibatches", [1, 2])
def test_alpha_one_is_bit_for_bit_grpo_with_k_plus_one_passes(num_minibatches):
    K = 3
    p1, batch, loss1, _ = make_problem()
    p2, _, loss2, _ = make_problem()
    o1, o2 = adamw(p1), adamw(p2)
    for _ in range(2):  # two outer steps: the shared optimizer state must match too
        sfpo_update(
            list(p1.parameters()),
            o1,
            batch,
            loss1,
            num_fast_steps=K,
            alpha=1.0,
            num_minibatches=num_minibatches,
            max_grad_norm=1.0,
        )
        grpo_update(
            list(p2.parameters()),
            o2,
            batch,
            loss2,
            num_passes=K + 1,
            num_minibatches=num_minibatches,
            max_grad_norm=1.0,
        )
    for a, b in zip(p1.parameters(), p2.parameters(), strict=True):
        assert torch.equal(a, b)
    s1, s2 = o1.state_dict()["state"], o2.state_dict()["state"]
    for i in s1:
        assert torch.equal(s1[i]["exp_avg"], s2[i]["exp_avg"])
        assert torch.equal(s1[i]["exp_avg_sq"], s2[i]["exp_avg_sq"])


def test_alpha_zero_is_one_grpo_pass_and_skips_the_fast_passes():
    p1, batch, loss1, calls1 = make_problem()
    p2, _, loss2, _ = make_problem()
    o1, o2 = adamw(p1), adamw(p2)
    m = sfpo_update(
        list(p1.parameters()), o1, batch, loss1, num_fast_steps=3, alpha=0.0
    )
    grpo_update(list(p2.parameters()), o2, batch, loss2, num_passes=1)
    for a, b in zip(p1.parameters(), p2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert len(calls1) == 1  # only the slow pass ran
    assert o1.state_dict()["state"][0]["step"] == 1  # Adam moved once, not K+1 times
    assert m["sfpo/active"] == 0.0 and "fast/loss" not in m


@pytest.mark.parametrize("K,alpha", [(1, 0.5), (1, 0.8), (2, 0.7), (3, 0.3)])
def test_sgd_matches_the_unified_formula(K, alpha):
    """SGD: θ_{s+1} = θ₀ − η[α Σ_{k<K} ∇L(θ^k) + ∇L(θ̃)], gradients from autograd."""
    lr = 0.3
    policy, batch, loss_fn, _ = make_problem(seed=3)
    theta_0 = [p.detach().clone() for p in policy.parameters()]

    def grad_at(params):
        ref = copy.deepcopy(policy)
        with torch.no_grad():
            for p, v in zip(ref.parameters(), params, strict=True):
                p.copy_(v)
        logps = ref.per_token_logps(batch.tokens)
        loss, _ = grpo_loss(
            logps,
            batch.old_per_token_logps,
            batch.advantages,
            batch.completion_mask,
            clip_eps=0.2,
        )
        return torch.autograd.grad(loss, list(ref.parameters()))

    # by hand: the fast trajectory, θ̃, then the slow gradient at θ̃
    theta, fast_grads = theta_0, []
    for _ in range(K):
        g = grad_at(theta)
        fast_grads.append(g)
        theta = [t - lr * gi for t, gi in zip(theta, g, strict=True)]
    theta_tilde = [
        t0 + alpha * (tk - t0) for t0, tk in zip(theta_0, theta, strict=True)
    ]
    slow_grad = grad_at(theta_tilde)
    expected = [
        t0 - lr * (alpha * sum(fg[i] for fg in fast_grads) + slow_grad[i])
        for i, t0 in enumerate(theta_0)
    ]

    opt = torch.optim.SGD(policy.parameters(), lr=lr)
    sfpo_update(
        list(policy.parameters()), opt, batch, loss_fn, num_fast_steps=K, alpha=alpha
    )
    for p, e in zip(policy.parameters(), expected, strict=True):
        torch.testing.assert_close(p.data, e, rtol=1e-5, atol=1e-6)


def test_old_logps_never_change_and_ratio_is_one_only_at_theta_0():
    policy, batch, loss_fn, calls = make_problem()
    before = batch.old_per_token_logps.clone()
    m = sfpo_update(
        list(policy.parameters()),
        adamw(policy),
        batch,
        loss_fn,
        num_fast_steps=3,
        alpha=0.8,
    )
    assert torch.equal(batch.old_per_token_logps, before)
    assert len(calls) == 3 + 1 + 1  # K fast, one diagnostic at θ_K, one slow
    assert all(torch.equal(c, before) for c in calls)
    # slow pass starts at θ̃ ≠ θ₀, so its ratio is already ≠ 1
    assert m["kl/theta_tilde"] > 0
    assert m["kl/theta_k"] > m["kl/theta_tilde"]


def test_first_fast_pass_sees_ratio_exactly_one():
    policy, batch, loss_fn, _ = make_problem()
    rows = train_pass(list(policy.parameters()), adamw(policy), [batch], loss_fn)
    assert rows[0]["ratio_dev"] == 0.0 and rows[0]["kl"] == 0.0


def test_optimizer_is_shared_and_never_reset():
    policy, batch, loss_fn, _ = make_problem()
    opt = adamw(policy)
    params = list(policy.parameters())
    sfpo_update(params, opt, batch, loss_fn, num_fast_steps=3, alpha=0.8)
    state = opt.state[params[0]]
    assert state["step"] == 4  # K fast + 1 slow on one optimizer
    moments = state["exp_avg"]
    sfpo_update(params, opt, batch, loss_fn, num_fast_steps=3, alpha=0.8)
    assert opt.state[params[0]]["step"] == 8
    assert opt.state[params[0]]["exp_avg"] is moments  # updated in place, not rebuilt


def test_sfpo_metrics_cover_all_three_stages():
    policy, batch, loss_fn, _ = make_problem()
    m = sfpo_update(list(policy.parameters()), adamw(policy), batch, loss_fn)
    for key in [
        "fast/loss",
        "fast/clip_frac",
        "fast/kl",
        "slow/loss",
        "slow/clip_frac",
        "slow/kl",
        "sfpo/alpha",
        "sfpo/active",
        "sfpo/drift_norm",
        "sfpo/reposition_norm",
        "sfpo/slow_step_norm",
        "sfpo/cos_fast_slow",
        "kl/theta_k",
        "kl/theta_tilde",
    ]:
        assert key in m, key
    assert m["sfpo/reposition_norm"] == pytest.approx(
        0.8 * m["sfpo/drift_norm"], rel=1e-5
    )


def test_split_batch_slices_tensors_and_shares_the_rest():
    _, batch, _, _ = make_problem(B=8)
    parts = split_batch(batch, 4)
    assert len(parts) == 4 and parts[1].tokens.shape[0] == 2
    assert torch.equal(torch.cat([p.tokens for p in parts]), batch.tokens)
    assert parts[0].group_size == 4
    with pytest.raises(ValueError, match="equal"):
        split_batch(batch, 3)


def test_non_finite_loss_skips_the_step_and_restores_theta_0():
    policy, batch, loss_fn, _ = make_problem()
    params = list(policy.parameters())
    calls = {"n": 0}

    def nan_on_slow(mb):
        calls["n"] += 1
        loss, m = loss_fn(mb)
        return (loss * float("nan") if calls["n"] == 5 else loss), m

    theta_0 = flatten(snapshot(params))
    cfg = SFPOConfig(num_prompts=2, group_size=4)
    with pytest.warns(UserWarning, match="skipped"):
        m = update(params, adamw(policy), batch, nan_on_slow, cfg, StopRule(), step=0)
    assert m["update/skipped"] == 1.0
    assert torch.equal(flatten(params), theta_0)
    with pytest.raises(NonFiniteError):
        train_pass(
            params,
            adamw(policy),
            [batch],
            lambda b: (torch.tensor(float("inf"), requires_grad=True), {}),
        )


# --- stop rule -----------------------------------------------------------------------


def feed(rule, values):
    fired = []
    for step, h in enumerate(values):
        fired.append(rule.check(step))
        rule.record(h)
    return fired


def test_rise_fires_on_an_entropy_spike_and_not_before_the_window_fills():
    rule = StopRule("rise", window=5, threshold=1.0)
    # a spike inside the first 4 values cannot fire: fewer than ω entropies
    fired = feed(rule, [1.0, 9.0, 1.0, 1.0, 1.0, 1.0, 1.0, 5.0, 1.0])
    assert not any(fired[:8])  # checked before step 8's update: H[-1] = 5 → z ≥ 1
    assert fired[8] and rule.fired_at == 8
    assert rule.check(100)  # permanent


def test_rise_does_not_fire_on_a_falling_entropy_but_abs_does():
    falling = [2.0 - 0.01 * i for i in range(40)]
    assert not any(feed(StopRule("rise", window=30), falling))
    abs_rule = StopRule("abs", window=30, threshold=1.0)
    fired = feed(abs_rule, falling)
    # |z| = sqrt(3(ω−1)/(ω+1)) ≈ 1.68 for ω = 30: fires as soon as the window is full
    assert fired.index(True) == 30
    assert abs(abs_rule.zscore()) == pytest.approx((3 * 29 / 31) ** 0.5, rel=1e-6)


def test_abs_does_not_fire_on_a_flat_noisy_entropy_below_threshold():
    values = [1.0, 1.1] * 20 + [1.05]
    assert not feed(StopRule("abs", window=10, threshold=1.0), values)[-1]


def test_step_and_never_rules_and_state_round_trip():
    rule = StopRule("step", stop_step=3)
    assert feed(rule, [1.0] * 5) == [False, False, False, True, True]
    assert not any(feed(StopRule("never", window=2), [1.0, 5.0, 100.0, 1e6]))
    rule2 = StopRule()
    rule2.load_state_dict(rule.state_dict())
    assert rule2 == rule


def test_replay_stop_rule_by_hand():
    # checks at s = 0..3; at s = 3 the window [1, 2, 3] is full:
    # z = (3 − 2) / pstdev(1, 2, 3) = 1 / sqrt(2/3) ≈ 1.2247 ≥ 1
    zs, fired = replay_stop_rule([1.0, 2.0, 3.0], "rise", window=3, threshold=1.0)
    assert zs[:3] == [None, None, None]
    assert zs[3] == pytest.approx(1.5**0.5, rel=1e-6)  # std + 1e-9
    assert fired == 3
    # the same series falling: rise never fires, abs does (|z| ≈ 1.22)
    assert replay_stop_rule([3.0, 2.0, 1.0], "rise", 3)[1] is None
    assert replay_stop_rule([3.0, 2.0, 1.0], "abs", 3)[1] == 3
    # degenerate: nothing recorded, one check, never fires; "never" never fires
    assert replay_stop_rule([], "rise", 3) == ([None], None)
    assert replay_stop_rule([1.0, 9.0, 1.0, 99.0], "never", 2)[1] is None


def test_replay_stop_rule_matches_the_rule_inside_a_run():
    # toy SFPO runs, some whose rule fires (seed 2: at step 7) and some whose rule
    # does not: replaying the recorded entropies gives the step of the live rule
    cfg = toy_config(stop_rule="rise", stop_window=5, stop_threshold=1.0)
    outcomes = set()
    for seed in range(4):
        run = run_toy(cfg, algo="sfpo", num_steps=12, seed=seed)
        stopped = [row["sfpo/stopped"] for row in run.metrics]
        fired = stopped.index(1.0) if 1.0 in stopped else None
        entropies = [row["sfpo/entropy"] for row in run.metrics]
        assert replay_stop_rule(entropies, "rise", 5, 1.0)[1] == fired
        outcomes.add(fired is None)
    assert outcomes == {True, False}


def test_a_stop_rule_that_never_fires_changes_nothing():
    # what lets the regime map read an SFPO run without its rule as, bit for bit, SFPO
    # with any rule that its entropy never triggers; a rule that fires changes the run
    # from the step it fires at (toy seed 2: the rule (rise, ω = 5, τ = 1) at step 7)
    for seed in (0, 2):
        never = run_toy(
            toy_config(stop_rule="never"), algo="sfpo", num_steps=12, seed=seed
        )
        rule = toy_config(stop_rule="rise", stop_window=5, stop_threshold=1.0)
        ruled = run_toy(rule, algo="sfpo", num_steps=12, seed=seed)
        entropies = [row["sfpo/entropy"] for row in never.metrics]
        fired = replay_stop_rule(entropies, "rise", 5, 1.0)[1]
        assert fired == (None if seed == 0 else 7)
        same = 13 if fired is None else fired + 1  # θ_0 … θ_fired agree
        assert torch.equal(ruled.thetas[:same], never.thetas[:same])
        assert torch.equal(ruled.thetas, never.thetas) == (fired is None)


def test_update_turns_sfpo_into_grpo_once_the_rule_fires():
    cfg = SFPOConfig(num_prompts=2, group_size=4, stop_rule="step", stop_step=1)
    policy, batch, loss_fn, _ = make_problem()
    params, opt, rule = (
        list(policy.parameters()),
        adamw(policy),
        StopRule.from_config(cfg),
    )
    m0 = update(params, opt, batch, loss_fn, cfg, rule, step=0)
    m1 = update(params, opt, batch, loss_fn, cfg, rule, step=1)
    assert m0["sfpo/alpha"] == 0.8 and m0["sfpo/active"] == 1.0
    assert m1["sfpo/alpha"] == 0.0 and m1["sfpo/active"] == 0.0 and m1["sfpo/stopped"]
    assert opt.state[params[0]]["step"] == 4 + 1


def test_grpo_updates_report_their_step_size():
    cfg = SFPOConfig(algo="grpo", num_prompts=2, group_size=4)
    policy, batch, loss_fn, _ = make_problem()
    params = list(policy.parameters())
    before = flatten(snapshot(params))
    m = update(params, adamw(policy), batch, loss_fn, cfg, StopRule(), step=0)
    assert m["update/norm"] == pytest.approx((flatten(params) - before).norm().item())


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_sfpo_update_reports_its_path(alpha):
    policy, batch, loss_fn, _ = make_problem()
    params = list(policy.parameters())
    start = flatten(params)
    path = StepPath()
    sfpo_update(
        params, adamw(policy), batch, loss_fn, num_fast_steps=3, alpha=alpha, path=path
    )
    assert torch.equal(path.theta_0, start)
    assert len(path.fast) == (4 if alpha > 0 else 1)  # θ⁰ … θ_K, or θ₀ alone
    assert torch.equal(path.fast[0], start) and torch.equal(path.fast[-1], path.theta_k)
    assert torch.equal(path.theta_tilde, reposition(path.theta_k, start, alpha))
    assert torch.equal(path.theta_next, flatten(params))
    assert set(path.points()) == {
        "theta_0",
        "fast",
        "theta_k",
        "theta_tilde",
        "theta_next",
    }


def test_the_path_costs_nothing_unless_asked_and_leaves_the_update_unchanged():
    results = []
    for path in [None, StepPath(), StepPath(with_fast=False)]:
        policy, batch, loss_fn, _ = make_problem()
        params = list(policy.parameters())
        sfpo_update(params, adamw(policy), batch, loss_fn, path=path)
        results.append(flatten(params))
        if path is not None and not path.with_fast:
            assert path.fast == [] and path.theta_k is not None
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


@pytest.mark.parametrize("num_passes", [1, 3])
def test_grpo_path_and_honest_metric_names(num_passes):
    policy, batch, loss_fn, _ = make_problem()
    params = list(policy.parameters())
    start, path = flatten(params), StepPath()
    m = grpo_update(
        params, adamw(policy), batch, loss_fn, num_passes=num_passes, path=path
    )
    assert len(path.fast) == num_passes and torch.equal(path.fast[0], start)
    # GRPO×μ reads as SFPO at α = 1: θ_K = θ̃ = the start of the last pass
    assert path.theta_k is path.theta_tilde is path.fast[-1]
    assert torch.equal(path.theta_next, flatten(params))
    if num_passes == 1:  # plain GRPO has no slow step: its one pass is "pass/"
        assert "pass/loss" in m and not any(k.startswith(("slow/", "fast/")) for k in m)
    else:
        assert {"fast/loss", "slow/loss"} <= set(m) and "pass/loss" not in m


def test_a_skipped_step_reports_a_path_that_stays_at_theta_0():
    cfg = SFPOConfig(num_prompts=2, group_size=4)
    policy, batch, loss_fn, _ = make_problem()
    params = list(policy.parameters())
    start, path = flatten(params), StepPath()

    def nan_loss(mb):
        loss, stats = loss_fn(mb)
        return loss * float("nan"), stats

    with pytest.warns(UserWarning, match="skipped"):
        update(params, adamw(policy), batch, nan_loss, cfg, StopRule(), 0, path)
    assert all(
        torch.equal(p, start)
        for p in [
            path.theta_0,
            path.theta_k,
            path.theta_tilde,
            path.theta_next,
            *path.fast,
        ]
    )


@pytest.mark.parametrize(
    "call,match",
    [
        (
            lambda p, o, b, f: sfpo_update(p, o, b, f, num_fast_steps=0),
            "num_fast_steps",
        ),
        (lambda p, o, b, f: sfpo_update(p, o, b, f, alpha=1.5), r"alpha=1\.5"),
        (lambda p, o, b, f: grpo_update(p, o, b, f, num_passes=0), "num_passes"),
    ],
)
def test_bad_counts_and_alpha_are_refused_before_anything_moves(call, match):
    policy, batch, loss_fn, _ = make_problem()
    optimizer, before = adamw(policy), flatten(policy.parameters())
    with pytest.raises(ValueError, match=match):
        call(list(policy.parameters()), optimizer, batch, loss_fn)
    assert torch.equal(flatten(policy.parameters()), before)
    assert not optimizer.state  # no step was taken


@pytest.mark.parametrize("kwargs", [{"rule": "Rise"}, {"window": 0}])
def test_stop_rule_refuses_an_unknown_rule_or_an_empty_window(kwargs):
    with pytest.raises(ValueError, match="rise, abs, step, never"):
        StopRule(**kwargs)
    with pytest.raises(ValueError, match="window"):
        replay_stop_rule([1.0, 2.0], **kwargs)


def test_replay_stop_rule_replays_the_step_rule():
    assert replay_stop_rule([1.0] * 5, "step", stop_step=3)[1] == 3
    assert replay_stop_rule([1.0] * 5, "step", stop_step=9)[1] is None
