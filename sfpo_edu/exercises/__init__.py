"""Exercises for the notebooks: write a function, check it against the library.

    from sfpo_edu.exercises import check_group_advantages

    def my_group_advantages(rewards, group_size):
        ...  # your code
    check_group_advantages(my_group_advantages)

Each check (``grader.Exercise``) runs your function on hand-made, random and degenerate
cases and, for the first one it fails, prints the input, the expected and the returned
value and a hint for a common mistake, never raising for your errors. ``EXERCISES`` maps
each notebook to its checks, in order; solutions: ``notebooks/solutions/``.
"""

from sfpo_edu.exercises.grpo_loss import (  # noqa: F401 (re-exported)
    check_aggregate,
    check_clipped_surrogate,
    check_group_advantages,
    check_kl_k3,
    check_toy_expected_reward,
    check_toy_policy_gradient,
)
from sfpo_edu.exercises.llm_policy import (  # noqa: F401
    check_completion_mask,
    check_last_number,
    check_per_token_logps,
)
from sfpo_edu.exercises.sfpo_step import (  # noqa: F401
    check_drift_metrics,
    check_interpolate_,
    check_lookahead_sgd_step,
    check_reposition,
    check_sfpo_points,
    check_sfpo_sgd_step,
)
from sfpo_edu.exercises.training_runs import (  # noqa: F401
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
