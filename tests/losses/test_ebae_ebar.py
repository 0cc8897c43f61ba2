"""EBAEEBARLoss and EBAEEBARDataCollator: tensor functions, fidelity to the authors' reference, mask/position
semantics, errors."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

from llara_st.losses import (
    AdaptationBatch,
    EBAEEBARDataCollator,
    EBAEEBARLoss,
    adaptation_attention_mask,
    adaptation_position_ids,
    bag_of_words_loss,
    ebae_ebar_loss,
    load_stop_words,
    next_token_loss,
    stop_word_token_ids,
)
from llara_st.losses.ebae_ebar import IGNORE_INDEX

ATTENTION = ["eager", "sdpa"]


def rows(pairs) -> list[dict[str, str]]:
    return [{"text": text, "next_text": next_text} for text, next_text in pairs]


def pair_features(model, pairs, **collator_kwargs) -> list[dict]:
    """What the trainer hands the loss: the collator's batch as feature groups (one, the adaptation input)."""
    collated = EBAEEBARDataCollator(model, **collator_kwargs)(rows(pairs))
    return [{key.removeprefix("adaptation_"): value for key, value in collated.items()}]


def build(model, pairs, **collator_kwargs) -> AdaptationBatch:
    return EBAEEBARDataCollator(model, **collator_kwargs).build([t for t, _ in pairs], [n for _, n in pairs])


def use_attention(model, implementation: str) -> None:
    model[0].causal_lm.set_attn_implementation(implementation)
    assert model[0].causal_lm.config._attn_implementation == implementation


# ---------------------------------------------------------------------------------------------- tensor functions


def test_position_ids_share_the_suffix_positions_on_either_padding():
    # Row 0 left-padded: pad pad | p t t | P P P | Q Q ; row 1 right-padded: p t t t | P P P | Q Q | pad
    real = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1, 1, 0]])
    passage = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 1, 0, 0, 0]])
    query = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0, 0, 1, 1, 0]])
    positions = adaptation_position_ids(real, passage, query)
    assert positions.tolist() == [[0, 0, 0, 1, 2, 3, 4, 5, 3, 4], [0, 1, 2, 3, 4, 5, 6, 4, 5, 0]]


def test_attention_mask_blocks_only_query_suffix_to_passage_suffix():
    real = torch.tensor([[0, 1, 1, 1, 1, 1, 1]])
    passage = torch.tensor([[0, 0, 0, 1, 1, 0, 0]])
    query = torch.tensor([[0, 0, 0, 0, 0, 1, 1]])
    mask = adaptation_attention_mask(real, passage, query)
    assert mask.shape == (1, 1, 7, 7) and mask.dtype == torch.bool
    allowed = mask[0, 0]
    for i in range(7):
        for j in range(7):
            expected = j <= i and bool(real[0, j]) and not (query[0, i] and passage[0, j])
            expected = expected or i == j  # every row sees itself, so no row is fully masked
            assert allowed[i, j].item() == expected, (i, j)
    # The text and passage suffix rows are plain causal; query rows see text and their own prefix of the suffix.
    assert allowed[5].tolist() == [False, True, True, False, False, True, False]


def test_bag_of_words_loss_matches_its_definition():
    torch.manual_seed(0)
    logits = torch.randn(3, 8, 50)
    targets = torch.tensor([[4, 9, 17], [2, IGNORE_INDEX, IGNORE_INDEX], [IGNORE_INDEX] * 3])
    expected_rows = []
    for row in range(2):  # row 2 has no targets and is left out of the mean
        log_probs = torch.log_softmax(logits[row].max(dim=0).values, dim=-1)
        ids = [t for t in targets[row].tolist() if t != IGNORE_INDEX]
        expected_rows.append(-sum(log_probs[t].item() for t in ids) / len(ids))
    expected = sum(expected_rows) / 2 / 10
    assert bag_of_words_loss(logits, targets).item() == pytest.approx(expected, abs=1e-6)


def test_bag_of_words_loss_without_any_target_is_zero_and_keeps_the_graph():
    logits = torch.randn(2, 8, 30, requires_grad=True)
    for targets in (torch.full((2, 4), IGNORE_INDEX), torch.empty((2, 0), dtype=torch.long)):
        value = bag_of_words_loss(logits, targets)
        assert value.item() == 0.0 and value.requires_grad
        value.backward()
        assert torch.isfinite(logits.grad).all()


def test_bag_of_words_loss_rejects_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match="vocabulary"):
        bag_of_words_loss(torch.randn(1, 8, 10), torch.tensor([[10]]))
    with pytest.raises(ValueError, match="batch"):
        bag_of_words_loss(torch.randn(1, 8, 10), torch.tensor([[1], [2]]))


def test_components_sum_to_lm_plus_mean_bag_of_words():
    torch.manual_seed(1)
    passage_logits, query_logits = torch.randn(2, 8, 40), torch.randn(2, 8, 40)
    ebae_targets, ebar_targets = torch.tensor([[1, 5], [7, IGNORE_INDEX]]), torch.tensor([[3, 4], [9, 11]])
    text_logits, text_targets = torch.randn(5, 40), torch.tensor([1, 2, 3, 4, 5])
    components = ebae_ebar_loss(
        passage_logits, query_logits, ebae_targets, ebar_targets, text_logits, text_targets, lm_weight=0.3
    )
    ebae = bag_of_words_loss(passage_logits, ebae_targets)
    ebar = bag_of_words_loss(query_logits, ebar_targets)
    lm = torch.nn.functional.cross_entropy(text_logits, text_targets)
    assert set(components) == {"ebae", "ebar", "lm"}
    assert sum(components.values()).item() == pytest.approx((0.3 * lm + (ebae + ebar) / 2).item(), abs=1e-6)
    without_lm = ebae_ebar_loss(passage_logits, query_logits, ebae_targets, ebar_targets, lm_weight=0.0)
    assert set(without_lm) == {"ebae", "ebar"}
    empty = next_token_loss(torch.randn(0, 40, requires_grad=True), torch.empty(0, dtype=torch.long))
    assert empty.item() == 0.0 and empty.requires_grad


# ---------------------------------------------------------------------------------------------- fidelity


@pytest.fixture(scope="module")
def pretrain_reference(fixture_dir):
    inputs = json.loads((fixture_dir / "pretrain" / "pretrain_inputs.json").read_text())
    allowed = np.load(fixture_dir / "pretrain" / "pretrain_attention_allowed.npz")["allowed"]
    return inputs, torch.from_numpy(allowed)


def test_built_inputs_match_the_reference_collator(reference_llara, reference_texts, reference, pretrain_reference):
    reference_inputs, reference_allowed = pretrain_reference
    batch = build(reference_llara, reference_texts["pretrain_pairs"])

    assert batch.input_ids.tolist() == reference_inputs["input_ids"]
    assert batch.attention_mask.tolist() == reference_inputs["attention_mask"]
    assert batch.labels.tolist() == reference_inputs["labels"]
    assert batch.attention_mask.sum(1).tolist() == reference["pretrain"]["unpadded_lengths"]

    # The reference counts positions from the first (pad) column; ours from the first real token: RoPE is
    # relative, so the positions must agree on real tokens up to each row's offset.
    shared_positions = torch.tensor(reference_inputs["position_ids"][0])
    for row, real in enumerate(batch.attention_mask.bool()):
        first = int(real.nonzero()[0])
        assert batch.position_ids[row, real].tolist() == (shared_positions[real] - shared_positions[first]).tolist()

    allowed = batch.attention_bias[:, 0]
    real = batch.attention_mask.bool()
    for row in range(len(real)):
        assert torch.equal(allowed[row][real[row]], reference_allowed[row, 0][real[row]])
        # Padding rows: fully masked in the reference; here they see only themselves (no NaN under eager).
        pad_rows = allowed[row][~real[row]]
        assert not reference_allowed[row, 0][~real[row]].any()
        assert torch.equal(pad_rows, torch.eye(len(real[row]), dtype=torch.bool)[~real[row]])

    for targets, key in (
        (batch.ebae_target_ids, "unique_target_ids_summarize"),
        (batch.ebar_target_ids, "unique_target_ids_predict"),
    ):
        ours = [[t for t in row if t != IGNORE_INDEX] for row in targets.tolist()]
        assert ours == reference["pretrain"][key]
    # The long text: its EBAE target holds tokens beyond its truncated input, as in the reference.
    long_row = reference["pretrain"]["unpadded_lengths"].index(128)
    input_tokens = set(batch.input_ids[long_row].tolist())
    assert set(batch.ebae_target_ids[long_row].tolist()) - input_tokens - {IGNORE_INDEX}


@pytest.mark.parametrize("implementation", ATTENTION)
def test_loss_equals_the_reference(reference_llara, reference_texts, reference, implementation):
    use_attention(reference_llara, implementation)
    loss = EBAEEBARLoss(reference_llara, lm_weight=1.0)
    expected = reference["pretrain"]
    features = pair_features(reference_llara, reference_texts["pretrain_pairs"], cutoff_length=128)
    with torch.no_grad():
        components = loss(features)
    assert abs(sum(components.values()).item() - expected["total_loss"]) < 1e-5
    assert abs(2 * components["ebae"].item() - expected["bow_summarize_loss"]) < 1e-5
    assert abs(2 * components["ebar"].item() - expected["bow_predict_loss"]) < 1e-5
    assert abs(components["lm"].item() - expected["ar_loss"]) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("implementation", ATTENTION)
def test_trainer_evaluate_gives_the_reference_loss(
    reference_llara, reference_texts, reference, tmp_path, implementation
):
    use_attention(reference_llara, implementation)
    pairs = reference_texts["pretrain_pairs"]
    dataset = Dataset.from_dict({"text": [p[0] for p in pairs], "next_text": [p[1] for p in pairs]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path),
        per_device_eval_batch_size=len(pairs),
        report_to="none",
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(
        model=reference_llara,
        args=args,
        eval_dataset=dataset,
        loss=EBAEEBARLoss(reference_llara),
        data_collator=EBAEEBARDataCollator(reference_llara),
    )
    metrics = trainer.evaluate()
    expected = reference["pretrain"]
    assert abs(metrics["eval_loss"] - expected["total_loss"]) < 1e-5
    logged = next(entry for entry in trainer.state.log_history if "eval_ebae" in entry)
    # The trainer logs each component rounded to 4 decimals.
    assert abs(logged["eval_ebae"] - expected["bow_summarize_loss"] / 2) <= 6e-5
    assert abs(logged["eval_ebar"] - expected["bow_predict_loss"] / 2) <= 6e-5
    assert abs(logged["eval_lm"] - expected["ar_loss"]) <= 6e-5


def test_trainer_batches_reach_the_loss_as_one_adaptation_group(reference_llara, reference_texts):
    # What SentenceTransformerTrainer.collect_features makes of the collator's keys: the loss's only input.
    pairs = reference_texts["pretrain_pairs"]
    collated = EBAEEBARDataCollator(reference_llara)(rows(pairs))
    trainer = SentenceTransformerTrainer.__new__(SentenceTransformerTrainer)
    features, labels = trainer.collect_features(collated)
    assert labels is None and len(features) == 1
    assert set(features[0]) == {field for field in AdaptationBatch.__dataclass_fields__}
    loss = EBAEEBARLoss(reference_llara)
    with torch.no_grad():
        through_trainer = loss(features)
        direct = loss(pair_features(reference_llara, pairs))
    for key in direct:
        assert through_trainer[key].item() == direct[key].item()


# ---------------------------------------------------------------------------------------------- mask and positions


PAIRS = [
    ("The river rose quickly after the storm and flooded the valley.", "Farmers moved their animals uphill."),
    ("A short one.", "Then a much longer continuation followed, with many more words than the first text had."),
    ("Bright stars shine over the quiet harbour tonight.", "Boats rocked gently."),
]


def separate_pass_logits(model, ids: list[int], positions: list[int]) -> torch.Tensor:
    """Logits of a plain causal pass over one unpadded row, at the given positions."""
    causal_lm = model[0].causal_lm
    with torch.no_grad():
        logits = causal_lm(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
    return logits[positions]


@pytest.mark.parametrize("implementation", ATTENTION)
def test_one_pass_equals_two_separate_prompt_passes(sharp_llara, implementation):
    use_attention(sharp_llara, implementation)
    transformer = sharp_llara[0]
    loss = EBAEEBARLoss(sharp_llara)
    batch = build(sharp_llara, PAIRS)
    with torch.no_grad():
        logits = loss.compute_logits(batch)
    for row, (text, _) in enumerate(PAIRS):
        text_ids = transformer.tokenizer(text, add_special_tokens=False)["input_ids"]
        for side, ours in (("passage", logits.passage_prompt_logits), ("query", logits.query_prompt_logits)):
            ids = transformer.prefix_ids + text_ids + transformer.suffix_ids(side)
            prompt_ids = [
                transformer.prompt_token_ids[t]
                for t in transformer.tokenizer.convert_ids_to_tokens(ids)
                if t in transformer.prompt_token_ids
            ]
            positions = [ids.index(p) for p in prompt_ids]
            expected = separate_pass_logits(sharp_llara, ids, positions)
            scale = expected.abs().max().item()
            assert torch.allclose(ours[row], expected, atol=1e-5 * scale, rtol=0), (side, row)


@pytest.mark.usefixtures("llama2_vocabulary")
@pytest.mark.parametrize("implementation", ATTENTION)
def test_query_prompt_logits_ignore_the_passage_suffix(sharp_llara, implementation):
    use_attention(sharp_llara, implementation)
    loss = EBAEEBARLoss(sharp_llara)
    batch = build(sharp_llara, PAIRS)
    with torch.no_grad():
        before = loss.compute_logits(batch)
        n_query, n_passage = len(sharp_llara[0].suffix_ids("query")), len(sharp_llara[0].suffix_ids("passage"))
        width = batch.input_ids.shape[1]
        passage_columns = torch.arange(width - n_query - n_passage, width - n_query)
        generator = torch.Generator().manual_seed(0)
        batch.input_ids[:, passage_columns] = torch.randint(
            3, 32000, (len(PAIRS), len(passage_columns)), generator=generator
        )
        after = loss.compute_logits(batch)
    assert torch.allclose(before.query_prompt_logits, after.query_prompt_logits, atol=1e-6, rtol=0)
    # The change is visible where it should be: the test can fail.
    assert not torch.allclose(before.passage_prompt_logits, after.passage_prompt_logits, atol=1e-2)


@pytest.mark.parametrize("implementation", ATTENTION)
def test_decoder_receives_the_shared_positions_and_a_float_mask(sharp_llara, implementation):
    use_attention(sharp_llara, implementation)
    loss = EBAEEBARLoss(sharp_llara)
    seen = {}

    def capture(module, args, kwargs):
        seen.update(kwargs)

    decoder = sharp_llara[0].causal_lm.get_decoder()
    handle = decoder.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            loss(pair_features(sharp_llara, PAIRS))
    finally:
        handle.remove()
    positions, mask = seen["position_ids"], seen["attention_mask"]
    n_query, n_passage = len(sharp_llara[0].suffix_ids("query")), len(sharp_llara[0].suffix_ids("passage"))
    passage_positions = positions[:, -n_query - n_passage : -n_query]
    assert torch.equal(positions[:, -n_query:], passage_positions[:, :n_query])
    real_lengths = seen["input_ids"].ne(sharp_llara[0].tokenizer.pad_token_id).sum(1)
    # Each prompt starts right after prefix + text.
    assert torch.equal(passage_positions[:, 0], real_lengths - n_query - n_passage)
    assert mask.ndim == 4 and mask.dtype == decoder.get_input_embeddings().weight.dtype


def test_positions_matter_on_the_sharp_model(sharp_llara):
    # Guards the two tests above: with plain positions the query prompt's logits would differ.
    loss = EBAEEBARLoss(sharp_llara)
    batch = build(sharp_llara, PAIRS)
    with torch.no_grad():
        shared = loss.compute_logits(batch).query_prompt_logits
        batch.position_ids = sharp_llara[0].position_ids_from_mask(batch.attention_mask)
        plain = loss.compute_logits(batch).query_prompt_logits
    assert not torch.allclose(shared, plain, atol=1e-2)


@pytest.mark.parametrize("implementation", ATTENTION)
def test_targets_of_special_tokens_only_give_a_finite_loss(reference_llara, implementation):
    use_attention(reference_llara, implementation)
    loss = EBAEEBARLoss(reference_llara)
    pairs = [("<s1><s2>", "<s9>"), ("<s3>", "<s10><s11>")]
    features = pair_features(reference_llara, pairs)
    batch = build(reference_llara, pairs)
    assert batch.ebae_target_ids.numel() == 0 and batch.ebar_target_ids.numel() == 0
    components = loss(features)
    total = sum(components.values())
    assert torch.isfinite(total)
    assert components["ebae"].item() == 0.0 and components["ebar"].item() == 0.0
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in reference_llara.parameters() if p.grad is not None)


@pytest.mark.parametrize("implementation", ATTENTION)
def test_padded_batches_stay_finite_and_match_rows_alone(sharp_llara, implementation):
    use_attention(sharp_llara, implementation)
    loss = EBAEEBARLoss(sharp_llara)
    batch = build(sharp_llara, PAIRS)
    assert not batch.attention_mask.bool().all()  # the batch is padded
    with torch.no_grad():
        together = loss.compute_logits(batch).query_prompt_logits
        alone = [loss.compute_logits(build(sharp_llara, [pair])).query_prompt_logits for pair in PAIRS]
    assert torch.isfinite(together).all()
    scale = together.abs().max().item()
    assert torch.allclose(together, torch.cat(alone), atol=1e-5 * scale, rtol=0)


def test_gradients_reach_the_prompt_token_embeddings(reference_llara, reference_texts):
    loss = EBAEEBARLoss(reference_llara)
    sum(loss(pair_features(reference_llara, reference_texts["pretrain_pairs"][:2])).values()).backward()
    grad = reference_llara[0].causal_lm.get_input_embeddings().weight.grad
    prompt_ids = list(reference_llara[0].prompt_token_ids.values())
    assert (grad[prompt_ids].abs().sum(dim=1) > 0).all()


def test_lm_weight_scales_and_disables_the_lm_term(reference_llara, reference_texts):
    features = pair_features(reference_llara, reference_texts["pretrain_pairs"])
    with torch.no_grad():
        full = EBAEEBARLoss(reference_llara, lm_weight=1.0)(features)
        half = EBAEEBARLoss(reference_llara, lm_weight=0.5)(features)
        none = EBAEEBARLoss(reference_llara, lm_weight=0)(features)
    assert half["lm"].item() == pytest.approx(full["lm"].item() / 2, rel=1e-6)
    assert set(none) == {"ebae", "ebar"}
    assert none["ebae"].item() == pytest.approx(full["ebae"].item(), abs=1e-7)


# ---------------------------------------------------------------------------------------------- tokenizers, stop words


def test_tokenizer_without_bos(no_bos_llara):
    transformer = no_bos_llara[0]
    assert transformer.tokenizer("x")["input_ids"] == transformer.tokenizer("x", add_special_tokens=False)["input_ids"]
    loss = EBAEEBARLoss(no_bos_llara)
    collator = EBAEEBARDataCollator(no_bos_llara)
    features = pair_features(no_bos_llara, PAIRS)
    batch = build(no_bos_llara, PAIRS)
    for row, (text, next_text) in enumerate(PAIRS):
        text_ids = transformer.tokenizer(text, add_special_tokens=False)["input_ids"]
        real = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        assert real[: len(transformer.prefix_ids) + len(text_ids)] == transformer.prefix_ids + text_ids
        next_ids = transformer.tokenizer(next_text, add_special_tokens=False)["input_ids"]
        ebar = [t for t in batch.ebar_target_ids[row].tolist() if t != IGNORE_INDEX]
        assert ebar == sorted(set(next_ids) - collator.excluded_target_ids)
    assert torch.isfinite(sum(loss(features).values()))


@pytest.mark.usefixtures("llama2_vocabulary")
def test_stop_words_are_removed_from_the_targets(reference_llara):
    tokenizer = reference_llara[0].tokenizer
    words = load_stop_words()
    assert 150 <= len(words) <= 200 and {"the", "and", "of", "which"} <= set(words)
    the_ids = {
        tokenizer("the", add_special_tokens=False)["input_ids"][0],
        tokenizer("The", add_special_tokens=False)["input_ids"][0],
    }
    assert the_ids <= stop_word_token_ids(tokenizer, ["the"])
    river = tokenizer("river", add_special_tokens=False)["input_ids"]

    pairs = [("The river and the sea.", "Of the hills, the highest.")]
    kept = build(reference_llara, pairs)
    removed = build(reference_llara, pairs, remove_stop_words=True)
    stop_ids = stop_word_token_ids(tokenizer, words)
    kept_ids, removed_ids = set(kept.ebae_target_ids[0].tolist()), set(removed.ebae_target_ids[0].tolist())
    assert the_ids & kept_ids and not the_ids & removed_ids
    assert not stop_ids & removed_ids and not stop_ids & set(removed.ebar_target_ids[0].tolist())
    assert set(river) <= removed_ids
    custom = build(reference_llara, pairs, remove_stop_words=True, stop_words=["river"])
    custom_ids = set(custom.ebae_target_ids[0].tolist())
    assert not set(river) & custom_ids and the_ids & custom_ids


# ---------------------------------------------------------------------------------------------- errors and config


def test_batches_of_another_collator_are_refused(reference_llara):
    loss = EBAEEBARLoss(reference_llara)
    # The trainer's default collator (no data_collator given) tokenises each column with a template.
    default = SentenceTransformerDataCollator(preprocess_fn=reference_llara.preprocess)(rows(PAIRS))
    trainer = SentenceTransformerTrainer.__new__(SentenceTransformerTrainer)
    features, _ = trainer.collect_features(default)
    with pytest.raises(ValueError, match=r"data_collator=EBAEEBARDataCollator"):
        loss(features)
    adaptation = pair_features(reference_llara, PAIRS)
    with pytest.raises(ValueError, match="EBAEEBARDataCollator"):
        loss(adaptation + adaptation)
    incomplete = {key: value for key, value in adaptation[0].items() if key != "ebar_target_ids"}
    with pytest.raises(ValueError, match="EBAEEBARDataCollator"):
        loss([incomplete])


def test_collator_refuses_bad_rows(reference_llara):
    collator = EBAEEBARDataCollator(reference_llara)
    with pytest.raises(ValueError, match=r"two text columns.*\['text'\]"):
        collator([{"text": "a"}])
    with pytest.raises(ValueError, match="two text columns"):
        collator([{"text": "a", "next_text": "b", "extra": "c"}])
    with pytest.raises(TypeError, match=r"'next_text'.* row 1 .*int"):
        collator([{"text": "a", "next_text": "b"}, {"text": "c", "next_text": 7}])
    # A label column and the dataset name are not text columns.
    collated = collator([{"text": "a", "next_text": "b", "label": 1.0, "dataset_name": "wiki"}])
    assert collated["dataset_name"] == "wiki" and "adaptation_input_ids" in collated


@pytest.mark.usefixtures("llama2_vocabulary")
def test_bad_settings_are_refused(reference_llara):
    limit = reference_llara[0].max_position_embeddings
    with pytest.raises(ValueError, match="max_position_embeddings"):
        EBAEEBARDataCollator(reference_llara, cutoff_length=limit + 1)
    with pytest.raises(ValueError, match="no room for text"):
        EBAEEBARDataCollator(reference_llara, cutoff_length=2 + 19 + 18)
    with pytest.raises(TypeError, match="cutoff_length"):
        EBAEEBARDataCollator(reference_llara, cutoff_length=128.0)
    with pytest.raises(ValueError, match="lm_weight"):
        EBAEEBARLoss(reference_llara, lm_weight=-1)
    with pytest.raises(TypeError, match="lm_weight"):
        EBAEEBARLoss(reference_llara, lm_weight=math.nan)
    with pytest.raises(ValueError, match="remove_stop_words"):
        EBAEEBARDataCollator(reference_llara, stop_words=["the"])
    assert EBAEEBARDataCollator(reference_llara, cutoff_length=2 + 19 + 18 + 1).text_budget == 1


@pytest.mark.usefixtures("llama2_vocabulary")
def test_cutoff_beyond_the_passage_max_length_keeps_whole_targets(reference_llara):
    # The collator tokenises on its own: a cutoff above passage_max_length no longer cuts targets short.
    transformer = reference_llara[0]
    cutoff = transformer.passage_max_length + 40
    text, ids = distinct_word_text(transformer.tokenizer, cutoff)
    batch = build(reference_llara, [(text, "b")], cutoff_length=cutoff)
    assert batch.input_ids.shape[1] == cutoff
    assert [t for t in batch.ebae_target_ids[0].tolist() if t != IGNORE_INDEX] == sorted(ids[: cutoff - 1])


def test_flash_attention_is_refused(reference_llara):
    loss = EBAEEBARLoss(reference_llara)
    reference_llara[0].causal_lm.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="flash_attention_2"):
        loss(pair_features(reference_llara, PAIRS))


def test_config_and_citation(reference_llara):
    loss = EBAEEBARLoss(reference_llara, lm_weight=0.5)
    assert loss.get_config_dict() == {"lm_weight": 0.5}
    assert "2312.15503" in loss.citation and loss.citation.strip().startswith("@")
    collator = EBAEEBARDataCollator(reference_llara, cutoff_length=100, remove_stop_words=True)
    assert repr(collator) == "EBAEEBARDataCollator(cutoff_length=100, remove_stop_words=True)"


@pytest.fixture
def single_process_group(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def test_distributed_data_parallel_all_reduces_the_gradients(reference_llara, reference_texts, single_process_group):
    features = pair_features(reference_llara, reference_texts["pretrain_pairs"][:3])
    plain_model = copy.deepcopy(reference_llara)
    plain = EBAEEBARLoss(plain_model)(features)
    sum(plain.values()).backward()

    wrapped = torch.nn.parallel.DistributedDataParallel(reference_llara, find_unused_parameters=False)
    reduced_buckets = []

    def count_and_pass(state, bucket):
        # The gradient all-reduce only runs for a forward that went through the wrapper.
        reduced_buckets.append(bucket.index())
        future = torch.futures.Future()
        future.set_result(bucket.buffer())
        return future

    wrapped.register_comm_hook(None, count_and_pass)
    loss = EBAEEBARLoss(reference_llara)
    loss.model = wrapped  # what the trainer does under DDP
    components = loss(features)
    sum(components.values()).backward()
    assert reduced_buckets
    for key in plain:
        assert components[key].item() == pytest.approx(plain[key].item(), abs=1e-6)
    for (name, ours), theirs in zip(reference_llara.named_parameters(), plain_model.parameters(), strict=True):
        assert torch.allclose(ours.grad, theirs.grad, atol=1e-6), name

    wrapped_searching = torch.nn.parallel.DistributedDataParallel(reference_llara, find_unused_parameters=True)
    loss.model = wrapped_searching
    with pytest.raises(ValueError, match="ddp_find_unused_parameters=False"):
        loss(features)


def distinct_word_text(tokenizer, count: int) -> tuple[str, list[int]]:
    """A text of ``count`` distinct whole-word tokens that tokenises back to exactly those ids."""
    words = [t for t in tokenizer.convert_ids_to_tokens(range(3000, 8000)) if t.startswith("▁") and t[1:].isalpha()]
    text = " ".join(word[1:] for word in words[:count])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == count == len(set(ids))
    return text, ids


@pytest.mark.usefixtures("llama2_vocabulary")
def test_tokenizer_appending_eos(eos_llara):
    transformer = eos_llara[0]
    eos = transformer.tokenizer.eos_token_id
    assert transformer.tokenizer("x")["input_ids"][-1] == eos
    loss = EBAEEBARLoss(eos_llara)
    collator = EBAEEBARDataCollator(eos_llara, cutoff_length=60)
    long_text, long_ids = distinct_word_text(transformer.tokenizer, 100)
    pairs = [(long_text, PAIRS[0][1])] + PAIRS[1:]
    features = pair_features(eos_llara, pairs, cutoff_length=60)
    batch = build(eos_llara, pairs, cutoff_length=60)
    suffixes = transformer.suffix_ids("passage") + transformer.suffix_ids("query")
    for row, (text, _) in enumerate(pairs):
        text_ids = transformer.tokenizer(text, add_special_tokens=False)["input_ids"]
        real = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        # The text is the raw row without the appended EOS; the suffixes follow it directly.
        assert real == transformer.prefix_ids + text_ids[: collator.text_budget] + suffixes
    assert batch.input_ids.shape[1] == 60
    # The EBAE target is the text tokenised alone to the cutoff, EOS included (59 text tokens), minus EOS.
    assert [t for t in batch.ebae_target_ids[0].tolist() if t != IGNORE_INDEX] == sorted(long_ids[:59])
    assert eos not in batch.ebar_target_ids.tolist()[0]
    assert torch.isfinite(sum(loss(features).values()))


@pytest.mark.parametrize("implementation", ATTENTION)
def test_bfloat16_model_gets_a_bfloat16_mask_and_a_finite_loss(
    reference_llara, reference_texts, reference, implementation
):
    use_attention(reference_llara, implementation)
    reference_llara.to(torch.bfloat16)
    loss = EBAEEBARLoss(reference_llara)
    features = pair_features(reference_llara, reference_texts["pretrain_pairs"])
    seen = {}
    decoder = reference_llara[0].causal_lm.get_decoder()
    handle = decoder.register_forward_pre_hook(lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True)
    try:
        with torch.no_grad():
            components = loss(features)
    finally:
        handle.remove()
    # The module turns the collator's boolean mask into the model's dtype (0 allowed, the dtype's minimum not).
    assert seen["attention_mask"].dtype == torch.bfloat16
    assert set(seen["attention_mask"].unique().tolist()) == {0.0, torch.finfo(torch.bfloat16).min}
    assert all(torch.isfinite(value) for value in components.values())
    # bfloat16 is coarse, but the loss must stay near the float32 reference value.
    assert sum(components.values()).item() == pytest.approx(reference["pretrain"]["total_loss"], abs=0.1)


@pytest.mark.slow
def test_training_logs_each_component_and_moves_the_prompt_embeddings(reference_llara, reference_texts, tmp_path):
    pairs = reference_texts["pretrain_pairs"]
    dataset = Dataset.from_dict({"text": [p[0] for p in pairs], "next_text": [p[1] for p in pairs]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=3,
        max_steps=2,
        logging_steps=1,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
    )
    embeddings = reference_llara[0].causal_lm.get_input_embeddings().weight
    prompt_ids = list(reference_llara[0].prompt_token_ids.values())
    before = embeddings[prompt_ids].detach().clone()
    trainer = SentenceTransformerTrainer(
        model=reference_llara,
        args=args,
        train_dataset=dataset,
        loss=EBAEEBARLoss(reference_llara),
        data_collator=EBAEEBARDataCollator(reference_llara),
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry and "ebae" in entry]
    assert len(logged) == 2
    for entry in logged:
        assert entry["loss"] == pytest.approx(entry["ebae"] + entry["ebar"] + entry["lm"], abs=1e-3)
    assert not torch.allclose(embeddings[prompt_ids], before)
