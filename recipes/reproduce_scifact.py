"""LLaRA end to end on one machine: does EBAE/EBAR adaptation make a better start for dense retrieval?

Run:
    python recipes/reproduce_scifact.py recipes/configs/reproduce_smollm2_scifact_cpu.yaml
    python recipes/reproduce_scifact.py recipes/configs/reproduce_smollm2_scifact_cpu.yaml --stage adapt --force
    llara-st reproduce recipes/configs/reproduce_smollm2_scifact_cpu.yaml          # the same, installed package

Stages: prepare, baselines, [zeroshot], adapt, mine, finetune_unadapted, finetune_adapted, eval_unadapted,
eval_adapted, report (``llara_st.pipelines.reproduction``). Each writes ``{output_dir}/stages/{stage}.json``; a
finished stage is never recomputed unless forced. Every number in ``{output_dir}/report/`` comes from them.
"""

from __future__ import annotations

import sys

from llara_st.cli import main as llara_st


def main(argv: list[str] | None = None) -> int:
    """``llara-st reproduce`` with this script's arguments: CONFIG [--stage NAME] [--force] [-v]; the exit code."""
    return llara_st(["reproduce", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
