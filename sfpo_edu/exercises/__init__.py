"""Exercises for the notebooks: write a function, check it against the library.

    from sfpo_edu.exercises import check_group_advantages

    def my_group_advantages(rewards, group_size):
        ...  # your code
    check_group_advantages(my_group_advantages)

A check runs your function on hand-made, random and degenerate cases and compares each
answer with the library's. For the first case that fails it prints the input, what was
expected and what came back, and a hint when the answer is a common mistake. It never
raises, so an unfinished skeleton does not stop a notebook.

Each check is data (``grader.Exercise``): a reference function, its cases and its
common mistakes as (wrong function, hint) pairs, in one module per topic. ``EXERCISES``
maps each notebook to its checks, in order; solutions: ``notebooks/solutions/``.
"""

from sfpo_edu.exercises.grpo_loss import (
    check_aggregate,
    check_clipped_surrogate,
    check_group_advantages,
    check_kl_k3,
    check_toy_expected_reward,
    check_toy_policy_gradient,
)
from sfpo_edu.exercises.llm_policy import (
    check_completion_mask,
    check_last_number,
    check_per_token_logps,
)
from sfpo_edu.exercises.sfpo_step import (
    check_drift_metrics,
    check_interpolate_,
    check_lookahead_sgd_step,
    check_reposition,
    check_sfpo_points,
    check_sfpo_sgd_step,
)
from sfpo_edu.exercises.training_runs import (
    check_effective_alpha,
    check_entropy_zscore,
    check_moving_average,
    check_optimizer_steps,
    check_rollouts_per_step,
    check_stop_step,
)

EXERCISES: dict[str, list[str]] = {
    "01_grpo_on_a_toy": ["check_group_advantages", "check_clipped_surrogate",
                         "check_toy_policy_gradient"],
    "02_sfpo_three_stages": ["check_reposition", "check_sfpo_sgd_step",
                             "check_lookahead_sgd_step", "check_sfpo_points"],
    "03_the_llm_policy": ["check_per_token_logps", "check_completion_mask",
                          "check_last_number"],
    "04_one_sfpo_step_on_an_llm": ["check_aggregate", "check_kl_k3",
                                   "check_interpolate_"],
    "05_train_grpo_vs_sfpo": ["check_moving_average", "check_optimizer_steps"],
    "06_reading_the_dashboards": ["check_entropy_zscore", "check_stop_step",
                                  "check_drift_metrics"],
    "07_hyperparameter_lab": ["check_toy_expected_reward", "check_rollouts_per_step",
                              "check_effective_alpha"],
}  # fmt: skip
__all__ = [
    "EXERCISES",
    "check_aggregate",
    "check_clipped_surrogate",
    "check_completion_mask",
    "check_drift_metrics",
    "check_effective_alpha",
    "check_entropy_zscore",
    "check_group_advantages",
    "check_interpolate_",
    "check_kl_k3",
    "check_last_number",
    "check_lookahead_sgd_step",
    "check_moving_average",
    "check_optimizer_steps",
    "check_per_token_logps",
    "check_reposition",
    "check_rollouts_per_step",
    "check_sfpo_points",
    "check_sfpo_sgd_step",
    "check_stop_step",
    "check_toy_expected_reward",
    "check_toy_policy_gradient",
]
