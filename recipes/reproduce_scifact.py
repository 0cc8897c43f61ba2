"""LLaRA end to end on one machine: does EBAE/EBAR adaptation make a better start for dense retrieval?

Run:
    python recipes/reproduce_scifact.py recipes/configs/reproduce_smollm2_scifact_cpu.yaml
    python recipes/reproduce_scifact.py recipes/configs/reproduce_smollm2_scifact_cpu.yaml --stage adapt --force
    llara-st reproduce recipes/configs/reproduce_smollm2_scifact_cpu.yaml          # the same, installed package

Stages: prepare, baselines, [zeroshot], adapt, mine, finetune_unadapted, finetune_adapted, eval_unadapted,
eval_adapted, report (``llara_st.training.reproduction``). Each writes ``{output_dir}/stages/{stage}.json``; a
finished stage is never recomputed unless forced. Every number in ``{output_dir}/report/`` comes from them.
"""

from __future__ import annotations

import argparse
import logging

from llara_st.training.reproduction import ReproductionPipeline, parse_reproduction_config


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="YAML/JSON reproduction config")
    parser.add_argument("--stage", help="Run only this stage (and the unfinished stages it needs)")
    parser.add_argument("--force", action="store_true", help="Recompute the stage even if it is finished")
    args = parser.parse_args(argv)
    pipeline = ReproductionPipeline(parse_reproduction_config(args.config))
    pipeline.run(only=args.stage, force=args.force)


if __name__ == "__main__":
    main()
