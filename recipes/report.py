"""The reproduction report: a markdown table, PNG plots and the configuration, from the stage files alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VARIANTS = [
    ("BM25 (bm25s, stemmed)", "baselines", ("bm25",)),
    ("all-MiniLM-L6-v2", "baselines", ("all-MiniLM-L6-v2",)),
    ("LLaRA zero-shot (converted, untrained)", "zeroshot", ("scores",)),
    ("LLaRA unadapted + fine-tuned", "eval_unadapted", ("scores",)),
    ("LLaRA adapted + fine-tuned", "eval_adapted", ("scores",)),
]
TRAINING_STAGES = {"adapt": "adaptation (EBAE/EBAR)", "finetune_unadapted": "fine-tuning, unadapted",
                   "finetune_adapted": "fine-tuning, adapted"}


def _dig(data: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        data = data[key]
    return data


def collect_scores(stages: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, float]]]:
    rows = []
    for label, stage, keys in VARIANTS:
        if stage in stages:
            rows.append((label, _dig(stages[stage]["result"], keys)))
    return rows


def loss_curve(log_history: list[dict[str, Any]], key: str = "loss") -> tuple[list[float], list[float]]:
    points = [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
    return [step for step, _ in points], [value for _, value in points]


def write_report(
    report_dir: Path, stages: dict[str, dict[str, Any]], config: dict[str, Any], metrics: dict[str, str]
) -> Path:
    """Write ``README.md``, ``scores.png``, ``losses.png``, ``config.json`` and ``results.json`` to ``report_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report_dir.mkdir(parents=True, exist_ok=True)
    scores = collect_scores(stages)

    lines = [
        "# LLaRA reproduction report",
        "",
        f"Evaluation: MTEB retrieval on `{config['beir_dir']}`, split `{config['eval_split']}`.",
        "",
        "| variant | " + " | ".join(metrics.values()) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for label, values in scores:
        lines.append(f"| {label} | " + " | ".join(f"{values[key]:.4f}" for key in metrics) + " |")
    by_label = dict(scores)
    adapted = by_label.get("LLaRA adapted + fine-tuned")
    unadapted = by_label.get("LLaRA unadapted + fine-tuned")
    if adapted and unadapted:
        delta = 100 * (adapted["ndcg_at_10"] - unadapted["ndcg_at_10"])
        lines += ["", f"Adaptation effect (adapted − unadapted, both fine-tuned): **{delta:+.2f} nDCG@10 points**."]
    lines += ["", "## Wall time per stage", "", "| stage | minutes |", "|---|---:|"]
    total = 0.0
    for name, stage in stages.items():
        total += stage["seconds"]
        lines.append(f"| {name} | {stage['seconds'] / 60:.1f} |")
    lines.append(f"| **total** | **{total / 60:.1f}** |")

    # Scores per variant
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4.5))
    for axis, (key, title) in zip(axes, metrics.items(), strict=True):
        labels = [label for label, _ in scores]
        axis.barh(labels, [values[key] for _, values in scores], color="tab:blue")
        axis.set_title(title)
        axis.invert_yaxis()
        for i, (_, values) in enumerate(scores):
            axis.text(values[key], i, f" {values[key]:.3f}", va="center")
        axis.set_xlim(0, 1)
    for axis in axes[1:]:
        axis.set_yticklabels([])
    fig.tight_layout()
    fig.savefig(report_dir / "scores.png", dpi=120)
    plt.close(fig)

    # Training losses
    curves = {
        label: loss_curve(stages[stage]["result"].get("log_history", []))
        for stage, label in TRAINING_STAGES.items()
        if stage in stages
    }
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if "adapt" in stages:
        history = stages["adapt"]["result"].get("log_history", [])
        for key in ("loss", "ebae", "ebar", "lm"):
            steps, values = loss_curve(history, key)
            if steps:
                axes[0].plot(steps, values, label=key)
        axes[0].set_title("Adaptation (EBAE/EBAR) training loss")
        axes[0].set_xlabel("step")
        axes[0].legend()
    for label, (steps, values) in curves.items():
        if label.startswith("fine-tuning") and steps:
            axes[1].plot(steps, values, label=label)
    axes[1].set_title("Contrastive fine-tuning loss")
    axes[1].set_xlabel("step")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(report_dir / "losses.png", dpi=120)
    plt.close(fig)

    lines += [
        "",
        "## Plots",
        "",
        "![scores per variant](scores.png)",
        "",
        "![training losses](losses.png)",
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(config, indent=2),
        "```",
    ]
    (report_dir / "config.json").write_text(json.dumps(config, indent=2))
    (report_dir / "results.json").write_text(json.dumps(stages, indent=2))
    readme = report_dir / "README.md"
    readme.write_text("\n".join(lines) + "\n")
    return readme
