"""The adaptation study: both arms fine-tuned with several seeds on the reproduction run's rows and settings, then
mean ± sd per arm and of the seed-paired effect, and a paired test over queries pooled over seeds."""

from __future__ import annotations

import json
import os
import shutil
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llara_st.evaluation.sub_corpus import write_sub_corpus
from llara_st.folders import made_by_llara
from llara_st.pipelines.download import materialize_beir_folder
from llara_st.pipelines.report import markdown_table, paired_comparison
from llara_st.pipelines.reproduction import (
    ReproductionPipeline,
    StageRunner,
    load_for_evaluation,
    parse_reproduction_config,
    score_split,
)
from llara_st.training.arguments import parse_arguments
from llara_st.training.finetuning import run_finetuning

ARMS = ("unadapted", "adapted")
EVALUATION_KEYS = {"folder", "split", "corpus_size", "max_queries"}


@dataclass
class StudyConfig:
    """Settings of the seed study; ``finetune`` overrides keys of the reproduction's ``finetune:`` section."""

    reproduction_config: str = field(metadata={"help": "The reproduction config whose run is reused"})
    output_dir: str = field(default="runs/study-smollm2", metadata={"help": "Stage files, models, report"})
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3], metadata={"help": "Fine-tuning seeds per arm"})
    evaluations: list[dict[str, Any]] = field(
        default_factory=lambda: [{"folder": "../shared/data/scifact", "split": "dev"}],
        metadata={"help": "[{folder, split, corpus_size (optional), max_queries (optional)}]"},
    )
    corpus_seed: int = field(default=0, metadata={"help": "Seed of the sub-corpus samples"})
    encode_batch_size: int = field(default=32, metadata={"help": "Evaluation encoding batch size"})
    bf16: str = field(default="auto", metadata={"help": "bfloat16 for evaluation encoding: true, false or 'auto'"})
    keep_models: bool = field(default=False, metadata={"help": "Keep each fine-tuned model after its evaluation"})
    finetune: dict[str, Any] = field(default_factory=dict, metadata={"help": "Overrides of the finetune section"})

    def __post_init__(self) -> None:
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be at least two distinct seeds (for a standard deviation), got {self.seeds}")
        for position, evaluation in enumerate(self.evaluations):
            keys = set(evaluation) if isinstance(evaluation, dict) else set()
            if not {"folder", "split"} <= keys <= EVALUATION_KEYS:
                raise ValueError(
                    f"evaluations[{position}] must be {{folder, split[, corpus_size, max_queries]}}: {evaluation!r}"
                )


def parse_study_config(source: str | os.PathLike | dict[str, Any]) -> StudyConfig:
    """A :class:`StudyConfig` from a YAML/JSON file or a dict (unknown keys are an error)."""
    (config,) = parse_arguments((StudyConfig,), source)
    return config


class SeedStudy(StageRunner):
    """The stages of a :class:`StudyConfig`: ``finetune_{arm}_seed{s}`` and ``eval_{arm}_seed{s}`` for both arms
    and every seed, then ``report`` (``report/README.md`` and ``report/results.json``).

    ``run()`` runs every stage (a real study: a config such as ``recipes/configs/study_smollm2_cpu.yaml`` of the
    repository). Here one fine-tuning on a tiny model, with the reproduction stages it needs::

        >>> from pathlib import Path
        >>> from llara_st.pipelines.study import SeedStudy, parse_study_config
        >>> _ = Path("wiki.txt").write_text("Rain fills the rivers.\\n\\nThe Moon pulls the oceans into tides.")
        >>> _ = Path("reproduction.yaml").write_text(
        ...     f'''
        ... output_dir: reproduction
        ... base_model: {causal_lm_path}
        ... baseline_model: {llara_path}
        ... beir_dir: {beir_path}
        ... adapt: {{text_paths: [wiki.txt], chunk_unit: words, chunk_size: 4, max_steps: 1}}
        ... finetune: {{lora: false, max_steps: 1, group_size: 2, mining_retriever: self, mining_range_min: 0}}
        ... '''
        ... )  # mining_retriever self: mine with the model itself (default: BM25)
        >>> config = {"reproduction_config": "reproduction.yaml", "output_dir": "study", "seeds": [1, 2]}
        >>> study = SeedStudy(parse_study_config(config | {"evaluations": [{"folder": beir_path, "split": "dev"}]}))
        >>> study.run_stage("finetune_unadapted_seed1")["model"]  # the reproduction's "prepare" and "mine" run first
        {...'train_loss': ...}
        'study/models/finetune-unadapted-seed1/final'
    """

    def __init__(self, config: StudyConfig) -> None:
        self.config = config
        self.reproduction = ReproductionPipeline(parse_reproduction_config(config.reproduction_config))
        for evaluation in config.evaluations:
            materialize_beir_folder(evaluation["folder"], [evaluation["split"]])
        self.finetune_arguments("unadapted", 0, "x")  # a typo in the finetune overrides fails now
        stages: dict[str, Callable[[], dict[str, Any]]] = {}
        for seed in config.seeds:
            for arm in ARMS:
                stages[f"finetune_{arm}_seed{seed}"] = lambda arm=arm, seed=seed: self.finetune(arm, seed)
                stages[f"eval_{arm}_seed{seed}"] = lambda arm=arm, seed=seed: self.evaluate(arm, seed)
        stages["report"] = self.report
        super().__init__(config.output_dir, stages)

    def finetune_arguments(self, arm: str, seed: int, model_dir: str) -> Any:
        models, overrides = Path(self.config.output_dir) / "models", self.config.finetune | {"seed": seed}
        return self.reproduction.finetune_arguments(f"{arm}-seed{seed}", model_dir, models, overrides)

    def finetune(self, arm: str, seed: int) -> dict[str, Any]:
        stage, key = ("prepare", "llara_base") if arm == "unadapted" else ("adapt", "model")
        args = self.finetune_arguments(arm, seed, self.reproduction.result(stage)[key])
        rows = self.reproduction.result("mine")["rows"]  # identical rows for every arm and seed
        return self.train(run_finetuning, args, train_dataset=rows)

    def _evaluation_folder(self, evaluation: dict[str, Any]) -> str:
        size, queries = evaluation.get("corpus_size"), evaluation.get("max_queries")
        if not size and not queries:
            return evaluation["folder"]
        name = f"{Path(evaluation['folder']).name}-{evaluation['split']}-{size or 'all'}"
        name += f"-q{queries}" if queries else ""
        out = Path(self.config.output_dir) / "data" / name
        write_sub_corpus(
            evaluation["folder"], evaluation["split"], size, self.config.corpus_seed, out, max_queries=queries
        )
        return str(out)

    def evaluate(self, arm: str, seed: int) -> dict[str, Any]:
        model_dir = self.result(f"finetune_{arm}_seed{seed}")["model"]
        if not Path(model_dir).is_dir():  # deleted after an earlier evaluation (keep_models: false): train it again
            model_dir = self.run_stage(f"finetune_{arm}_seed{seed}", force=True)["model"]
        model = load_for_evaluation(model_dir, self.config.bf16)
        scores, per_query = {}, {}
        for evaluation in self.config.evaluations:
            result = score_split(
                model,
                self._evaluation_folder(evaluation),
                evaluation["split"],
                Path(self.config.output_dir) / "mteb",
                model_name=f"llara-st-study/{arm}-seed{seed}",
                batch_size=self.config.encode_batch_size,
                per_query=True,
                show_progress_bar=False,
            )
            scores[evaluation_name(evaluation)] = result["scores"]
            per_query[evaluation_name(evaluation)] = result["per_query"]
        if not self.config.keep_models and made_by_llara(Path(model_dir).parent):  # only a run folder it wrote
            shutil.rmtree(Path(model_dir).parent, ignore_errors=True)  # the whole fine-tuning folder
        return {"scores": scores, "per_query": per_query}

    def report(self) -> dict[str, Any]:
        results = summarise_study(
            {stage: self.result(stage) for stage in self.stages if stage.startswith("eval_")},
            self.config.seeds,
        )
        results["config"] = asdict(self.config)
        results["stage_seconds"] = {name: stage["seconds"] for name, stage in self.finished_stages().items()}
        report_dir = Path(self.config.output_dir) / "report"
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "results.json").write_text(json.dumps(results, indent=2))
        (report_dir / "README.md").write_text(study_markdown(results) + "\n")
        return {"report": str(report_dir / "README.md")}


def evaluation_name(evaluation: dict[str, Any]) -> str:
    name = f"{Path(evaluation['folder']).name} {evaluation['split']}"
    if evaluation.get("max_queries"):
        name += f" ({evaluation['max_queries']} queries)"
    return name + (f" (sub-corpus of {evaluation['corpus_size']})" if evaluation.get("corpus_size") else "")


def summarise_study(evaluations: dict[str, dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Mean ± sd of nDCG@10 per arm and of the seed-paired effect (adapted − unadapted) per evaluation set."""
    names = list(evaluations[f"eval_adapted_seed{seeds[0]}"]["scores"])
    summary: dict[str, Any] = {"seeds": seeds, "metric": "ndcg_at_10", "evaluations": {}}
    for name in names:
        per_arm = {
            arm: [evaluations[f"eval_{arm}_seed{s}"]["scores"][name]["ndcg_at_10"] for s in seeds] for arm in ARMS
        }
        per_arm["effect"] = [a - u for a, u in zip(per_arm["adapted"], per_arm["unadapted"], strict=True)]
        summary["evaluations"][name] = {
            key: {"per_seed": values, "mean": statistics.mean(values), "sd": statistics.stdev(values)}
            for key, values in per_arm.items()
        }
        if all("per_query" in evaluation for evaluation in evaluations.values()):
            # Pooled over seeds: each query's nDCG@10 averaged over the seeds, per arm, then paired over queries.
            pooled = {
                arm: {
                    query: statistics.mean(evaluations[f"eval_{arm}_seed{s}"]["per_query"][name][query] for s in seeds)
                    for query in evaluations[f"eval_{arm}_seed{seeds[0]}"]["per_query"][name]
                }
                for arm in ARMS
            }
            summary["evaluations"][name]["pooled_paired"] = paired_comparison(pooled["adapted"], pooled["unadapted"])
    return summary


def study_markdown(results: dict[str, Any]) -> str:
    lines = [
        "# LLaRA adaptation study",
        "",
        f"nDCG@10, mean ± sd over fine-tuning seeds {results['seeds']} (identical rows and settings per arm).",
        "",
        "The pooled paired test averages each query's nDCG@10 over the seeds per arm, then compares the arms over "
        "queries: bootstrap 95 % interval and two-sided randomisation-test p-value, in points.",
        "",
    ]
    rows = []
    for name, row in results["evaluations"].items():
        effect, paired = row["effect"], row.get("pooled_paired")
        pooled = ["–", "–"]
        if paired:
            interval = f"[{100 * paired['ci_low']:+.2f}, {100 * paired['ci_high']:+.2f}]"
            pooled = [f"{100 * paired['delta']:+.2f} {interval}", f"{paired['p_value']:.3f}"]
        means = [f"{row[arm]['mean']:.4f} ± {row[arm]['sd']:.4f}" for arm in ARMS]
        rows.append([name, *means, f"{100 * effect['mean']:+.2f} ± {100 * effect['sd']:.2f}", *pooled])
    header = ["evaluation", "unadapted + fine-tuned", "adapted + fine-tuned", "effect (points)", "pooled paired", "p"]
    lines += markdown_table(header, rows)
    minutes = sum(results["stage_seconds"].values()) / 60
    lines += [
        "",
        f"Wall time of the study's stages: {minutes:.1f} minutes.",
        "",
        "```json",
        json.dumps(results["config"], indent=2),
        "```",
    ]
    return "\n".join(lines)
