"""The BLIP captioner (medcap.models.captioner) on tiny random-initialised models.

A tiny BLIP (hidden 32, 2 layers, 32 px) trains a step in milliseconds; importing
transformers takes most of this file's time.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from medcap.errors import MedcapError, MissingWeightsError
from medcap.models.captioner import (
    METADATA_FILE,
    SPECIAL_TOKENS,
    Captioner,
    ConceptPrompt,
    GeneratedNoRepeatNGram,
    GenerationSettings,
    count_parameters,
    large_sizes_config,
    train_wordpiece,
)

CAPTIONS = ["axial ct of the chest shows a 2.3 cm nodule.", "plain x-ray of the knee (ap view).",
            "mri of the brain, t2-weighted.", "ultrasound of the liver"]
# What the model must give back: decode repaired, acronyms restored as whole words.
EXPECTED = ["axial CT of the chest shows a 2.3 cm nodule.", "plain X-ray of the knee (AP view).",
            "MRI of the brain, T2-weighted.", "ultrasound of the liver"]


def _images(size=32):
    return [Image.fromarray(np.full((size, size, 3), v, dtype=np.uint8)) for v in (0, 80, 160, 240)]


def _tiny(**kw):
    kw.setdefault("image_size", 32)
    return Captioner.from_scratch("tiny", CAPTIONS, vocab_size=200, seed=0, **kw)


def _train(captioner, images, captions, steps=60, lr=2e-2):
    batch = captioner.encode_captions(captions)
    batch["pixel_values"] = captioner.pixel_values(images)
    opt = torch.optim.AdamW([p for p in captioner.model.parameters() if p.requires_grad], lr=lr)
    captioner.model.train()
    for _ in range(steps):
        loss = captioner.loss(captioner.model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return loss.item()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def overfit():
    captioner = _tiny()
    loss = _train(captioner, _images(), CAPTIONS)
    return captioner, loss


def test_tiny_blip_overfits_four_captions_and_generates_them_exactly(overfit):
    captioner, loss = overfit
    assert loss < 0.05
    assert captioner.generate(_images(), num_beams=1, max_new_tokens=30) == EXPECTED
    assert captioner.generate(_images(), batch_size=3, num_beams=3, max_new_tokens=30) == EXPECTED


def test_save_and_reload_give_identical_generations_and_settings(overfit, tmp_path):
    captioner, _ = overfit
    captioner.generation = GenerationSettings(num_beams=2, no_repeat_ngram_size=0, max_new_tokens=30)
    folder = captioner.save_pretrained(tmp_path / "model")
    files = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", METADATA_FILE} <= files
    assert {"processor_config.json", "preprocessor_config.json"} & files
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left

    loaded = Captioner.from_pretrained(folder)
    assert loaded.image_size == 32 and loaded.max_length == 200
    assert loaded.tokenizer.model_max_length == 200
    assert loaded.generation == captioner.generation
    assert loaded.generate(_images()) == captioner.generate(_images()) == EXPECTED
    meta = json.loads((folder / METADATA_FILE).read_text())
    assert meta["source"] == "scratch:tiny" and "generation" not in meta
    generation = json.loads((folder / "generation_config.json").read_text())   # transformers' GenerationConfig
    assert generation["num_beams"] == 2 and generation["max_new_tokens"] == 30


def test_generation_config_json_round_trips_every_setting(tmp_path):
    from transformers import GenerationConfig

    settings = GenerationSettings(num_beams=3, no_repeat_ngram_size=3, max_new_tokens=17, repetition_penalty=1.2,
                                  length_penalty=0.5, prompt="axial ct of", postprocess=False)
    settings.save_pretrained(tmp_path)
    assert GenerationSettings.from_pretrained(tmp_path) == settings
    plain = GenerationConfig.from_pretrained(tmp_path)          # transformers reads it as its own
    assert plain.num_beams == 3 and plain.no_repeat_ngram_size == 3 and plain.max_new_tokens == 17


def test_a_folder_written_before_generation_config_json_keeps_its_settings(overfit, tmp_path):
    captioner, _ = overfit
    captioner.generation = GenerationSettings(num_beams=2, no_repeat_ngram_size=0, max_new_tokens=30)
    folder = captioner.save_pretrained(tmp_path / "model")
    meta = json.loads((folder / METADATA_FILE).read_text())   # the old layout: settings in medcap_captioner.json
    meta["generation"] = {"num_beams": 4, "no_repeat_ngram_size": 3, "max_new_tokens": 9, "prompt": "",
                          "postprocess": True, "repetition_penalty": 1.0, "length_penalty": 1.0}
    (folder / METADATA_FILE).write_text(json.dumps(meta))
    (folder / "generation_config.json").unlink()
    loaded = Captioner.from_pretrained(folder)
    assert loaded.generation == GenerationSettings(num_beams=4, no_repeat_ngram_size=3, max_new_tokens=9)
    meta["generation"]["num_beam"] = 2
    (folder / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(MedcapError, match="unknown generation setting 'num_beam'; did you mean 'num_beams'"):
        Captioner.from_pretrained(folder)


def test_caption_processor_round_trips_through_the_model_folder(tmp_path):
    captioner = _tiny(max_length=40)
    captioner.pre_resize = 16
    captioner.concept_prompt = ConceptPrompt([("C1", "chest"), ("C2", "knee")], max_tokens=5)
    loaded = Captioner.from_pretrained(captioner.save_pretrained(tmp_path / "model")).processor
    assert loaded.settings() == captioner.processor.settings()
    assert loaded.tokenizer.get_vocab() == captioner.tokenizer.get_vocab()
    assert torch.equal(loaded(_images()), captioner.processor(_images()))
    assert loaded.concept_prompt_ids([["C2", "C1"]], 1) == captioner.processor.concept_prompt_ids([["C2", "C1"]], 1)


def test_labels_mask_padding_to_minus_100_and_decoding_starts_from_dec():
    captioner = _tiny()
    batch = captioner.encode_captions(["a", CAPTIONS[0]])
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    dec = captioner.tokenizer.convert_tokens_to_ids("[DEC]")
    assert (ids[:, 0] == dec).all() and dec == captioner.model.config.text_config.bos_token_id
    assert mask[0].sum() == 3                          # [DEC] a [SEP]
    assert (labels[0, 3:] == -100).all()               # the padding is out of the loss (REFERENCE §2 bug)
    assert (labels[mask == 1] == ids[mask == 1]).all()
    assert not (labels[1] == -100).any()


def test_padding_to_max_length_gives_the_same_loss_as_padding_to_longest():
    captioner = _tiny(max_length=40)
    pixels = captioner.pixel_values(_images())
    losses = []
    for padding in ("longest", "max_length"):
        batch = captioner.encode_captions(CAPTIONS, padding=padding)
        batch["pixel_values"] = pixels
        assert batch["input_ids"].shape[1] == (40 if padding == "max_length" else 15)
        losses.append(captioner.loss(captioner.model.eval(), batch).item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_long_captions_are_truncated_to_max_length_and_keep_their_end_token():
    captioner = _tiny(max_length=12)
    long = " ".join(["nodule"] * 50)
    assert captioner.caption_lengths([long, "a"]) == [52, 3]
    batch = captioner.encode_captions([long, "a"])
    sep = captioner.tokenizer.sep_token_id
    assert batch["input_ids"].shape[1] == 12 and batch["input_ids"][0, -1] == sep


def test_empty_captions_train_the_model_to_stop_at_once():
    captioner = _tiny()
    batch = captioner.encode_captions(["", "a"])
    sep = captioner.tokenizer.sep_token_id
    assert batch["labels"][0, :2].tolist() == [batch["input_ids"][0, 0].item(), sep]


def test_the_tokenizer_is_learned_from_the_captions_with_blip_special_tokens():
    tok = train_wordpiece(CAPTIONS * 3, vocab_size=150)
    assert tok.pad_token_id == 0 and tok.bos_token == "[DEC]"
    assert tok.tokenize("Axial CT of the chest") == ["axial", "ct", "of", "the", "chest"]
    assert tok.tokenize("chestnut") == ["chest", "##n", "##u", "##t"]   # unseen words are spelled
    assert train_wordpiece(CAPTIONS * 3, vocab_size=150).get_vocab() == tok.get_vocab()  # deterministic
    small = train_wordpiece(CAPTIONS, vocab_size=len(SPECIAL_TOKENS) + 2 * 30 + 3)
    assert "the" in small.get_vocab() and "ultrasound" not in small.get_vocab()  # most frequent words first
    with pytest.raises(MedcapError, match="no non-empty training captions"):
        train_wordpiece(["", "  "])


def test_other_image_size_interpolates_position_embeddings():
    captioner = _tiny(image_size=32)
    captioner.image_size = 48        # the encoder was built for 32 px
    assert captioner.interpolate_pos_encoding
    pixels = captioner.pixel_values(_images(64))
    assert pixels.shape == (4, 3, 48, 48)
    batch = dict(captioner.encode_captions(CAPTIONS), pixel_values=pixels)
    assert torch.isfinite(captioner.loss(captioner.model, batch))
    assert len(captioner.generate(_images(64), num_beams=1, max_new_tokens=5)) == 4


def test_pre_resize_squashes_images_before_the_processor_as_the_authors_code_did():
    captioner = _tiny(image_size=32)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 60, 3), dtype=np.uint8))
    captioner.pre_resize = 16
    assert torch.equal(captioner.pixel_values([image]), captioner.pixel_values([image.resize((16, 16))]))


def test_a_prompt_is_given_to_the_decoder_masked_in_labels_and_cut_from_the_output():
    captioner = _tiny(generation=GenerationSettings(prompt="axial ct of", num_beams=1, no_repeat_ngram_size=0))
    batch = captioner.encode_captions(["the chest"])
    assert batch["labels"][0, :4].tolist() == [-100] * 4      # [DEC] axial ct of
    pixels = captioner.pixel_values(_images()[:1])
    ours = captioner.generate_ids(pixels, max_new_tokens=6)
    prompt = torch.tensor([captioner.tokenizer("axial ct of")["input_ids"]])
    raw = captioner.model.generate(pixel_values=pixels, input_ids=prompt, max_new_tokens=6, num_beams=1)
    assert raw[0, 1:4].tolist() == prompt[0, 1:4].tolist()   # the raw output repeats the prompt
    assert ours[0].tolist() == raw[0, 4:].tolist()           # ours starts after it


PROMPT = ConceptPrompt([("C1", "axial ct"), ("C2", "chest"), ("C3", "brain nodule")], max_tokens=5)
# (the training task adds the prompt text to the captions a scratch tokenizer learns from, so ";" is known)


def test_concept_prompt_names_known_concepts_most_frequent_first_and_ends_with_sep():
    from medcap.data.vocab import ConceptVocabulary

    vocab = ConceptVocabulary.from_concepts({"a": ["C2", "C1"], "b": ["C1"], "c": ["C3", "C1"]},
                                            names={"C1": "computed tomography", "C3": "small nodule"})
    prompt = ConceptPrompt.from_vocabulary(vocab, max_tokens=6)
    assert prompt.concepts == [("C1", "computed tomography"), ("C2", "C2"), ("C3", "small nodule")]  # C2: no name
    assert prompt.text(["C3", "C9", "C1"]) == "computed tomography; small nodule"   # C9 unseen in training
    tok = Captioner.from_scratch("tiny", CAPTIONS + [PROMPT.text(["C1", "C2"])], image_size=32).tokenizer
    ids = PROMPT.ids(tok, ["C3", "C2", "C1"])
    assert tok.decode(ids) == "axial ct ; chest ; [SEP]"            # cut to 5 WordPieces, then [SEP]
    assert PROMPT.ids(tok, []) == [tok.sep_token_id]
    assert ConceptPrompt.from_dict(PROMPT.to_dict()).concepts == PROMPT.concepts
    with pytest.raises(MedcapError, match="concept_prompt"):
        ConceptPrompt.from_dict({"concepts": [["C1"]]})


def test_concept_prompts_are_inputs_not_targets_and_captions_follow_them():
    captioner = _tiny()
    tok = captioner.tokenizer
    prompts = [PROMPT.ids(tok, ["C1", "C2"]), PROMPT.ids(tok, [])]
    batch = captioner.encode_captions(["the chest", "mri of the brain"])
    with_prompts = captioner.caption_encoder()(["the chest", "mri of the brain"], prompts)
    ids, mask, labels = with_prompts["input_ids"], with_prompts["attention_mask"], with_prompts["labels"]
    for row, prompt in enumerate(prompts):
        n = int(batch["attention_mask"][row].sum())                  # [DEC] caption [SEP]
        start = 1 + len(prompt)
        assert ids[row, 1:start].tolist() == prompt                  # [DEC] prompt caption [SEP] [PAD]...
        assert ids[row, start:start + n - 1].tolist() == batch["input_ids"][row, 1:n].tolist()
        assert (labels[row, :start] == -100).all()                   # the prompt is never a target
        assert labels[row, start:start + n - 1].tolist() == batch["input_ids"][row, 1:n].tolist()
        assert mask[row].sum() == start + n - 1 and (labels[row][mask[row] == 0] == -100).all()


def test_concept_prompted_generation_is_the_same_batched_and_alone_and_continues_training_positions():
    captioner = _tiny()
    captioner.model.eval()
    tok = captioner.tokenizer
    prompts = [PROMPT.ids(tok, ["C1", "C2", "C3"]), PROMPT.ids(tok, ["C2"]), PROMPT.ids(tok, [])]
    pixels = captioner.pixel_values(_images()[:3])
    settings = {"num_beams": 1, "max_new_tokens": 5, "no_repeat_ngram_size": 0}
    with torch.no_grad():
        batched = captioner.generate_ids(pixels, prompts=prompts, **settings)
        for i, prompt in enumerate(prompts):  # alone: no padding at all
            alone = captioner.generate_ids(pixels[i:i + 1], prompts=[prompt], **settings)
            assert alone[0].tolist() == batched[i, :alone.shape[1]].tolist()
            # the first generated token is what the training layout ([DEC] prompt, right-aligned
            # positions from 0) predicts next: left padding kept every token's position
            row = torch.tensor([[captioner.model.config.text_config.bos_token_id, *prompt]])
            logits = captioner.model(pixel_values=pixels[i:i + 1], input_ids=row).logits
            assert alone[0, 0].item() == logits[0, -1].argmax().item()


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngrams_count_the_caption_not_the_prompt(n):
    from transformers import NoRepeatNGramLogitsProcessor

    rng = np.random.default_rng(n)
    for _ in range(50):  # without a prompt: exactly transformers' rule
        ids = torch.tensor(rng.integers(0, 4, (3, int(rng.integers(0, 9)))))
        scores = torch.zeros(3, 4)
        ours = GeneratedNoRepeatNGram(n, 0)(ids, scores.clone())
        assert torch.equal(ours, NoRepeatNGramLogitsProcessor(n)(ids, scores.clone()))
    prompt, caption = [7, 8, 9], [5, 7, 8]        # the caption copies "7 8" from the prompt: 9 may follow
    scores = GeneratedNoRepeatNGram(3, len(prompt))(torch.tensor([prompt + caption]), torch.zeros(1, 10))
    assert not torch.isinf(scores).any()
    scores = GeneratedNoRepeatNGram(3, len(prompt))(torch.tensor([prompt + [7, 8, 9, 7, 8]]), torch.zeros(1, 10))
    assert torch.isinf(scores[0, 9]) and torch.isinf(scores).sum() == 1   # a repeat inside the caption is banned


def test_a_concept_prompted_model_needs_concepts_and_keeps_its_prompt_when_saved(tmp_path):
    captioner = _tiny(generation=GenerationSettings(num_beams=1, max_new_tokens=4))
    captioner.concept_prompt = PROMPT
    with pytest.raises(MedcapError, match="trained with concept prompts"):
        captioner.generate(_images()[:1])
    with pytest.raises(MedcapError, match="concepts for 2 images, expected 1"):
        captioner.generate(_images()[:1], concepts=[["C1"], ["C2"]])
    expected = captioner.generate(_images()[:2], concepts=[["C1"], ["C2", "C3"]])
    loaded = Captioner.from_pretrained(captioner.save_pretrained(tmp_path / "model"))
    assert loaded.concept_prompt.to_dict() == PROMPT.to_dict()
    assert loaded.generate(_images()[:2], concepts=[["C1"], ["C2", "C3"]]) == expected
    meta = json.loads((tmp_path / "model" / METADATA_FILE).read_text())
    meta["concept_prompt"] = {"max_tokens": "many"}
    (tmp_path / "model" / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(MedcapError, match=METADATA_FILE):
        Captioner.from_pretrained(tmp_path / "model")


def test_frozen_vision_encoder_stays_unchanged_and_checkpointing_gives_the_same_loss():
    captioner = _tiny()
    pixels = captioner.pixel_values(_images())
    batch = dict(captioner.encode_captions(CAPTIONS), pixel_values=pixels)
    plain = captioner.loss(captioner.model.train(), batch).item()
    captioner.enable_gradient_checkpointing()
    assert captioner.loss(captioner.model, batch).item() == pytest.approx(plain, rel=1e-5)
    captioner.freeze_vision()
    before = {k: v.clone() for k, v in captioner.model.vision_model.state_dict().items()}
    text_before = captioner.model.text_decoder.bert.embeddings.word_embeddings.weight.clone()
    _train(captioner, _images(), CAPTIONS, steps=2)
    after = captioner.model.vision_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(text_before, captioner.model.text_decoder.bert.embeddings.word_embeddings.weight)


def test_concept_probe_adds_its_weighted_loss_and_trains_the_image_encoder():
    import torch

    from medcap.models.guided import ConceptGuidedBlip, captioning_model

    captioner = _tiny()
    batch = captioner.encode_captions(["ct of the chest", "mri of the brain"])
    batch["pixel_values"] = captioner.pixel_values(_images()[:2])
    concepts = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    guided = ConceptGuidedBlip(captioner.model, n_concepts=3, weight=2.0)
    total, caption = guided(**batch, concepts=concepts)
    assert torch.allclose(caption, captioner.loss(captioner.model, batch))
    probe = torch.nn.functional.binary_cross_entropy_with_logits(
        guided.probe(captioner.model(**batch).image_embeds.mean(1)), concepts)
    assert torch.allclose(total, caption + 2.0 * probe)
    (total - caption).backward()  # the probe's loss alone reaches the image encoder, not the decoder
    assert captioner.model.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0
    decoder_grad = captioner.model.text_decoder.bert.encoder.layer[0].output.dense.weight.grad
    assert decoder_grad is None or decoder_grad.abs().sum() == 0
    assert captioning_model(guided) is captioner.model and captioning_model(captioner.model) is captioner.model


def test_missing_pretrained_weights_fail_with_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    with pytest.raises(MissingWeightsError) as e:
        Captioner.from_pretrained("Salesforce/blip-image-captioning-large")
    msg = e.value.format()
    assert "\n" not in msg
    assert "hf download Salesforce/blip-image-captioning-large" in msg and "HF_HOME" in msg


def test_model_folder_missing_files_is_a_one_line_error(overfit, tmp_path):
    folder = overfit[0].save_pretrained(tmp_path / "model")
    (folder / "model.safetensors").unlink()
    (folder / "tokenizer.json").unlink()
    with pytest.raises(MedcapError, match="missing model.safetensors or model.safetensors.index.json, "
                                          "tokenizer.json or vocab.txt") as e:
        Captioner.from_pretrained(folder)
    assert "\n" not in e.value.format()
    with pytest.raises(MedcapError, match="model folder not found"):
        Captioner.from_pretrained(tmp_path / "nowhere")


def test_unknown_size_is_refused():
    with pytest.raises(MedcapError, match="unknown captioner size 'huge'"):
        Captioner.from_scratch("huge", CAPTIONS)


def test_large_size_config_has_blip_large_dimensions():
    cfg = large_sizes_config()
    assert (cfg["vision_config"]["hidden_size"], cfg["vision_config"]["num_hidden_layers"]) == (1024, 24)
    assert (cfg["text_config"]["hidden_size"], cfg["text_config"]["num_hidden_layers"]) == (768, 12)
    from transformers import BlipConfig, BlipForConditionalGeneration

    with torch.device("meta"):  # no memory: parameter count only
        model = BlipForConditionalGeneration(BlipConfig(**cfg))
    assert count_parameters(model) == pytest.approx(446.3e6, rel=1e-3)


@pytest.mark.slow
def test_real_size_blip_takes_a_training_step_at_batch_1_on_cpu():
    captioner = Captioner.from_scratch("large", CAPTIONS, image_size=224, seed=0)
    assert captioner.interpolate_pos_encoding            # built for 384 px, fed 224 px (REFERENCE §1)
    assert captioner.num_parameters() == pytest.approx(446.3e6, rel=1e-3)
    batch = dict(captioner.encode_captions(CAPTIONS[:1], padding="max_length"),
                 pixel_values=captioner.pixel_values(_images(224)[:1]))
    opt = torch.optim.AdamW(captioner.model.parameters(), lr=1e-5)
    first = captioner.loss(captioner.model.train(), batch)
    first.backward()
    opt.step()
    assert torch.isfinite(first)
