"""LLaRA adaptation (EBAE + EBAR, Li et al., 2023, arXiv:2312.15503) of a causal LM with sentence-transformers.

Run:
    python recipes/adapt.py recipes/configs/adapt_smollm2_cpu.yaml
    accelerate launch --config_file recipes/configs/accelerate_8gpu_zero1.yaml \\
        recipes/adapt.py recipes/configs/adapt_llama2_7b_8gpu.yaml
    torchrun --nproc_per_node 2 recipes/adapt.py my_config.json
    python recipes/adapt.py --model_name_or_path llara-base --wikitext_paths wiki.train.raw --output_dir out
    llara-st adapt recipes/configs/adapt_smollm2_cpu.yaml          # the same, from an installed package

The config (JSON or YAML) holds the keys of ``llara_st.training.AdaptationArguments``: sentence-transformers'
``SentenceTransformerTrainingArguments`` plus the adaptation's model, data, loss and LoRA settings. It prints the
folder of the adapted LLaRA model.
"""

from __future__ import annotations

import logging
import sys

from llara_st.training import parse_adaptation_arguments, run_adaptation


def main(argv: list[str] | None = None) -> str:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    argv = sys.argv[1:] if argv is None else argv
    # 1-8 (model, loss, data, arguments, evaluate, train, evaluate, save) run inside run_adaptation.
    (args,) = parse_adaptation_arguments(argv[0] if len(argv) == 1 else argv)
    model_dir = run_adaptation(args)
    print(model_dir)
    return model_dir


if __name__ == "__main__":
    main()
