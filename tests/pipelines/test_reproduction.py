"""The reproduction pipeline's nested sections: the pipeline's defaults (bf16 "auto") under the config's own keys."""

import torch

from llara_st.pipelines.reproduction import ReproductionPipeline, parse_reproduction_config


def _pipeline(tmp_path, bf16, finetune=None):
    wikitext = tmp_path / "wiki.test.raw"
    wikitext.write_text(" = Title = \n\n A paragraph . \n\n Another one . \n", encoding="utf8")
    adapt = {"wikitext_paths": [str(wikitext)]}
    beir = tmp_path / "beir"  # a BEIR folder of its own: the default, ../shared/data/scifact, may be absent
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "A document."}\n', encoding="utf8")
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "A query?"}\n', encoding="utf8")
    for split in ("train", "dev", "test"):
        (beir / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf8")
    config = {"output_dir": str(tmp_path / "run"), "bf16": bf16, "beir_dir": str(beir), "adapt": adapt}
    config["finetune"] = finetune or {}
    return ReproductionPipeline(parse_reproduction_config(config))


def test_pipeline_bf16_auto_is_float32_where_bf16_is_emulated(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    pipeline = _pipeline(tmp_path, "auto")
    assert pipeline.finetune_arguments("unadapted", str(tmp_path / "model")).bf16 is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert pipeline.finetune_arguments("unadapted", str(tmp_path / "model")).bf16 is True


def test_a_sections_own_bf16_wins_over_the_pipeline_default(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    pipeline = _pipeline(tmp_path, "auto", finetune={"bf16": False})
    assert pipeline.finetune_arguments("unadapted", str(tmp_path / "model")).bf16 is False
