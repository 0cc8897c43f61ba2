"""Cost of the LLaRA wrapper at inference: ``encode_document`` vs. a bare backbone forward on the same batches.

Run: python benchmarks/encode_overhead.py [--model CAUSAL_LM_FOLDER] [--texts 256] [--batch-size 32]

Both sides see the same token batches (built once by the LLaRA input module); the bare side runs the decoder
and a hand-written mean over the last 8 positions, then L2-normalises. Printed: seconds for each (median of
``--repeats`` runs, interleaved) and their ratio. Target: ratio <= 1.03.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import llara_st

SHARED = Path(__file__).resolve().parents[2] / "shared"


def random_backbone(folder: Path) -> str:
    """A random 4-layer Llama with the fixture's Llama-2 tokenizer: big enough for timing, built offline."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(SHARED / "fixtures" / "llara_reference_visible" / "model")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="causal-LM folder (default: a random 4-layer Llama)")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        source = args.model or random_backbone(Path(tmp) / "backbone")
        model = llara_st.build_llara_model(source, device="cpu")
        corpus = [json.loads(line) for line in open(SHARED / "data" / "scifact" / "corpus.jsonl")][: args.texts]
        texts = [f"{doc['title']} {doc['text']}" for doc in corpus]

        transformer = model[0]
        # encode() sorts by length before batching; the bare side gets the same batches.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        ordered = [texts[i] for i in order]
        batches = [
            transformer.preprocess(ordered[i : i + args.batch_size], task="document")
            for i in range(0, len(ordered), args.batch_size)
        ]
        decoder = transformer.model.get_decoder()

        @torch.inference_mode()
        def bare() -> None:
            for features in batches:
                mask = features["attention_mask"]
                hidden = decoder(
                    input_ids=features["input_ids"],
                    attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    use_cache=False,
                ).last_hidden_state
                torch.nn.functional.normalize(hidden[:, -8:].mean(dim=1), dim=-1)

        def wrapped() -> None:
            model.encode_document(texts, batch_size=args.batch_size, convert_to_tensor=True)

        wrapped(), bare()  # warm-up
        times = {"encode_document": [], "bare forward + last-8 mean": []}
        for _ in range(args.repeats):
            for name, fn in (("encode_document", wrapped), ("bare forward + last-8 mean", bare)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(values) for name, values in times.items()}
        for name, value in medians.items():
            print(f"{name:>28}: {value:.3f} s  (runs: {', '.join(f'{v:.3f}' for v in times[name])})")
        ratio = medians["encode_document"] / medians["bare forward + last-8 mean"]
        print(f"ratio encode_document / bare = {ratio:.3f}  (target <= 1.03)")


if __name__ == "__main__":
    main()
