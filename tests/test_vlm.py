"""The generic vision-language captioner (medcap.models.vlm, medcap.training.vlm) on tiny random models
of two architecture families: Qwen2-VL and Idefics3 (SmolVLM's layout)."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import torch_threads

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

FAMILIES = ["qwen2_vl", "idefics3"]
CAPTIONS = ["CT scan of the chest showing a nodule.", "MRI of the brain with a lesion in the left lobe.",
            "Radiograph of the right knee."]


def _images():
    from PIL import Image

    return [Image.new("RGB", (80, 70), (200, 30, 30)), Image.new("RGB", (64, 64), (30, 30, 200)),
            Image.new("RGB", (90, 90), (30, 200, 30))]


def _tiny(family: str, seed: int = 0):
    from medcap.models.vlm import VLMCaptioner

    return VLMCaptioner.from_scratch(family, CAPTIONS * 5, image_size=32, seed=seed, max_length=24)


def _inputs(captioner, batch):
    return {k: v for k, v in batch.items() if k != "labels"}


@pytest.fixture(scope="module", params=FAMILIES)
def overfit(request):
    """(captioner, batch, first loss, last loss): 40 AdamW steps on one batch of three captions."""
    with torch_threads(1):
        captioner = _tiny(request.param)
        batch = captioner.encode(_images(), captioner.prompts(3), CAPTIONS)
        opt = torch.optim.AdamW(captioner.model.parameters(), lr=3e-3)
        losses = []
        for _ in range(40):
            loss = captioner.loss(captioner.model, batch)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
    captioner.model.eval()
    return captioner, batch, losses[0], losses[-1]


def test_labels_are_the_caption_tokens_only():
    captioner = _tiny("qwen2_vl")
    batch = captioner.encode(_images()[:2], captioner.prompts(2), CAPTIONS[:2])
    tok = captioner.tokenizer
    for row, caption in zip(batch["labels"], CAPTIONS[:2], strict=True):
        kept = row[row != -100].tolist()
        assert kept == tok(caption, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    # left padding: every row ends with its caption, pads come first
    assert (batch["attention_mask"][:, -1] == 1).all()


def test_a_few_steps_overfit_one_batch(overfit):
    captioner, _, first, last = overfit
    assert last < 0.2 * first
    with torch_threads(1):
        captions = captioner.generate(_images(), batch_size=3)
    assert [c.lower() for c in captions] == [c.lower() for c in CAPTIONS]  # an uncased tokenizer


def test_batched_generation_equals_one_by_one(overfit):
    from medcap.models.prompting import ConceptPrompt

    captioner, _, _, _ = overfit
    # concept prompts of different lengths: the rows of a batch are padded differently
    captioner.concept_prompt = ConceptPrompt([("C1", "lung"), ("C2", "left kidney cyst"), ("C3", "x")])
    concepts = [["C1"], ["C1", "C2", "C3"], []]
    try:
        with torch_threads(1):
            batched = captioner.generate(_images(), batch_size=3, concepts=concepts, max_new_tokens=12)
            single = [captioner.generate([im], batch_size=1, concepts=[c], max_new_tokens=12)[0]
                      for im, c in zip(_images(), concepts, strict=True)]
            beam = {"max_new_tokens": 12, "num_beams": 2, "no_repeat_ngram_size": 3}
            beams = captioner.generate(_images(), batch_size=3, concepts=concepts, **beam)
            beams_single = [captioner.generate([im], batch_size=1, concepts=[c], **beam)[0]
                            for im, c in zip(_images(), concepts, strict=True)]
    finally:
        captioner.concept_prompt = None
    assert batched == single
    assert beams == beams_single


def test_save_then_load_gives_equal_logits(overfit, tmp_path):
    from medcap.models.vlm import VLMCaptioner

    captioner, batch, _, _ = overfit
    captioner.save_pretrained(tmp_path / "model")
    loaded = VLMCaptioner.from_pretrained(tmp_path / "model")
    loaded.model.eval()
    with torch.no_grad(), torch_threads(1):
        a = captioner.model(**_inputs(captioner, batch)).logits
        b = loaded.model(**_inputs(loaded, batch)).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert loaded.instruction == captioner.instruction and loaded.image_size == captioner.image_size


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_folder_loads_and_merges_with_equal_logits(family, tmp_path):
    from transformers import AutoModelForImageTextToText

    from medcap.models.vlm import LoraSettings, VLMCaptioner, merge_folder

    with torch_threads(1):
        base = _tiny(family)
        base.save_pretrained(tmp_path / "base")
        tuned = VLMCaptioner.from_pretrained(tmp_path / "base")
        tuned.add_lora(LoraSettings(r=4, alpha=8))
        names = [n for n, p in tuned.model.named_parameters() if p.requires_grad]
        assert names and all("lora_" in n for n in names)
        torch.manual_seed(1)
        for n, p in tuned.model.named_parameters():  # lora_B starts at 0: make the adapter do something
            if "lora_B" in n:
                p.data.normal_(0, 0.5)
        tuned.save_pretrained(tmp_path / "adapter")
        assert (tmp_path / "adapter" / "adapter_config.json").is_file()
        assert not (tmp_path / "adapter" / "model.safetensors").exists()
        batch = tuned.encode(_images(), tuned.prompts(3))
        adapter = VLMCaptioner.from_pretrained(tmp_path / "adapter")
        merge_folder(tmp_path / "adapter", tmp_path / "merged")
        plain = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged")
        with torch.no_grad():
            tuned.model.eval(), adapter.model.eval(), plain.eval(), base.model.eval()
            want = tuned.model(**batch).logits
            loaded = adapter.model(**batch).logits
            merged = plain(**batch).logits
            without = base.model(**batch).logits
    assert adapter.is_adapter
    torch.testing.assert_close(loaded, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(merged, want, rtol=0, atol=1e-5)
    assert (without - want).abs().max() > 1e-3   # the adapter changed the model


def test_the_pipeline_of_serve_and_report_captions_with_a_vlm_folder(tmp_path):
    import medcap
    from medcap.inference.pipeline import Pipeline

    with torch_threads(1):
        _tiny("idefics3").save_pretrained(tmp_path / "vlm")
        pipeline = Pipeline(captions=tmp_path / "vlm")
        caption = pipeline.analyze_image(_images()[0]).caption
    assert isinstance(pipeline.caption_model, medcap.VLMCaptioner) and isinstance(caption, str)


def test_a_resumed_lora_run_ends_with_the_adapter_weights_of_an_uninterrupted_one(synth_small, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from medcap.models.vlm import VLMCaptioner
    from medcap.training.vlm import VLMCaptionConfig, VLMCaptionTask, train_vlm_captioner

    with torch_threads(1):
        VLMCaptioner.from_scratch("qwen2_vl", CAPTIONS, image_size=32, seed=0, max_length=16).save_pretrained(
            tmp_path / "base")
        cfg = VLMCaptionConfig(model=str(tmp_path / "base"), lora_r=4, lora_dropout=0.1, image_size=32, max_length=16,
                               batch_size=16, epochs=2, max_minutes=0, eval_images=0, progress=False, lr=1e-2,
                               warmup_steps=0)
        train_vlm_captioner(cfg, synth_small, tmp_path / "a", log=lambda _: None)

        step = VLMCaptionTask.training_step
        calls = {"n": 0}

        def crash_in_epoch_two(self, model, batch):
            calls["n"] += 1
            if calls["n"] == 5:  # 3 steps per epoch: in the middle of epoch 2
                raise RuntimeError("simulated crash")
            return step(self, model, batch)

        monkeypatch.setattr(VLMCaptionTask, "training_step", crash_in_epoch_two)
        with pytest.raises(RuntimeError, match="simulated crash"):
            train_vlm_captioner(cfg, synth_small, tmp_path / "b", log=lambda _: None)
        monkeypatch.setattr(VLMCaptionTask, "training_step", step)
        train_vlm_captioner(cfg, synth_small, tmp_path / "b", resume=True, log=lambda _: None)
    a = load_file(tmp_path / "a" / "model" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert any(v.abs().max() > 0 for k, v in a.items() if "lora_B" in k)  # it trained
    # A VLM folder is a medcap model folder like BLIP's: provenance, a model card, and weight files
    # that are checked at load (a flipped bit inside the adapter is one line naming the file).
    import json

    from medcap.errors import MedcapError

    folder = tmp_path / "a" / "model"
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["kind"] == "captioner" and prov["data"]["synthetic"] is True
    assert "Not for clinical use" in (folder / "README.md").read_text()
    assert "adapter_model.safetensors" in json.loads((folder / "checksums.json").read_text())["files"]
    assert VLMCaptioner.from_pretrained(folder).provenance["data"]["synthetic"] is True
    weights = folder / "adapter_model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) - 7] ^= 0x10
    weights.write_bytes(bytes(raw))
    with pytest.raises(MedcapError, match="damaged or changed") as e:
        VLMCaptioner.from_pretrained(folder)
    assert e.value.file is not None and Path(e.value.file).name == "adapter_model.safetensors"


def test_four_bit_quantization_on_a_cpu_is_a_one_line_error(cli, synth_small, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    rc, _, err = cli("train", "captions", "--config", "vlm-tiny", "--data", synth_small, "--out", tmp_path / "r",
                     "--set", f"model={tmp_path}", "--set", "lora_r=8", "--set", "quantization=4bit")
    assert rc == 2 and "needs a CUDA GPU" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("config", ["qwen2.5-vl-lora", "medgemma-lora", "smolvlm-lora"])
def test_a_real_config_without_its_weights_says_how_to_get_them(cli, synth_small, tmp_path, config):
    rc, _, err = cli("train", "captions", "--config", config, "--data", synth_small, "--out", tmp_path / "r",
                     "--set", "progress=false")
    assert rc != 0 and "are not on this machine" in err and "hf download" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()   # refused before the data is read or the run folder made


def test_a_vlm_run_checks_its_run_folder_and_data_as_a_blip_run_does(synth_small, tmp_path):
    from medcap.errors import MedcapError
    from medcap.training.vlm import VLMCaptionConfig, train_vlm_captioner

    cfg = VLMCaptionConfig(model="scratch:qwen2_vl", image_size=32, max_length=16, epochs=1, progress=False)
    with pytest.raises(MedcapError, match="nothing to resume"):
        train_vlm_captioner(cfg, synth_small, tmp_path / "none", resume=True, log=lambda _: None)
    assert not (tmp_path / "none").exists()   # no processor/ nor config.yaml written before the refusal


def test_vlm_settings_are_refused_on_blip_configs_and_checked_on_vlm_ones(cli, synth_small, tmp_path):
    rc, _, err = cli("train", "captions", "--config", "demo", "--data", synth_small, "--out", tmp_path / "r",
                     "--set", "lora_r=8")
    assert rc == 2 and "lora_r" in err
    rc, _, err = cli("train", "captions", "--config", "vlm-tiny", "--data", synth_small, "--out", tmp_path / "r",
                     "--set", "quantization=8bit")
    assert rc == 2 and "quantization" in err


@pytest.mark.slow
def test_vlm_tiny_trains_predicts_and_a_lora_run_on_top_saves_an_adapter_predict_loads(cli, synth_small, tmp_path):
    quick = ["--set", "epochs=1", "--set", "max_minutes=0", "--set", "image_size=32", "--set", "eval_images=4",
             "--set", "eval_max_new_tokens=8", "--set", "max_new_tokens=8", "--set", "warmup_steps=0",
             "--set", "progress=false"]
    with torch_threads(1):
        rc, _, err = cli("train", "captions", "--config", "vlm-tiny", "--data", synth_small, "--out", tmp_path / "full",
                         *quick)
        assert rc == 0, err
        rc, _, err = cli("train", "captions", "--config", "vlm-tiny", "--data", synth_small, "--out", tmp_path / "lora",
                         "--set", f"model={tmp_path / 'full'}", "--set", "lora_r=8", *quick)
        assert rc == 0, err
        assert (tmp_path / "lora" / "model" / "adapter_config.json").is_file()
        rc, out, err = cli("predict", "captions", "--model", tmp_path / "lora", "--data", synth_small,
                           "--split", "test", "--out", tmp_path / "c.csv", "--beams", "2")
        assert rc == 0, err
        assert "captions/s" in out
        rc, _, err = cli("validate", "captions", tmp_path / "c.csv", "--gold", synth_small / "test_captions.csv")
        assert rc == 0, err
        rc, _, err = cli("export", "--merge", tmp_path / "lora", tmp_path / "merged")
        assert rc == 0, err
        rc, _, err = cli("predict", "captions", "--model", tmp_path / "merged", "--data", synth_small,
                         "--split", "test", "--out", tmp_path / "m.csv", "--beams", "2")
        assert rc == 0, err
    assert (tmp_path / "c.csv").read_text() == (tmp_path / "m.csv").read_text()


@pytest.mark.slow
def test_a_vlm_with_concept_and_retrieval_prompts_trains_saves_and_predicts(cli, synth_small, tmp_path):
    quick = ["--set", "epochs=1", "--set", "max_minutes=0", "--set", "image_size=32", "--set", "eval_images=4",
             "--set", "eval_max_new_tokens=8", "--set", "max_new_tokens=8", "--set", "warmup_steps=0",
             "--set", "progress=false", "--set", "retrieval_image_size=64"]
    with torch_threads(1):
        rc, _, err = cli("train", "captions", "--config", "vlm-tiny", "--data", synth_small, "--out", tmp_path / "r",
                         "--set", "concept_prompt=true", "--set", "retrieval_prompt=true", *quick)
        assert rc == 0, err
        assert (tmp_path / "r" / "model" / "retrieval_index.safetensors").is_file()
        rc, _, err = cli("predict", "captions", "--model", tmp_path / "r", "--data", synth_small, "--split", "test",
                         "--out", tmp_path / "c.csv")
        assert rc == 2 and "--concepts" in err and not (tmp_path / "c.csv").exists()
        rc, _, err = cli("predict", "captions", "--model", tmp_path / "r", "--data", synth_small, "--split", "test",
                         "--out", tmp_path / "c.csv", "--concepts", synth_small / "test_concepts.csv")
        assert rc == 0, err


@pytest.mark.parametrize("family", FAMILIES)
def test_reranked_beams_work_with_a_vision_language_captioner(family):
    """--rerank concepts with a VLM: each image's beams come batched, best first, and are reranked
    by concept agreement as BLIP's (weight 0: the best beam; the beams are the same one by one)."""
    from medcap.inference.captions import predict_captions
    from medcap.inference.rerank import beam_candidates

    with torch_threads(1):
        captioner = _tiny(family, seed=3)
        images = _images()
        beams = beam_candidates(captioner, images, None, num_beams=3, batch_size=3)
        alone = [beam_candidates(captioner, [im], None, num_beams=3, batch_size=1)[0] for im in images]
        concepts = {f"image-{n}": ["C0040405"] for n in range(1, len(images) + 1)}
        best = predict_captions(captioner, images, num_beams=3, rerank="concepts", rerank_weight=0.0,
                                concepts=concepts, num_workers=0)
    assert [len(texts) for texts, _ in beams] == [3, 3, 3]
    assert [texts for texts, _ in beams] == [texts for texts, _ in alone]
    assert all(scores.max() == 1.0 and scores.min() == 0.0 or len(set(texts)) == 1 for texts, scores in beams)
    assert list(best.values()) == [texts[int(scores.argmax())] for texts, scores in beams]


@pytest.fixture(scope="module")
def adapter_folder(tmp_path_factory):
    from medcap.models.vlm import LoraSettings, VLMCaptioner

    tmp = tmp_path_factory.mktemp("adapter")
    with torch_threads(1):
        _tiny("qwen2_vl").save_pretrained(tmp / "base")
        tuned = VLMCaptioner.from_pretrained(tmp / "base")
        tuned.add_lora(LoraSettings(r=4, alpha=8))
        tuned.save_pretrained(tmp / "adapter")
    return tmp / "adapter"


@pytest.mark.parametrize("damage", ["missing", "unexpected", "wrong-shaped", "bit-flip"])
def test_adapter_weights_that_do_not_fit_or_changed_are_one_line(adapter_folder, damage, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from medcap.errors import MedcapError
    from medcap.models.vlm import VLMCaptioner
    from medcap.models.weights import write_checksums

    folder = Path(shutil.copytree(adapter_folder, tmp_path / "adapter"))
    weights = folder / "adapter_model.safetensors"
    if damage == "bit-flip":
        data = bytearray(weights.read_bytes())
        data[-5] ^= 0x01  # tensor data (the header is at the start)
        weights.write_bytes(bytes(data))
    else:
        state = load_file(str(weights))
        key = sorted(state)[0]
        if damage == "missing":
            del state[key]
        elif damage == "unexpected":
            state["base_model.model.extra.lora_A.weight"] = state[key].clone()
        else:
            state[key] = torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:])
        save_file(state, str(weights))
        write_checksums(folder)  # the checksums fit: the fit check must catch it
    with pytest.raises(MedcapError) as e, torch_threads(1):
        VLMCaptioner.from_pretrained(folder)
    message = e.value.format()
    assert "\n" not in message
    if damage == "bit-flip":
        assert e.value.file == str(weights) and "sha256" in message
    else:
        assert e.value.file == str(folder) and f"1 {damage}" in message and "first:" in message


def test_a_vlm_folder_with_another_models_weights_is_one_line(tmp_path):
    import shutil

    from medcap.errors import MedcapError
    from medcap.models.vlm import VLMCaptioner
    from medcap.models.weights import write_checksums

    with torch_threads(1):
        _tiny("qwen2_vl").save_pretrained(tmp_path / "qwen")
        _tiny("idefics3").save_pretrained(tmp_path / "idefics")
        shutil.copy(tmp_path / "idefics" / "model.safetensors", tmp_path / "qwen" / "model.safetensors")
        write_checksums(tmp_path / "qwen")
        with pytest.raises(MedcapError, match="do not fit the vision-language model") as e:
            VLMCaptioner.from_pretrained(tmp_path / "qwen")
    assert e.value.file == str(tmp_path / "qwen") and "missing (first:" in e.value.format()


def test_a_vlm_run_folder_left_mid_swap_is_restored_at_load(tmp_path):
    """A crash inside atomic_dir leaves the only good copy as .model.old: the loader puts it back
    (models.location.resolve_model_folder, the rule every model loader follows)."""
    import os

    from medcap.models.vlm import VLMCaptioner

    with torch_threads(1):
        _tiny("qwen2_vl").save_pretrained(tmp_path / "run" / "model")
        os.replace(tmp_path / "run" / "model", tmp_path / "run" / ".model.old")
        assert isinstance(VLMCaptioner.from_pretrained(tmp_path / "run"), VLMCaptioner)
    assert (tmp_path / "run" / "model").is_dir() and not (tmp_path / "run" / ".model.old").exists()


def test_a_vlm_folder_where_a_blip_captioner_is_expected_says_so(tmp_path):
    from medcap.errors import MedcapError
    from medcap.methods.baselines import load_embedder
    from medcap.models.captioner import Captioner

    with torch_threads(1):
        _tiny("qwen2_vl").save_pretrained(tmp_path / "vlm")
    with pytest.raises(MedcapError, match="vision-language captioner") as e:
        Captioner.from_pretrained(tmp_path / "vlm")   # not "a file is damaged" from BLIP's config reader
    assert Path(e.value.file) == tmp_path / "vlm"
    with pytest.raises(MedcapError, match="no image embedder"):
        load_embedder(tmp_path / "vlm")


def test_the_report_gallery_captions_with_a_vlm_folder(synth_small, tmp_path):
    from medcap.report.build import ReportInputs, build_report

    with torch_threads(1):
        _tiny("qwen2_vl").save_pretrained(tmp_path / "vlm")
        html = build_report(ReportInputs(data=synth_small, caption_model=tmp_path / "vlm", gallery_size=1),
                            tmp_path / "report").read_text(encoding="utf-8")
    assert 'id="gallery"' in html and html.count('class="card"') == 1
