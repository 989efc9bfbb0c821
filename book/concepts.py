"""Write the book's concept map, ``book/concepts.md``, from the table below.

    .venv/bin/python book/concepts.py            # also run by book/make_figures.py

Each concept names the function that implements it, the tests that pin it, the notebook
section that shows it, the book section that explains it and the exercise that practises
it. ``tests/test_concepts.py`` checks that every name exists (function, test, notebook and
book heading, exercise), that each function's docstring points to its book page, and that
the committed page is what this script writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "concepts.md"


class Concept(NamedTuple):
    name: str
    function: str  # module.attribute in sfpo_edu
    tests: tuple[str, ...]  # "test_file.py::test_name"
    notebook: tuple[str, str]  # (notebook file stem, "## " heading)
    book: tuple[str, str]  # (page stem, heading)
    exercises: tuple[str, ...]  # sfpo_edu.exercises.check_*


# A table, one concept per block: kept aligned by hand.
CONCEPTS = (
    Concept("group advantages", "losses.group_advantages",
            ("test_losses.py::test_group_advantages_by_hand",
             "test_losses.py::test_group_advantages_without_std_scaling"),
            ("01_grpo_on_a_toy", "Rewards become group advantages"),
            ("grpo", "Group advantages"), ("check_group_advantages",)),
    Concept("clipped surrogate", "losses.clipped_surrogate",
            ("test_losses.py::test_clipped_tokens_and_padding_get_no_gradient",
             "test_losses.py::test_ratio_is_exactly_one_at_theta_0"),
            ("01_grpo_on_a_toy", "The importance ratio and the clipped surrogate"),
            ("grpo", "The importance ratio and the clipped surrogate"),
            ("check_clipped_surrogate",)),
    Concept("tokens to one number", "losses.aggregate",
            ("test_losses.py::test_grpo_loss_each_aggregation_by_hand",
             "test_losses.py::test_dr_grpo_divides_by_the_generation_limit_not_the_batch_length"),
            ("04_one_sfpo_step_on_an_llm", "Exercises"),
            ("grpo", "From tokens to one number"), ("check_aggregate",)),
    Concept("KL k3", "losses.kl_k3",
            ("test_losses.py::test_kl_k3_by_hand",
             "test_losses.py::test_kl_penalty_and_entropy_bonus_enter_the_loss"),
            ("04_one_sfpo_step_on_an_llm", "KL at θ_K and at θ̃"),
            ("grpo", "KL penalty and entropy bonus"), ("check_kl_k3",)),
    Concept("entropy", "losses.entropy_from_logits",
            ("test_losses.py::test_entropy_from_logits",
             "test_logprobs.py::test_matches_naive_values_entropy_and_gradients"),
            ("06_reading_the_dashboards", "The stop rule and when it fires"),
            ("grpo", "KL penalty and entropy bonus"), ()),
    Concept("old log-probs", "logprobs.per_token_logps",
            ("test_logprobs.py::test_matches_naive_values_entropy_and_gradients",
             "test_sfpo.py::test_old_logps_never_change_and_ratio_is_one_only_at_theta_0"),
            ("03_the_llm_policy", "Per-token log-probs"),
            ("implementation", "The contract: a loss function that reads the batch"),
            ("check_per_token_logps",)),
    Concept("GRPO update", "sfpo.grpo_update",
            ("test_sfpo.py::test_alpha_one_is_bit_for_bit_grpo_with_k_plus_one_passes",
             "test_sfpo.py::test_grpo_path_and_honest_metric_names"),
            ("01_grpo_on_a_toy", "Training GRPO on the toy"),
            ("grpo", "One GRPO update"), ("check_optimizer_steps",)),
    Concept("fast passes", "sfpo.train_pass",
            ("test_sfpo.py::test_first_fast_pass_sees_ratio_exactly_one",
             "test_sfpo.py::test_optimizer_is_shared_and_never_reset"),
            ("02_sfpo_three_stages", "One SFPO update, stage by stage"),
            ("implementation", "Stage 1: fast"), ("check_sfpo_sgd_step",)),
    Concept("reposition", "params.reposition",
            ("test_params.py::test_reposition_on_a_two_element_vector",
             "test_params.py::test_reposition_is_exact_at_both_ends"),
            ("02_sfpo_three_stages", "Reposition, by hand"),
            ("implementation", "Stage 2: reposition"),
            ("check_reposition", "check_interpolate_")),
    Concept("slow step", "sfpo.sfpo_update",
            ("test_sfpo.py::test_sgd_matches_the_unified_formula",
             "test_sfpo.py::test_sfpo_metrics_cover_all_three_stages"),
            ("02_sfpo_three_stages", "The step, drawn exactly"),
            ("sfpo", "The three stages"), ("check_sfpo_points",)),
    Concept("the path of a step", "records.StepPath",
            ("test_sfpo.py::test_sfpo_update_reports_its_path",
             "test_landscape.py::test_toy_step_trace_leaves_the_bandit_alone_and_is_consistent"),
            ("04_one_sfpo_step_on_an_llm", "One SFPO update"),
            ("implementation", "`sfpo_update`"), ()),
    Concept("stop rule", "sfpo.StopRule",
            ("test_sfpo.py::test_rise_fires_on_an_entropy_spike_and_not_before_the_window_fills",
             "test_sfpo.py::test_rise_does_not_fire_on_a_falling_entropy_but_abs_does"),
            ("06_reading_the_dashboards", "The stop rule and when it fires"),
            ("stop_rule", "Four rules"), ("check_entropy_zscore", "check_stop_step")),
    Concept("stop-rule replay", "sfpo.replay_stop_rule",
            ("test_sfpo.py::test_replay_stop_rule_by_hand",
             "test_sfpo.py::test_replay_stop_rule_matches_the_rule_inside_a_run",
             "test_sfpo.py::test_a_stop_rule_that_never_fires_changes_nothing"),
            ("06_reading_the_dashboards", "The stop rule and when it fires"),
            ("stop_rule", "And on a flat, noisy entropy?"), ("check_stop_step",)),
    Concept("outer-step controller", "sfpo.start_outer_step",
            ("test_sfpo.py::test_update_turns_sfpo_into_grpo_once_the_rule_fires",),
            ("06_reading_the_dashboards", "The stop rule and when it fires"),
            ("stop_rule", "Where the rule sits in a step"), ("check_effective_alpha",)),
    Concept("drift metrics", "params.drift_metrics",
            ("test_params.py::test_distances_and_drift_metrics_by_hand",),
            ("06_reading_the_dashboards", "The drift dashboard"),
            ("metrics", "The keys"), ("check_drift_metrics",)),
    Concept("reposition line", "landscape.reposition_line",
            ("test_landscape.py::test_reposition_line_hits_theta_0_theta_tilde_theta_k_exactly",),
            ("04_one_sfpo_step_on_an_llm", "The reposition line"),
            ("sfpo", "Why pull back?"), ()),
    Concept("Lookahead", "toy.lookahead_update",
            ("test_toy.py::test_lookahead_uses_fresh_batches_and_takes_no_extra_step",),
            ("02_sfpo_three_stages", "Lookahead: a relative, not the same thing"),
            ("sfpo", "Lookahead"), ("check_lookahead_sgd_step",)),
    Concept("the exact toy", "toy.ToyBandit",
            ("test_toy.py::test_expected_reward_matches_monte_carlo",),
            ("01_grpo_on_a_toy", "The exact toy"),
            ("sfpo", "The exact toy"), ("check_toy_expected_reward",)),
)  # fmt: skip


def render() -> str:
    """The Markdown of the concept map."""
    lines = [
        "# Concept map",
        "",
        "<!-- Generated by book/concepts.py from its table; do not edit by hand. -->",
        "",
        "Each concept of the course, where it lives in the code, which tests pin it, where a",
        "notebook shows it, where this book explains it and which exercise practises it.",
        "Every function's docstring points back to its book page.",
        "",
        "| concept | code | tests | notebook | book | exercise |",
        "|---|---|---|---|---|---|",
    ]
    for c in CONCEPTS:
        tests = "<br>".join(f"`{t}`" for t in c.tests)
        notebook = f"{{doc}}`notebooks/{c.notebook[0]}`: {c.notebook[1]}"
        book = f"{{doc}}`{c.book[0]}`: {c.book[1]}"
        exercises = "<br>".join(f"`{e}`" for e in c.exercises) or "–"
        lines.append(
            f"| {c.name} | `{c.function}` | {tests} | {notebook} | {book} | {exercises} |"
        )
    return "\n".join(lines) + "\n"


def write(path: Path = PAGE) -> None:
    path.write_text(render())


if __name__ == "__main__":
    write()
    print(f"wrote {PAGE.relative_to(ROOT)}")
