"""``llara-st adapt|finetune|reproduce|study CONFIG``: the training workflows of ``llara_st.training``, the same
functions the recipes call, for a ``pip install llara-st`` user who has no ``recipes/`` folder."""

from __future__ import annotations

import argparse

from llara_st.cli import add_command


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


_WORKFLOWS = (  # name, function, help, example config in recipes/configs
    ("adapt", _adapt, "EBAE/EBAR adaptation of a causal LM (AdaptationArguments)", "adapt_smollm2_cpu.yaml"),
    ("finetune", _finetune, "contrastive fine-tuning (FinetuneArguments)", "finetune_smollm2_scifact_cpu.yaml"),
    ("reproduce", _reproduce, "the end-to-end reproduction pipeline", "reproduce_smollm2_scifact_cpu.yaml"),
    ("study", _study, "the adaptation seed study (both arms x seeds)", "study_smollm2_cpu.yaml"),
)
_STAGED = ("reproduce", "study")  # resumable by stage


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    for name, func, help_text, config_example in _WORKFLOWS:
        # A workflow runs for minutes to days: its own progress (stages, rows, saved folders) is logged without -v.
        parser = add_command(subparsers, name, func, help_text, progress_logs=True)
        parser.add_argument("config", help=f"YAML/JSON config (e.g. recipes/configs/{config_example})")
        if name in _STAGED:
            parser.add_argument("--stage", help="run only this stage (and the unfinished stages it needs)")
            parser.add_argument("--force", action="store_true", help="recompute the stage even if it is finished")
