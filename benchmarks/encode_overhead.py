"""Cost of the LLaRA wrapper at inference: ``encode_document`` vs. a bare backbone forward on the same batches.

Run: OMP_NUM_THREADS=1 python benchmarks/encode_overhead.py [--model CAUSAL_LM_FOLDER] [--texts 256] [--batch-size 32]

Both sides see the same token batches (built once by the LLaRA input module); the bare side runs the decoder
and a mean over the last 8 real positions of each row, then L2-normalises. ``encode_document`` also tokenises,
pads, sorts by length and pools. Printed: seconds for each (median of ``--repeats`` runs, interleaved, the order
alternating), the median of the per-pair ratios, and the overhead: 1 + encode_document's extra time outside the
decoder over the decoder's time (target <= 1.03); hooks time the decoder inside both sides. On a shared machine
wall-clock figures are noisy: ``--cpu-time`` times the CPU seconds of this process instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

import llara_st

SHARED = Path(__file__).resolve().parents[2] / "shared"


def random_backbone(folder: Path, hidden_size: int, num_layers: int) -> str:
    """A random Llama with the fixture's Llama-2 tokenizer: big enough for timing, built offline."""
    tokenizer = AutoTokenizer.from_pretrained(SHARED / "fixtures" / "llara_reference_visible" / "model")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=3 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 64),
        num_key_value_heads=max(1, hidden_size // 64),
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="causal-LM folder (default: a random Llama, --layers x --hidden-size)")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--cpu-time", action="store_true", help="time CPU seconds of this process (steadier on a busy machine)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        source = args.model or random_backbone(Path(tmp) / "backbone", args.hidden_size, args.layers)
        model = llara_st.build_llara_model(source, device="cpu")
        with open(SHARED / "data" / "scifact" / "corpus.jsonl", encoding="utf8") as corpus_file:
            corpus = [json.loads(line) for _, line in zip(range(args.texts), corpus_file, strict=False)]
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
                # Rows are right-padded: the last 8 real positions end at each row's length.
                last = mask.sum(-1, keepdim=True) - 1
                positions = last - torch.arange(7, -1, -1)
                pooled = hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])).mean(dim=1)
                torch.nn.functional.normalize(pooled, dim=-1)

        def wrapped() -> None:
            model.encode_document(texts, batch_size=args.batch_size, convert_to_tensor=True)

        clock = time.process_time if args.cpu_time else time.perf_counter
        # The decoder is timed inside both sides by hooks: what encode_document adds is its time outside the decoder.
        # That difference is steady, while the decoder's own time swings by +-15% from run to run on a shared machine.
        in_decoder = {"start": 0.0, "total": 0.0}
        decoder.register_forward_pre_hook(lambda *_: in_decoder.update(start=clock()))
        decoder.register_forward_hook(
            lambda *_: in_decoder.update(total=in_decoder["total"] + clock() - in_decoder["start"])
        )

        wrapped(), bare()  # warm-up
        names = ("encode_document", "bare forward + last-8 mean")
        times: dict[str, list[float]] = {name: [] for name in names}
        decoder_times: dict[str, list[float]] = {name: [] for name in names}
        for repeat in range(args.repeats):
            # Alternate which side runs first, so that a drift in the machine's speed does not favour one side.
            pair = list(zip(names, (wrapped, bare), strict=True))
            for name, fn in pair if repeat % 2 == 0 else reversed(pair):
                in_decoder["total"] = 0.0
                start = clock()
                fn()
                times[name].append(clock() - start)
                decoder_times[name].append(in_decoder["total"])
        for name, values in times.items():
            print(f"{name:>28}: {statistics.median(values):.3f} s  (runs: {', '.join(f'{v:.3f}' for v in values)})")
        ratios = [wrapped_time / bare_time for wrapped_time, bare_time in zip(*times.values(), strict=True)]
        print(f"ratio encode_document / bare = {statistics.median(ratios):.3f}  (median of {len(ratios)} paired runs)")
        decoder_medians = [statistics.median(values) for values in decoder_times.values()]
        outside = {
            name: statistics.median(t - d for t, d in zip(times[name], decoder_times[name], strict=True))
            for name in names
        }
        print(f"decoder time inside each side: {decoder_medians[0]:.3f} s vs {decoder_medians[1]:.3f} s")
        print(f"time outside the decoder: {outside[names[0]]:.3f} s vs {outside[names[1]]:.3f} s")
        overhead = 1 + (outside[names[0]] - outside[names[1]]) / decoder_medians[1]
        print(
            f"overhead of encode_document = {overhead:.3f}  (1 + its extra time outside the decoder / the decoder's; "
            "target <= 1.03)"
        )


if __name__ == "__main__":
    main()
