"""The reproduction report from the stage files alone: scores per variant and split, the adaptation effect (paired
bootstrap interval, randomisation test), wall time per stage, plots and the configuration."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from llara_st.training.precision import describe_machine

#: Label of each variant, the stage holding it, and the key of its scores in that stage's result.
VARIANTS = [
    ("BM25 (bm25s, stemmed)", "baselines", "bm25"),
    ("all-MiniLM-L6-v2", "baselines", "all-MiniLM-L6-v2"),
    ("LLaRA zero-shot (converted, untrained)", "zeroshot", "scores"),
    ("LLaRA unadapted + fine-tuned", "eval_unadapted", "scores"),
    ("LLaRA adapted + fine-tuned", "eval_adapted", "scores"),
]
#: Stages the main job's wall time is made of: every stage but those run only on request.
ON_REQUEST_STAGES = ("full_corpus",)
#: Label of each variant in the on-request full-corpus stage, and the key of its scores there.
FULL_CORPUS_VARIANTS = [
    ("BM25 (bm25s, stemmed)", "bm25"),
    ("all-MiniLM-L6-v2", "all-MiniLM-L6-v2"),
    ("LLaRA adapted + fine-tuned", "adapted-finetuned"),
]


def paired_comparison(
    treatment: Mapping[str, float], control: Mapping[str, float], resamples: int = 10_000, seed: int = 0
) -> dict[str, float]:
    """Mean per-query difference ``treatment - control`` (``{query_id: score}`` each, e.g. nDCG@10) over the queries
    both score, with a paired bootstrap 95 % interval and the two-sided p-value of a paired randomisation (sign-flip)
    test, each from ``resamples`` draws seeded by ``seed``::

        >>> from llara_st.pipelines.report import paired_comparison
        >>> effect = paired_comparison({"q1": 0.9, "q2": 0.5, "q3": 0.7}, {"q1": 0.8, "q2": 0.5, "q3": 0.4})
        >>> round(effect["delta"], 4), effect["num_queries"]
        (0.1333, 3)
        >>> effect["ci_low"] <= effect["delta"] <= effect["ci_high"] and effect["p_value"] > 0.05  # too few queries
        True
    """
    common = sorted(set(treatment) & set(control))
    if not common:
        raise ValueError("the two systems share no query: nothing to compare")
    differences = np.array([treatment[q] - control[q] for q in common], dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(differences), size=(resamples, len(differences)))].mean(axis=1)
    signs = rng.choice((-1.0, 1.0), size=(resamples, len(differences)))
    flipped = np.abs((signs * differences).mean(axis=1))
    observed = differences.mean()
    return {
        "delta": float(observed),
        "ci_low": float(np.percentile(means, 2.5)),
        "ci_high": float(np.percentile(means, 97.5)),
        "p_value": float((np.sum(flipped >= abs(observed) - 1e-12) + 1) / (resamples + 1)),
        "num_queries": len(common),
    }


def evaluated_corpus(config: Mapping[str, Any]) -> str:
    """``"full"`` or ``"sub"``: the corpus a reproduction config's evaluation stages score on."""
    return "full" if config.get("eval_corpus_size") is None else "sub"


def collect_results(
    stages: dict[str, dict[str, Any]],
    config: dict[str, Any],
    metrics: Mapping[str, str],
    resamples: int = 10_000,
    machine: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The machine-readable results: ``variants`` → label → split → corpus (``"full"`` or ``"sub"``) → metrics,
    transfer scores, the adaptation ``effect`` → split → ``{mean, ci_low, ci_high, p_value, ...}`` in nDCG@10 points,
    wall time per stage, the main job's minutes, the machine and the configuration."""
    variants: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for label, stage, scores_key in VARIANTS:
        if stage in stages:
            corpus = stages[stage]["result"].get("corpus", "full")
            for split, scores in stages[stage]["result"][scores_key].items():
                variants.setdefault(label, {}).setdefault(split, {})[corpus] = {key: scores[key] for key in metrics}
    if "full_corpus" in stages:
        full = stages["full_corpus"]["result"]
        for label, key in FULL_CORPUS_VARIANTS:
            variants.setdefault(label, {}).setdefault(full["split"], {})["full"] = {k: full[key][k] for k in metrics}
    transfer = {
        label: {
            name: {key: value["scores"][key] for key in metrics}
            for name, value in stages[stage]["result"].get("transfer", {}).items()
        }
        for label, stage, _ in VARIANTS
        if stage in stages and stages[stage]["result"].get("transfer")
    }
    effect: dict[str, Any] = {}
    if "eval_adapted" in stages and "eval_unadapted" in stages:
        adapted, unadapted = stages["eval_adapted"]["result"], stages["eval_unadapted"]["result"]
        pairs = [
            (split, adapted["per_query"][split], unadapted["per_query"][split], adapted.get("corpus", "full"))
            for split in adapted["per_query"]
            if split in unadapted["per_query"]
        ]
        pairs += [
            (f"transfer:{name}", value["per_query"], unadapted["transfer"][name]["per_query"], "full")
            for name, value in adapted.get("transfer", {}).items()
            if name in unadapted.get("transfer", {})
        ]
        for name, treatment, control, corpus in pairs:
            c = paired_comparison(treatment, control, resamples=resamples)
            points = {"mean": 100 * c["delta"], "ci_low": 100 * c["ci_low"], "ci_high": 100 * c["ci_high"]}
            effect[name] = points | {"p_value": c["p_value"], "num_queries": c["num_queries"], "corpus": corpus}
    stage_seconds = {name: stage["seconds"] for name, stage in stages.items()}
    main_job = [seconds for name, seconds in stage_seconds.items() if name not in ON_REQUEST_STAGES]
    return {
        "metric_of_effect": "ndcg_at_10 (points: 100 x difference)",
        "main_job_minutes": sum(main_job) / 60,
        "machine": machine,
        "variants": variants,
        "transfer": transfer,
        "effect": effect,
        "stage_seconds": stage_seconds,
        "config": config,
    }


def markdown_table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """A markdown table's lines: the first ``left`` columns aligned left, the others right."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * left + "---:|" * (len(header) - left)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _score_table(results: dict[str, Any], corpus: str, splits: list[str], metrics: Mapping[str, str]) -> list[str]:
    columns = [(split, key) for split in splits for key in metrics]
    rows = [
        [label, *(f"{by[split][corpus][key]:.4f}" if corpus in by.get(split, {}) else "–" for split, key in columns)]
        for label, by in results["variants"].items()
        if any(corpus in by.get(split, {}) for split in splits)
    ]
    return markdown_table(["variant", *(f"{split} {metrics[key]}" for split, key in columns)], rows)


def _markdown(results: dict[str, Any], config: dict[str, Any], metrics: Mapping[str, str]) -> list[str]:
    splits = list(config["eval_splits"])
    size = config.get("eval_corpus_size")
    corpus = evaluated_corpus(config)
    where = (
        "the full corpus"
        if size is None
        else f"a fixed sub-corpus of {size} documents (every document relevant to a query of "
        f"{', '.join(splits)} + a sample drawn with seed {config.get('corpus_seed', 0)}): its figures are higher than "
        "full-corpus ones and are never comparable to them"
    )
    lines = [
        "# LLaRA reproduction report",
        "",
        f"Main job: **{results['main_job_minutes']:.1f} minutes** wall time, all stages.",
    ]
    if results.get("machine"):
        machine = results["machine"]
        lines += [
            "",
            f"Machine: {machine['cpu']}, {machine['cores']} cores, CPU flags {', '.join(machine['cpu_flags'])}; "
            f"bfloat16 native: {'yes' if machine['bf16_native'] else 'no'}"
            + (f"; GPU {machine['cuda_device']}" if machine.get("cuda_device") else "")
            + f"; torch {machine['torch']}.",
        ]
    lines += [
        "",
        f"Evaluation: MTEB retrieval on `{config['beir_dir']}`, splits {', '.join(f'`{s}`' for s in splits)}, on "
        f"{where}.",
        "",
        *_score_table(results, corpus, splits, metrics),
    ]
    full_splits = sorted({s for by in results["variants"].values() for s, c in by.items() if "full" in c})
    if corpus == "sub" and full_splits:
        lines += [
            "",
            "On the **full** corpus (`llara-st reproduce CONFIG --stage full_corpus`, run after the main job; not "
            "part of its wall time):",
            "",
            *_score_table(results, "full", full_splits, metrics),
        ]
    if results["transfer"]:
        names = sorted({name for by_name in results["transfer"].values() for name in by_name})
        split = config.get("transfer_split", "test")
        lines += ["", f"Zero-shot transfer (split `{split}`, never trained, mined or tuned on):", ""]
        rows = [
            [label, *(f"{by[name]['ndcg_at_10']:.4f}" if name in by else "–" for name in names)]
            for label, by in results["transfer"].items()
        ]
        lines += markdown_table(["variant", *(f"{name} nDCG@10" for name in names)], rows)
    if results["effect"]:
        lines += [
            "",
            "Adaptation effect (adapted − unadapted, identical fine-tuning), nDCG@10 points, per query paired: "
            "bootstrap 95 % interval, two-sided randomisation-test p-value.",
            "",
        ]
        rows = []
        for name, e in results["effect"].items():
            interval = f"[{e['ci_low']:+.2f}, {e['ci_high']:+.2f}]"
            rows.append(
                [name, e["corpus"], f"{e['mean']:+.2f}", interval, f"{e['p_value']:.3f}", str(e["num_queries"])]
            )
        lines += markdown_table(["evaluation", "corpus", "effect", "95 % interval", "p", "queries"], rows, left=2)
    seconds = results["stage_seconds"]
    rows = [[name, f"{value / 60:.1f}"] for name, value in seconds.items() if name not in ON_REQUEST_STAGES]
    rows.append(["**main job**", f"**{results['main_job_minutes']:.1f}**"])
    rows += [
        [f"{name} (on request, after the main job)", f"{seconds[name] / 60:.1f}"]
        for name in ON_REQUEST_STAGES
        if name in seconds
    ]
    return lines + ["", "## Wall time per stage", "", *markdown_table(["stage", "minutes"], rows)]


def _plots(report_dir: Path, stages: dict[str, dict[str, Any]], results: dict[str, Any], metrics: Mapping[str, str]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpus = evaluated_corpus(results["config"])
    scores = {
        label: {split: by_corpus[corpus] for split, by_corpus in by_split.items() if corpus in by_corpus}
        for label, by_split in results["variants"].items()
    }
    labels = [label for label, by_split in scores.items() if by_split]
    splits = sorted({split for by_split in scores.values() for split in by_split})
    height = 0.8 / max(1, len(splits))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 1.2 + 0.9 * len(labels)), squeeze=False)
    for axis, (key, title) in zip(axes[0], metrics.items(), strict=True):
        for j, split in enumerate(splits):
            values = [scores[label].get(split, {}).get(key, 0.0) for label in labels]
            positions = np.arange(len(labels)) + j * height
            axis.barh(positions, values, height=height, label=split)
            for y, value in zip(positions, values, strict=True):
                axis.text(value, y, f" {value:.3f}", va="center", fontsize=8)
        axis.set_yticks(
            np.arange(len(labels)) + height * (len(splits) - 1) / 2, labels if key == next(iter(metrics)) else []
        )
        axis.set(title=f"{title} ({corpus} corpus)", xlim=(0, 1))
        axis.invert_yaxis()
        axis.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(report_dir / "scores.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    curves = [("adapt", key, key, 0) for key in ("loss", "ebae", "ebar", "lm")]
    curves += [(f"finetune_{arm}", "loss", f"fine-tuning, {arm}", 1) for arm in ("unadapted", "adapted")]
    for stage, key, label, axis in curves:
        history = stages[stage]["result"].get("log_history", []) if stage in stages else []
        points = [(entry["step"], entry[key]) for entry in history if key in entry and "step" in entry]
        if points:
            axes[axis].plot(*zip(*points, strict=True), label=label)
    if "adapt" in stages:
        axes[0].set(title="Adaptation (EBAE/EBAR) training loss", xlabel="step")
        axes[0].legend()
    axes[1].set(title="Contrastive fine-tuning loss", xlabel="step")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(report_dir / "losses.png", dpi=120)
    plt.close(fig)


def write_report(
    report_dir: str | Path,
    stages: dict[str, dict[str, Any]],
    config: dict[str, Any],
    metrics: Mapping[str, str],
    resamples: int = 10_000,
) -> Path:
    """Write ``README.md``, ``results.json``, ``config.json``, ``scores.png`` and ``losses.png`` to ``report_dir``
    from the stage files' contents (``{stage: {"stage", "seconds", "result"}}``); returns the README's path."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    results = collect_results(stages, config, metrics, resamples=resamples, machine=describe_machine())
    lines = _markdown(results, config, metrics)
    _plots(report_dir, stages, results, metrics)
    lines += ["", "## Plots", "", "![scores per variant](scores.png)", "", "![training losses](losses.png)"]
    lines += ["", "## Configuration", "", "```json", json.dumps(config, indent=2), "```"]
    (report_dir / "config.json").write_text(json.dumps(config, indent=2))
    (report_dir / "results.json").write_text(json.dumps(results, indent=2))
    readme = report_dir / "README.md"
    readme.write_text("\n".join(lines) + "\n")
    return readme
