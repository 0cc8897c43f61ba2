"""``llara-st adapt|finetune|reproduce|study CONFIG``: the training workflows of ``llara_st.training``, the same
functions the recipes call, for a ``pip install llara-st`` user who has no ``recipes/`` folder."""

from __future__ import annotations

import argparse


def _adapt(args: argparse.Namespace) -> int:
    from llara_st.training import parse_adaptation_arguments, run_adaptation

    print(run_adaptation(*parse_adaptation_arguments(args.config)))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from llara_st.training import parse_finetune_arguments, run_finetuning

    (finetune_args,) = parse_finetune_arguments(args.config)
    print(run_finetuning(finetune_args))
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from llara_st.pipelines.reproduction import ReproductionPipeline, parse_reproduction_config

    ReproductionPipeline(parse_reproduction_config(args.config)).run(only=args.stage, force=args.force)
    return 0


def _study(args: argparse.Namespace) -> int:
    from llara_st.pipelines.study import SeedStudy, parse_study_config

    SeedStudy(parse_study_config(args.config)).run(only=args.stage, force=args.force)
    return 0


_WORKFLOWS = (  # name, function, help, example config, resumable by stage
    (
        "adapt",
        _adapt,
        "EBAE/EBAR adaptation of a causal LM / LLaRA model (AdaptationArguments: the trainer's arguments and LLaRA's)",
        "adapt_smollm2_cpu.yaml",
        False,
    ),
    (
        "finetune",
        _finetune,
        "contrastive fine-tuning with hard negatives, LoRA or full (FinetuneArguments)",
        "finetune_smollm2_scifact_cpu.yaml",
        False,
    ),
    (
        "reproduce",
        _reproduce,
        "the end-to-end reproduction pipeline, resumable by stage",
        "reproduce_smollm2_scifact_cpu.yaml",
        True,
    ),
    (
        "study",
        _study,
        "the adaptation seed study (both arms x seeds), resumable by stage",
        "study_smollm2_cpu.yaml",
        True,
    ),
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    for name, func, help_text, config_example, staged in _WORKFLOWS:
        # A workflow runs for minutes to days: its own progress (stages, rows, saved folders) is logged without -v.
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        parser.set_defaults(func=func, progress_logs=True)
        parser.add_argument("config", help=f"YAML/JSON config (e.g. recipes/configs/{config_example})")
        if staged:
            parser.add_argument("--stage", help="run only this stage (and the unfinished stages it needs)")
            parser.add_argument("--force", action="store_true", help="recompute the stage even if it is finished")
