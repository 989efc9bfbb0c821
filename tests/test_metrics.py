"""Run files: durable JSONL lines, torn-line recovery, truncation on resume."""

import json

import pytest

from sfpo_edu.metrics import RunLogger, atomic_write_text, comparison_table, load_run


def test_log_and_load(tmp_path):
    logger = RunLogger(tmp_path / "r", config={"algo": "sfpo"})
    logger.log({"step": 0, "reward/mean": 0.25, "kl/theta_k": float("nan")})
    logger.log({"step": 1, "reward/mean": 0.5})
    logger.log_samples([{"step": 0, "completion": "4", "reward": 1.0}])
    run = load_run(tmp_path / "r", samples=True)
    assert run.config == {"algo": "sfpo"} and run.name == "r"
    assert run.series("reward/mean") == ([0, 1], [0.25, 0.5])
    assert run.metrics[0]["kl/theta_k"] is None  # NaN is not valid JSON: stored as null
    assert run.series("kl/theta_k") == ([], [])
    assert run.samples[0]["completion"] == "4"
    assert "reward/mean" in run.keys()


def test_torn_last_line_is_ignored_and_truncate_after(tmp_path):
    logger = RunLogger(tmp_path, config={})
    for step in range(4):
        logger.log({"step": step, "x": step})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "x"')  # killed mid-write
    assert [r["step"] for r in load_run(tmp_path).metrics] == [0, 1, 2, 3]
    logger.truncate_after(1)
    assert [r["step"] for r in load_run(tmp_path).metrics] == [0, 1]
    assert (tmp_path / "metrics.jsonl").read_text().endswith("\n")


def test_bad_line_in_the_middle_names_file_and_line(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        load_run(tmp_path)


def test_missing_run_folder_explains_itself(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        load_run(tmp_path / "nope")


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "a" / "config.json"
    atomic_write_text(path, json.dumps({"a": 1}))
    atomic_write_text(path, json.dumps({"a": 2}))
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]


def test_old_grpo_runs_read_their_one_pass_as_pass(tmp_path):
    """Runs recorded before plain GRPO logged ``pass/…`` (data/runs) read the same."""
    for algo in ["grpo", "sfpo"]:
        logger = RunLogger(tmp_path / algo, config={"algo": algo})
        logger.log({"step": 0, "slow/loss": 0.5, "sfpo/alpha": 0.0})
    assert load_run(tmp_path / "grpo").metrics[0] == {
        "step": 0,
        "pass/loss": 0.5,
        "sfpo/alpha": 0.0,
    }
    assert "slow/loss" in load_run(tmp_path / "sfpo").metrics[0]  # SFPO keeps its name


def test_comparison_table_gives_reward_and_entropy_first_and_last_three_steps(tmp_path):
    runs = {}
    for algo, fall in (("grpo", 0.0), ("sfpo", 0.1)):
        logger = RunLogger(
            tmp_path / algo, config={"algo": algo, "extra": {"wall_s": 90}}
        )
        for s in range(6):
            row = {"reward/mean": s / 10, "sfpo/entropy": 0.9 - fall * s}
            acc = {0: {"eval/accuracy": 0.25}, 5: {"eval/accuracy": 0.5}}.get(s, {})
            logger.log({"step": s, **row, "rollouts/total": 16 * (s + 1), **acc})
        runs[algo] = load_run(tmp_path / algo)
    lines = comparison_table(runs).splitlines()
    assert "entropy" in lines[0]
    # reward: mean of steps 0-2 = 0.1, of steps 3-5 = 0.4; entropy 0.9 - 0.1 * (1, 4)
    assert lines[2].split() == ["GRPO", "0.10", "→", "0.40", "0.90", "→", "0.90", "0.25→0.50", "96", "1.5"]  # fmt: skip
    assert lines[3].split() == ["SFPO", "0.10", "→", "0.40", "0.80", "→", "0.50", "0.25→0.50", "96", "1.5"]  # fmt: skip


def test_comparison_table_of_a_run_shorter_than_three_steps(tmp_path):
    # --quick runs 2 steps: the means were divided by 3 anyway (4.54 shown as 3.02)
    logger = RunLogger(tmp_path / "grpo", config={"algo": "grpo"})
    for s, (reward, entropy) in enumerate([(0.25, 4.5), (0.75, 4.7)]):
        logger.log({"step": s, "reward/mean": reward, "sfpo/entropy": entropy})
    line = comparison_table({"grpo": load_run(tmp_path / "grpo")}).splitlines()[2]
    assert line.split()[1:7] == ["0.50", "→", "0.50", "4.60", "→", "4.60"]


def test_evaluations_sit_at_the_rollouts_used_before_them(tmp_path):
    # the row of step s evaluates before step s but counts the rollouts after it, and
    # the final row repeats the last count: plotted as they were, one point was lost
    logger = RunLogger(tmp_path / "run", config={"num_prompts": 2, "group_size": 4})
    for step, total, acc in [(0, 8, 0.1), (1, 16, None), (2, 24, 0.3), (3, 24, 0.5)]:
        row = {"step": step, "rollouts/total": total, "reward/mean": 0.5}
        logger.log(row | ({"eval/accuracy": acc} if acc is not None else {}))
    run = load_run(tmp_path / "run")
    assert run.series("eval/accuracy", "rollouts/total") == (
        [0, 16, 24],
        [0.1, 0.3, 0.5],
    )
    assert run.series("reward/mean", "rollouts/total")[0] == [8, 16, 24, 24]
    assert run.series("eval/accuracy") == ([0, 2, 3], [0.1, 0.3, 0.5])


def test_every_config_field_either_makes_an_arm_or_is_bookkeeping():
    import dataclasses

    from sfpo_edu.config import SFPOConfig
    from sfpo_edu.metrics import ARM_FIELDS, NOT_ARM_FIELDS

    fields = [f.name for f in dataclasses.fields(SFPOConfig)]
    assert sorted(ARM_FIELDS + NOT_ARM_FIELDS) == sorted(fields)


def test_runs_that_differ_in_a_loss_setting_are_not_pooled_as_seeds(tmp_path):
    # clip_eps, loss_agg, temperature, ... were not arm fields: a sweep over one of
    # them was drawn as one arm with a band across its settings
    from sfpo_edu.metrics import group_runs
    from sfpo_edu.plotting import label_arms

    runs = []
    for name, changes in [("a-s0", {"clip_eps": 0.1}), ("a-s1", {"clip_eps": 0.1, "seed": 1}),
                          ("b-s0", {"clip_eps": 0.3})]:  # fmt: skip
        config = {"algo": "sfpo", "alpha": 0.8, "seed": 0, "num_threads": 2} | changes
        RunLogger(tmp_path / name, config=config).log({"step": 0, "reward/mean": 0.5})
        runs.append(load_run(tmp_path / name))
    assert [len(g) for g in group_runs(runs).values()] == [2, 1]
    assert list(label_arms(runs)) == ["SFPO α=0.8, clip_eps=0.1", "SFPO α=0.8, clip_eps=0.3"]  # fmt: skip
