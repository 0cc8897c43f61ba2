"""The adaptation seed study: both arms (unadapted, adapted) fine-tuned with several seeds on identical rows,
evaluated on SciFact dev and zero-shot on NFCorpus test; mean ± sd per arm and of the seed-paired effect.

Run (after, or instead of, the main job: it reuses that run's adaptation and mined rows):
    python recipes/seed_study.py recipes/configs/study_smollm2_cpu.yaml
    python recipes/seed_study.py recipes/configs/study_smollm2_cpu.yaml --stage report --force
    llara-st study recipes/configs/study_smollm2_cpu.yaml                      # the same, installed package

Each fine-tuning and evaluation is a stage (``{output_dir}/stages/``): rerun the command to resume.
"""

from __future__ import annotations

import argparse
import logging

from llara_st.training.study import SeedStudy, parse_study_config


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="YAML/JSON study config")
    parser.add_argument("--stage", help="Run only this stage (and the unfinished stages it needs)")
    parser.add_argument("--force", action="store_true", help="Recompute the stage even if it is finished")
    args = parser.parse_args(argv)
    SeedStudy(parse_study_config(args.config)).run(only=args.stage, force=args.force)


if __name__ == "__main__":
    main()
