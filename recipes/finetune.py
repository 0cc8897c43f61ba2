"""Contrastive fine-tuning of a LLaRA retriever with hard negatives (Li et al., 2023, arXiv:2312.15503, §3).

InfoNCE (temperature 0.01 by default) of each query against its positive, its mined hard negatives and every
other passage in the batch; LoRA (r 64, alpha 16, all seven projections) with the ``<sK>`` rows trainable and
merged on save (``lora_save: merged``), or full fine-tuning (``lora: false``).

Run:
    python recipes/finetune.py recipes/configs/finetune_smollm2_scifact_cpu.yaml
    torchrun --nproc_per_node 8 recipes/finetune.py recipes/configs/finetune_llama2_7b_msmarco_8gpu.yaml
    python recipes/finetune.py --model_name_or_path llara-base --train_data ../shared/data/scifact --output_dir out
    llara-st finetune recipes/configs/finetune_smollm2_scifact_cpu.yaml   # the same, from an installed package

The config holds the keys of ``llara_st.training.FinetuneArguments``: sentence-transformers' training arguments
plus the model, data, mining, loss and LoRA settings. It prints the folder of the fine-tuned model.
"""

from __future__ import annotations

import logging
import sys

from llara_st.training import parse_finetune_arguments, run_finetuning


def main(argv: list[str] | None = None) -> str:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    argv = sys.argv[1:] if argv is None else argv
    (args,) = parse_finetune_arguments(argv[0] if len(argv) == 1 else argv)
    # Model, data (mined hard negatives), loss, evaluation before, training, evaluation after, save.
    model_dir = run_finetuning(args)
    print(model_dir)
    return model_dir


if __name__ == "__main__":
    main()
