"""The model card (``README.md``) of a saved LLaRA model, written by sentence-transformers' model-card machinery."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentence_transformers import SentenceTransformerModelCardData

from llara_st.citation import LLARA_CITATION, LLARA_REFERENCE

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# What the card says the model is for; sentence-transformers' template puts it in its first paragraph.
LLARA_TASK_NAME = (
    "dense retrieval. It is a [LLaRA](" + LLARA_REFERENCE + ") embedder (Li et al., 2023): a decoder-only language "
    'model that reads a query as `"{query}", predict the following passage within eight words: <s9>…<s16>` and a '
    'document as `"{document}", summarize the above passage within eight words: <s1>…<s8>`, and embeds it as the '
    "L2-normalised mean of its last hidden states at those eight tokens. Embed queries with `encode_query` and "
    "documents with `encode_document`; loading it needs the `llara-st` package (`pip install llara-st`)"
)
_LLARA_TAGS = (
    "sentence-transformers", "sentence-similarity", "feature-extraction", "dense", "llara", "llara-st",
    "dense-retrieval",
)  # fmt: skip
_PLACEHOLDER_MODEL_ID = "sentence_transformers_model_id"  # the placeholder sentence-transformers fills in on push


@dataclass
class LLaRAModelCardData(SentenceTransformerModelCardData):
    """Model card data of a LLaRA embedder: sentence-transformers' card, told that the model is LLaRA.

    Every LLaRA model of :mod:`llara_st` carries one, so its ``README.md`` says what the model is, that it needs
    ``pip install llara-st``, how to embed queries and documents, evaluation results (:meth:`add_evaluation_results`)
    and the LLaRA citation (Li et al., 2023, arXiv:2312.15503). It takes the fields of
    :class:`~sentence_transformers.SentenceTransformerModelCardData` (``license``, ...).

    Example::

        >>> from pathlib import Path
        >>> import llara_st
        >>> from llara_st.model_card import LLaRAModelCardData
        >>> model = llara_st.build_llara_model(  # e.g. "HuggingFaceTB/SmolLM2-135M"
        ...     causal_lm_path, model_card_data=LLaRAModelCardData(license="apache-2.0")
        ... )
        >>> model.model_card_data.add_evaluation_results("SciFact", {"ndcg_at_10": 0.61}, split="test")
        >>> model.save("llara-smollm2")
        >>> card = Path("llara-smollm2/README.md").read_text(encoding="utf8")
        >>> "license: apache-2.0" in card, "| ndcg_at_10 | 0.6100 |" in card, "2312.15503" in card
        (True, True, True)
    """

    task_name: str = LLARA_TASK_NAME
    tags: list[str] = field(default_factory=lambda: list(_LLARA_TAGS))
    evaluation_results: list[dict[str, Any]] = field(default_factory=list)

    def register_model(self, model: SentenceTransformer) -> None:
        super().register_model(model)
        # LLaRA picks its templates by task, not saved prompts: tell sentence-transformers the model is asymmetric.
        self.ir_model = True

    def add_evaluation_results(
        self,
        dataset: str,
        metrics: dict[str, float],
        *,
        split: str | None = None,
        evaluated_with: str = "mteb",
    ) -> None:
        """Record scores measured outside the trainer (e.g. with MTEB; ``metrics``: name → value) for the card's
        Evaluation section; ``evaluated_with`` names what computed them."""
        if not metrics:
            raise ValueError(f"add_evaluation_results got no metrics for {dataset!r}")
        self.evaluation_results.append(
            {"dataset": dataset, "split": split, "metrics": dict(metrics), "evaluated_with": evaluated_with}
        )

    def try_to_set_base_model(self) -> None:
        """sentence-transformers' Hub check, else (offline) the converted causal LM's Hub id, if its path says it."""
        super().try_to_set_base_model()
        if self.base_model:
            return
        backbone = getattr(self.model, "transformers_model", None)
        source = _hub_source(getattr(getattr(backbone, "config", None), "_name_or_path", None) or "")
        if source is not None:
            self.base_model, self.base_model_revision = source

    def get_default_model_name(self) -> str:
        return f"LLaRA embedder based on {self.base_model}" if self.base_model else "LLaRA embedder"

    def generate_usage_snippet(self) -> str:
        model_id = self.model_id or _PLACEHOLDER_MODEL_ID
        examples = self.usage_examples_display or self.usage_examples or []
        query = examples[0] if examples else "Which planet is known as the Red Planet?"
        documents = examples[1:] or ["Mars, known for its reddish appearance, is often referred to as the Red Planet."]
        dimension = self._get_snippet_output_dimensionality()
        lines = [
            "from sentence_transformers import SentenceTransformer",
            "",
            "# LLaRA's input module lives in llara-st; trust_remote_code=True lets sentence-transformers import it.",
            f'model = SentenceTransformer("{model_id}", trust_remote_code=True)',
            "# or, with no flag (safetensors and llara_st/sentence-transformers classes only):",
            "# import llara_st",
            f'# model = llara_st.load("{model_id}")',
            "",
            "queries = [",
            f"    {query!r},",
            "]",
            "documents = [",
            *(f"    {document!r}," for document in documents),
            "]",
            "query_embeddings = model.encode_query(queries)  # LLaRA's query template",
            "document_embeddings = model.encode_document(documents)  # LLaRA's passage template",
            "print(query_embeddings.shape, document_embeddings.shape)",
            f"# [1, {dimension}] [{len(documents)}, {dimension}]",
            "",
            "similarities = model.similarity(query_embeddings, document_embeddings)",
        ]
        lines += ["print(similarities)", self.similarities] if self.similarities else ["print(similarities.shape)"]
        install = (
            "This is a LLaRA model: it needs the `llara-st` package, which brings sentence-transformers with it "
            "(without it, loading fails with `ModuleNotFoundError: No module named 'llara_st'`).\n\n"
            "```bash\npip install llara-st\n```\n"
        )
        return install + "```python\n" + "\n".join(lines) + "\n```"

    def to_dict(self) -> dict[str, Any]:
        # set_losses replaces the citations, and every card is rendered from to_dict: cite LLaRA here.
        if LLARA_CITATION not in self.citations.values():
            self.citations = {"LLaRA": LLARA_CITATION, **self.citations}
        card = super().to_dict()  # also cached for to_yaml, so the additions below reach the front matter too
        if self.evaluation_results:
            card["eval_metrics"] = list(card.get("eval_metrics") or []) + [
                _evaluation_table(result) for result in self.evaluation_results
            ]
        return card


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _hub_source(name_or_path: str) -> tuple[str, str | None] | None:
    """``(hub id, revision)`` of a Hub id or a Hugging Face cache snapshot folder; ``None`` for other folders."""
    path = Path(name_or_path)
    if len(path.parts) >= 3 and path.parts[-2] == "snapshots" and path.parts[-3].startswith("models--"):
        repository = path.parts[-3].removeprefix("models--")
        if "--" in repository:
            return repository.replace("--", "/", 1), path.parts[-1]
    if _HUB_ID.match(name_or_path) and not path.exists():
        return name_or_path, None
    return None


def _evaluation_table(result: dict[str, Any]) -> dict[str, Any]:
    rows = ["| Metric | Value |", "|:--|:--|"]
    rows += [
        f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |"
        for name, value in result["metrics"].items()
    ]
    dataset = result["dataset"] + (f" ({result['split']})" if result.get("split") else "")
    return {
        "class_name": result.get("evaluated_with") or "mteb",
        "description": "Retrieval",
        "dataset_name": dataset,
        "config_code": "",
        "table": "\n".join(rows),
    }


def use_llara_model_card(model: SentenceTransformer) -> LLaRAModelCardData:
    """Give a LLaRA ``model`` loaded without :mod:`llara_st` (e.g. ``SentenceTransformer(path,
    trust_remote_code=True)``) a :class:`LLaRAModelCardData` keeping what its card data was told, and return it.

    Example::

        >>> from sentence_transformers import SentenceTransformer
        >>> from llara_st.model_card import use_llara_model_card
        >>> model = SentenceTransformer(llara_path, trust_remote_code=True)
        >>> card_data = use_llara_model_card(model)
        >>> model.model_card_data is card_data, "LLaRA" in card_data.task_name
        (True, True)
    """
    current = model.model_card_data
    if isinstance(current, LLaRAModelCardData):
        return current
    given = {
        spec.name: getattr(current, spec.name)
        for spec in dataclasses.fields(SentenceTransformerModelCardData)
        if spec.init and spec.name not in ("task_name", "tags") and hasattr(current, spec.name)
    }
    card_data = LLaRAModelCardData(**given)
    card_data.add_tags([tag for tag in current.tags if tag not in card_data.tags])
    model.model_card_data = card_data
    card_data.register_model(model)
    return card_data


__all__ = ["LLARA_TASK_NAME", "LLaRAModelCardData", "use_llara_model_card"]
