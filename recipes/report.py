"""Rewrite the reproduction report from a run's stage files (no stage is recomputed).

Run:
    python recipes/report.py recipes/configs/reproduce_smollm2_scifact_cpu.yaml
"""

from __future__ import annotations

import sys

from llara_st.pipelines.reproduction import ReproductionPipeline, parse_reproduction_config


def main(argv: list[str] | None = None) -> None:
    (config_path,) = sys.argv[1:] if argv is None else argv
    pipeline = ReproductionPipeline(parse_reproduction_config(config_path))
    print(pipeline.run_stage("report", force=True)["report"])


if __name__ == "__main__":
    main()
