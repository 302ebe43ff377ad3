"""Naming expressions from text: the description table, zero-shot scores over candidate texts, the
`zero-shot-video-classification` pipeline and the closest description of a clip decided unknown."""

import logging

import pytest
import torch
from transformers import AutoTokenizer, CLIPModel, pipeline

from hesp_hf import HESPVideoProcessor
from hesp_hf.data.descriptions import DESCRIPTIONS, describe, descriptions_except
from hesp_hf.inference.prediction import predict_clips
from hesp_hf.inference.zero_shot import CandidateScorer, candidate_texts, token_ids

from .conftest import LABELS


def test_the_table_reads_the_presets_class_names():
    from hesp_hf.data.presets import PRESETS

    for preset in PRESETS.values():
        for name in preset.class_names:
            assert describe(name) in DESCRIPTIONS.values(), (preset.name, name)
    assert describe("Happy") == describe("happiness") == "eyes narrowed, lip corners up"
    assert describe("contempt") == "one lip corner raised"
    with pytest.raises(ValueError, match="No description for 'boredom'"):
        describe("boredom")
    others = descriptions_except(["happy", "Sad", "neutral"])
    assert "happiness" not in others and "sadness" not in others and "contempt" in others and len(others) == 8


def test_candidate_texts_and_their_errors():
    assert candidate_texts(["contempt", "a smirk"]) == ["one lip corner raised", "a smirk"]
    assert candidate_texts(["contempt"], "a face: {}", use_descriptions=False) == ["a face: contempt"]
    for bad, message in (
        ([], "non-empty list"),
        (["happy", "HAPPY "], "duplicates"),
        (["happy", 3], "non-empty strings"),
        (["happy", " "], "non-empty strings"),
    ):
        with pytest.raises(ValueError, match=message):
            candidate_texts(bad)
    with pytest.raises(ValueError, match="exactly one"):
        candidate_texts(["happy"], "no slot")


def test_a_text_longer_than_the_tower_is_truncated_with_a_warning(tiny_clip_dir, caplog):
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_dir)
    with caplog.at_level(logging.WARNING):
        ids = token_ids(tokenizer, ["brows raised " * 20, "relaxed face"], limit=16)
    assert len(ids[0]) == 16 and ids[0][-1] == tokenizer.eos_token_id and ids[0][0] == tokenizer.bos_token_id
    assert ids[1] == list(tokenizer("relaxed face")["input_ids"])
    assert "truncated to 16" in caplog.text and "relaxed face" not in caplog.text


@pytest.fixture
def checkpoint(make_model, tiny_clip_dir, tmp_path):
    model = make_model(unknown_threshold=1e9)  # every clip decided unknown
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    HESPVideoProcessor.from_clip(str(tiny_clip_dir), num_frames=4).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_clip_dir).save_pretrained(folder)
    return folder


def reference_probabilities(tiny_clip_dir, checkpoint, clip, texts):
    """Written out independently: the stock CLIP text tower (the model's is frozen CLIP) on the padded texts, the
    model's video embedding, cosine times the logit scale, softmax."""
    from hesp_hf import HESPForOpenSetVideoClassification

    model = HESPForOpenSetVideoClassification.from_pretrained(checkpoint).eval()
    clip_model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_dir)
    inputs = HESPVideoProcessor.from_pretrained(checkpoint)(str(clip), return_tensors="pt")
    with torch.no_grad():
        video = model(**inputs).video_embeds[0]
        text = clip_model.get_text_features(**tokenizer(texts, padding=True, return_tensors="pt")).pooler_output
    cosine = torch.nn.functional.cosine_similarity(video[None], text, dim=-1)
    return (model.logit_scale.exp() * cosine).softmax(dim=-1)


def test_the_pipeline_ranks_candidates_by_their_descriptions(checkpoint, tiny_clip_dir, sample_clip):
    classifier = pipeline("zero-shot-video-classification", model=str(checkpoint))
    labels = ["contempt", "surprise", "a wide open mouth"]
    first = classifier(str(sample_clip), candidate_labels=labels)
    assert sorted(row["label"] for row in first) == sorted(labels)
    assert [row["score"] for row in first] == sorted((row["score"] for row in first), reverse=True)
    texts = [describe("contempt"), describe("surprise"), "a wide open mouth"]
    expected = reference_probabilities(tiny_clip_dir, checkpoint, sample_clip, texts)
    got = {row["label"]: row["score"] for row in first}
    for label, probability in zip(labels, expected.tolist(), strict=True):
        assert got[label] == pytest.approx(probability, abs=1e-5)
    # Deterministic, and order-invariant: permuting the candidates permutes the scores.
    again = classifier(str(sample_clip), candidate_labels=list(reversed(labels)))
    assert {row["label"]: row["score"] for row in again} == pytest.approx(got, abs=1e-6)
    with pytest.raises(ValueError, match="duplicates"):
        classifier(str(sample_clip), candidate_labels=["contempt", "Contempt"])
    with pytest.raises(ValueError, match="candidate_labels"):
        classifier(str(sample_clip))


def test_an_unknown_clip_is_named_by_its_closest_description(checkpoint, sample_clip, tmp_path):
    from hesp_hf.pairing import load_pair

    model, processor = load_pair(str(checkpoint))
    scorer = CandidateScorer(model, AutoTokenizer.from_pretrained(checkpoint))
    rows, _ = predict_clips(
        model, processor, [str(sample_clip)], tmp_path / "rows.csv", num_workers=0, progress=False, describer=scorer
    )
    row = rows[0]
    assert row["label"] == "unknown"
    candidates = descriptions_except(LABELS)  # the table's expressions the model does not know
    assert row["closest_expression"] in candidates
    assert row["closest_description"] == candidates[row["closest_expression"]]
    inputs = processor(str(sample_clip), return_tensors="pt")
    with torch.no_grad():
        embed = model(**inputs).video_embeds
    logits = scorer.logits(embed, list(candidates.values()))[0]
    assert row["closest_expression"] == list(candidates)[int(logits.argmax())]
    from hesp_hf.inference.prediction import read_rows

    assert read_rows(tmp_path / "rows.csv")[0]["closest_description"] == row["closest_description"]


def test_a_model_that_knows_every_described_expression_names_nothing(tiny_clip_dir, sample_clip):
    from hesp_hf import HESPForOpenSetVideoClassification

    model = HESPForOpenSetVideoClassification.from_clip(
        str(tiny_clip_dir), labels=list(DESCRIPTIONS), num_frames=4, unknown_threshold=1e9
    ).eval()
    scorer = CandidateScorer(model, AutoTokenizer.from_pretrained(tiny_clip_dir))
    assert scorer.closest_unknown(torch.randn(2, model.config.projection_dim)) == []
    processor = HESPVideoProcessor.from_clip(str(tiny_clip_dir), num_frames=4)
    rows, _ = predict_clips(model, processor, [str(sample_clip)], num_workers=0, progress=False, describer=scorer)
    assert rows[0]["label"] == "unknown" and "closest_expression" not in rows[0]
