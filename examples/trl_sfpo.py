"""Train SFPO with TRL's GRPOTrainer: one process, or several with accelerate.

The task is sfpo_edu's easy arithmetic (a + b, reward 1 for the right last number);
the model gets LoRA adapters, and SFPO runs inside TRL (``sfpo_edu.trl``). Needs
``pip install "sfpo_edu[trl]"``.

    python examples/trl_sfpo.py --model tiny --reward digits           # seconds, CPU
    accelerate launch --multi_gpu --num_processes 2 examples/trl_sfpo.py \\
        --model tiny --reward digits              # 2 CPU processes (gloo) without GPUs
    accelerate launch --config_file examples/accelerate/multi_gpu.yaml \\
        examples/trl_sfpo.py --model smollm2-135m --steps 200 --bf16

``--model`` is ``tiny`` (random 79 K-parameter Llama: a smoke test, it learns
nothing), ``smollm2-135m`` (offline, from PyPI) or a local folder / hub name.
``--steps`` counts generation batches (the paper's outer steps s); TRL counts
K + 1 optimizer steps per batch (more with ``--steps-per-generation``).

Several CPU processes: ``accelerate launch --cpu --num_processes 2`` starts only one
process in accelerate 1.15 (its CPU launcher needs an MPI hostfile); ``--multi_gpu``
starts them with torchrun, and without CUDA this script sets ``use_cpu`` so that
they join a gloo process group (``torchrun --nproc_per_node 2`` works the same).

At the end the main process prints the world size, the logged ``sfpo/*`` rows and
whether every rank holds the same trainable weights (they must, under DDP).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch
from datasets import Dataset

from sfpo_edu.models import load_policy
from sfpo_edu.params import flatten, trainable_params
from sfpo_edu.rewards import reward
from sfpo_edu.tasks import load_task
from sfpo_edu.trl import SFPOGRPOConfig, SFPOTrainer


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="tiny, smollm2-135m, folder, hub")
    p.add_argument("--steps", type=int, default=2, help="generation batches s")
    p.add_argument("--num-fast-steps", "-K", type=int, default=3, help="K")
    p.add_argument("--alpha", type=float, default=0.8, help="α in [0, 1]")
    p.add_argument("--stop-rule", default="rise", help="rise, abs, step or never")
    p.add_argument("--stop-step", type=int, default=None)
    p.add_argument(
        "--reward",
        default="answer",
        choices=["answer", "digits"],
        help="answer: 1 if correct; digits: share of digit characters (a smoke-test "
        "reward that gives even the random tiny model non-zero advantages)",
    )
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--num-generations", type=int, default=4, help="G")
    p.add_argument(
        "--per-device-batch-size", type=int, default=4, help="completions per step"
    )
    p.add_argument("--steps-per-generation", type=int, default=1)
    p.add_argument("--max-completion-length", type=int, default=16)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--dtype", default="float32", help="weights: float32, bfloat16")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--output-dir", default="runs/trl_sfpo")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def arithmetic_dataset(n: int, seed: int) -> Dataset:
    """Chat-format prompts with their gold answers (TRL passes ``answer`` along)."""
    problems = load_task("arithmetic", n, seed=seed, split="train")
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": p.prompt}] for p in problems],
            "answer": [p.answer for p in problems],
        }
    )


def correct_answer(
    completions: list, answer: list[str], **kwargs: object
) -> list[float]:
    """1 when the completion's answer equals the gold one, else 0."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [reward(text, gold) for text, gold in zip(texts, answer, strict=True)]


def digit_share(completions: list, **kwargs: object) -> list[float]:
    """Share of digit characters in each completion."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    policy = load_policy(
        args.model,
        lora=args.lora_r > 0,
        lora_r=max(args.lora_r, 1),
        device="cpu",  # the trainer moves it to this rank's device
        dtype=args.dtype,
        seed=args.seed,
    )
    # transformers 5 renamed gradient_checkpointing (TRL's default: on)
    names = {f.name for f in dataclasses.fields(SFPOGRPOConfig)}
    checkpointing = next(
        n for n in ("activation_checkpointing", "gradient_checkpointing") if n in names
    )
    config = SFPOGRPOConfig(
        output_dir=args.output_dir,
        num_fast_steps=args.num_fast_steps,
        alpha=args.alpha,
        stop_rule=args.stop_rule,
        stop_step=args.stop_step,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        num_generations=args.num_generations,
        per_device_train_batch_size=args.per_device_batch_size,
        steps_per_generation=args.steps_per_generation,
        max_completion_length=args.max_completion_length,
        temperature=args.temperature,
        max_steps=args.steps * (args.num_fast_steps + 1) * args.steps_per_generation,
        bf16=args.bf16,
        use_cpu=not torch.cuda.is_available(),  # several CPU processes: gloo
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=args.seed,
        **{checkpointing: args.gradient_checkpointing},
    )
    trainer = SFPOTrainer(
        model=policy.model,
        reward_funcs=correct_answer if args.reward == "answer" else digit_share,
        args=config,
        train_dataset=arithmetic_dataset(256, args.seed),
        processing_class=policy.tokenizer,
    )
    trainer.train()

    # Under DDP every rank must end with the same weights: compare checksums.
    accelerator = trainer.accelerator
    weights = flatten(trainable_params(trainer.model))  # (D,)
    checksum = torch.stack([weights.sum(), weights.pow(2).sum()]).to(accelerator.device)
    sums = accelerator.gather(checksum.unsqueeze(0)).cpu()  # (world, 2)
    if accelerator.is_main_process:
        history = trainer.state.log_history
        rewards = [r["reward"] for r in history if "reward" in r]  # one per batch
        rows = [r for r in history if "sfpo/alpha" in r]  # one per batch
        backend = accelerator.state.backend or "none"  # gloo for CPU processes
        print(f"world_size={accelerator.num_processes} backend={backend}")
        for reward_mean, row in zip(rewards, rows, strict=False):
            keep = {
                k: v for k, v in row.items() if k.startswith("sfpo/") or k == "step"
            }
            print(json.dumps({"reward": reward_mean} | keep))
        print(f"ranks agree: {bool((sums == sums[0]).all())}")


if __name__ == "__main__":
    main()
