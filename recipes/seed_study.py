"""The adaptation seed study: both arms (unadapted, adapted) fine-tuned with several seeds on identical rows,
evaluated on SciFact dev and zero-shot on NFCorpus test; mean ± sd per arm and of the seed-paired effect.

Run (after, or instead of, the main job: it reuses that run's adaptation and mined rows):
    python recipes/seed_study.py recipes/configs/study_smollm2_cpu.yaml
    python recipes/seed_study.py recipes/configs/study_smollm2_cpu.yaml --stage report --force
    llara-st study recipes/configs/study_smollm2_cpu.yaml                      # the same, installed package

Each fine-tuning and evaluation is a stage (``{output_dir}/stages/``): rerun the command to resume.
"""

from __future__ import annotations

import sys

from llara_st.cli import main as llara_st


def main(argv: list[str] | None = None) -> int:
    """``llara-st study`` with this script's arguments: CONFIG [--stage NAME] [--force] [-v]; the exit code."""
    return llara_st(["study", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
