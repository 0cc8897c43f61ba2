"""One EBAE/EBAR adaptation step vs. one plain causal-LM step on the same tokens (CPU, float32).

Both steps are forward + backward over the same ``[batch, cutoff]`` token ids of a random Llama: the
adaptation step is ``EBAEEBARLoss`` on a batch of ``EBAEEBARDataCollator`` (built once beforehand, as the
data loader would: 4D mask, shared positions, output head at the 16 prompt positions and the text positions
only); the plain step is ``LlamaForCausalLM(input_ids, labels=input_ids)`` (full-sequence logits). Printed:
median step times and peak memory, and their ratios (adaptation / plain; target <= 1.10).

Time: steps alternate in this process after a warm-up, medians over ``--repeats`` of wall-clock and of
process CPU time (the steadier figure on a shared machine). Peak memory: each step
runs once in a fresh subprocess that loads the same model and inputs; the figure is the peak RSS during
the step minus the RSS just before it (``VmHWM`` after resetting it, Linux), median over ``--memory-repeats``.

Run: python benchmarks/adaptation_step.py [--hidden-size 256 --layers 4 --batch-size 8 --cutoff-length 128]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

import llara_st
from llara_st.losses import EBAEEBARDataCollator, EBAEEBARLoss

DEFAULT_TOKENIZER = Path(__file__).resolve().parents[2] / "shared/fixtures/llara_reference_visible/model"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER), help="A tokenizer holding <s1>…<s16>")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cutoff-length", type=int, default=128)
    parser.add_argument("--attention", choices=["sdpa", "eager"], default="sdpa")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--memory-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared CPU)")
    # Internal: run one step in this (fresh) process and print its memory as JSON.
    parser.add_argument("--measure-memory", choices=["adaptation", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# 1. Model: a random Llama with the tokenizer's vocabulary, converted to a LLaRA model.
def build_model(args: argparse.Namespace, out: Path) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        intermediate_size=args.hidden_size * 8 // 3,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=max(512, args.cutoff_length),
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    causal_dir = out / "causal_lm"
    LlamaForCausalLM(config).save_pretrained(causal_dir)
    tokenizer.save_pretrained(causal_dir)
    llara_dir = out / "llara"
    llara_st.convert(str(causal_dir), llara_dir, passage_max_length=max(160, args.cutoff_length))
    return llara_dir


# 2. Inputs: texts long enough that every row fills the cutoff, collated as the trainer would.
def load_step(args: argparse.Namespace, model_dir: str):
    torch.set_num_threads(args.threads)
    model = llara_st.load(model_dir, device="cpu", model_kwargs={"attn_implementation": args.attention})
    model.train()
    tokenizer = model[0].tokenizer
    rng = random.Random(0)
    vocab = range(100, 32000)

    def random_text() -> str:
        return tokenizer.decode([rng.choice(vocab) for _ in range(2 * args.cutoff_length)])

    collator = EBAEEBARDataCollator(model, cutoff_length=args.cutoff_length)
    collated = collator([{"text": random_text(), "next_text": random_text()} for _ in range(args.batch_size)])
    # The feature group the trainer hands the loss: the collator's keys without their prefix.
    features = [{key.removeprefix("adaptation_"): value for key, value in collated.items()}]
    loss = EBAEEBARLoss(model)
    causal_lm = model[0].causal_lm
    input_ids, attention_mask = features[0]["input_ids"], features[0]["attention_mask"]

    def adaptation_step() -> None:
        model.zero_grad(set_to_none=True)
        sum(loss(features).values()).backward()

    def plain_step() -> None:
        model.zero_grad(set_to_none=True)
        causal_lm(input_ids=input_ids, attention_mask=attention_mask, labels=input_ids, use_cache=False).loss.backward()

    return {"adaptation": adaptation_step, "plain": plain_step}, tuple(input_ids.shape), int(attention_mask.sum())


def memory_status_bytes(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process, from /proc/self/status."""
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) * 1024


def measure_memory(args: argparse.Namespace) -> None:
    steps, _, _ = load_step(args, args.model_dir)
    # Reset the peak-RSS mark to the current RSS (Linux >= 4.0): getrusage's ru_maxrss cannot be reset and
    # even carries the parent's peak over fork + exec.
    Path("/proc/self/clear_refs").write_text("5")
    before = memory_status_bytes("VmRSS")
    steps[args.measure_memory]()
    print(json.dumps({"step_peak_bytes": memory_status_bytes("VmHWM") - before}))


# 3. Time: alternate the two steps after a warm-up; 4. memory: one step per fresh subprocess.
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure_memory:
        measure_memory(args)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(args, Path(tmp))
        steps, shape, real_tokens = load_step(args, str(model_dir))
        for step in steps.values():
            step()
        wall: dict[str, list[float]] = {name: [] for name in steps}
        cpu: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.repeats):
            for name, step in steps.items():
                start_wall, start_cpu = time.perf_counter(), time.process_time()
                step()
                wall[name].append(time.perf_counter() - start_wall)
                cpu[name].append(time.process_time() - start_cpu)

        memory: dict[str, list[int]] = {name: [] for name in steps}
        for _ in range(args.memory_repeats):
            for name in steps:
                command = [sys.executable, __file__, *(argv or sys.argv[1:])]
                command += ["--measure-memory", name, "--model-dir", str(model_dir)]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                memory[name].append(json.loads(output.strip().splitlines()[-1])["step_peak_bytes"])

    wall_median = {name: statistics.median(values) for name, values in wall.items()}
    cpu_median = {name: statistics.median(values) for name, values in cpu.items()}
    memory_median = {name: statistics.median(values) for name, values in memory.items()}
    vocab_size = len(AutoTokenizer.from_pretrained(args.tokenizer))
    print(
        f"Random Llama: hidden {args.hidden_size}, {args.layers} layers, vocab {vocab_size}, "
        f"{args.attention} attention, batch {shape[0]} x {shape[1]} ({real_tokens} real tokens), "
        f"{args.threads} threads, float32 CPU"
    )
    print(f"{'step':<12}{'wall time (ms)':>16}{'CPU time (ms)':>16}{'peak memory (MiB)':>20}   (medians)")
    for name in steps:
        print(
            f"{name:<12}{wall_median[name] * 1e3:>16.1f}{cpu_median[name] * 1e3:>16.1f}"
            f"{memory_median[name] / 2**20:>20.1f}"
        )
    print(
        f"ratio adaptation / plain: wall time {wall_median['adaptation'] / wall_median['plain']:.3f}, "
        f"CPU time {cpu_median['adaptation'] / cpu_median['plain']:.3f}, "
        f"peak memory {memory_median['adaptation'] / memory_median['plain']:.3f} (target <= 1.10 each)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
