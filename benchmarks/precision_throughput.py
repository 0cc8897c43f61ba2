"""Is bfloat16 worth it on this machine? Decoder forward throughput in float32 vs bfloat16, side by side.

Run: python benchmarks/precision_throughput.py [--layers 30] [--batch-size 16] [--length 128] [--repeats 3]

A random Llama with SmolLM2-135M's shape (576 wide, 30 layers, 9 query / 3 key-value heads) is built offline;
both dtypes see the same token batch, interleaved, median of ``--repeats`` runs. Printed: tokens per second per
dtype, the bf16/fp32 time ratio, and what :func:`llara_st.training.bf16_is_fast` decides for this CPU.

bf16 halves memory everywhere, but it is fast only on CPUs with native bf16 matrix instructions (AVX512-BF16,
AMX); on AVX2-only CPUs it is emulated and several times slower than float32. Measured figures are in
docs/results/experiments.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaModel

from llara_st.training.precision import bf16_is_fast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=args.layers,
        num_attention_heads=9,
        num_key_value_heads=3,
    )
    models = {"float32": LlamaModel(config).eval()}
    models["bfloat16"] = LlamaModel(config).to(torch.bfloat16).eval()
    models["bfloat16"].load_state_dict(models["float32"].state_dict())
    tokens = torch.randint(0, config.vocab_size, (args.batch_size, args.length))
    seconds: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():  # warm-up
            model(input_ids=tokens[:1, :8])
        for _ in range(args.repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model(input_ids=tokens)
                seconds[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, value in medians.items():
        print(f"{name:9s} {value:7.2f} s  {tokens.numel() / value:8.0f} tokens/s")
    print(f"bf16/fp32 time ratio: {medians['bfloat16'] / medians['float32']:.2f}")
    print(f"torch CPU capability: {torch.backends.cpu.get_cpu_capability()}; bf16_is_fast() -> {bf16_is_fast()}")


if __name__ == "__main__":
    main()
