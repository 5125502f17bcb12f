"""The web app's logic without a browser: Pipeline.analyze and what the UI shows for it."""
from __future__ import annotations

import pytest
from PIL import Image

from conftest import train_tiny_models
from medcap.errors import MedcapError
from medcap.inference.pipeline import Pipeline
from medcap.webapp.server import _outputs_for, build_ui


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, synth_small):
    """Tiny models trained for one epoch on the small synthetic dataset (shared by the test files)."""

    return train_tiny_models(synth_small, tmp_path_factory.getbasetemp() / "medcap-tiny-models")


@pytest.fixture(scope="module")
def pipeline(tiny_models):
    return Pipeline(tiny_models.concepts, tiny_models.captions, max_file_mb=1.0)


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "scan.png"
    Image.new("L", (80, 60), 90).save(path)
    return path


def test_analyze_returns_concepts_caption_and_heatmap(pipeline, png):
    result = pipeline.analyze(png)
    assert result.image.mode == "RGB" and result.image.size == (80, 60)
    probs = [c.probability for c in result.concepts]
    assert probs and probs == sorted(probs, reverse=True) and all(0.0 <= p <= 1.0 for p in probs)
    assert all(c.cui.startswith("C") for c in result.concepts)
    assert isinstance(result.caption, str)
    assert result.heatmap is not None and result.heatmap.size == result.image.size
    assert result.heatmap_concept == (result.predicted or result.concepts)[0].cui
    assert result.notes == []


def test_analyze_reads_a_real_dicom_file(pipeline):
    from pydicom.data import get_testdata_file

    result = pipeline.analyze(get_testdata_file("CT_small.dcm"))
    assert result.image.mode == "RGB" and result.image.size == (128, 128)
    assert result.concepts and result.caption is not None


def test_either_model_is_optional(tiny_models, png):
    only_concepts = Pipeline(tiny_models.concepts, None).analyze(png)
    assert only_concepts.concepts and only_concepts.caption is None
    assert any("no caption model" in n for n in only_concepts.notes)
    only_captions = Pipeline(None, tiny_models.captions).analyze(png)
    assert only_captions.concepts == [] and only_captions.heatmap is None and only_captions.caption is not None
    assert any("no concept model" in n for n in only_captions.notes)


@pytest.mark.parametrize("content, message", [
    (b"this is a text file, not an image\n", "not an image file"),
    (b"", "the file is empty"),
    (b"\x00" * (1024 * 1024 + 1), "larger than the 1 MB limit"),
])
def test_bad_uploads_give_a_clear_message_not_a_traceback(tmp_path, content, message):
    path = tmp_path / "upload.jpg"
    path.write_bytes(content)
    bare = Pipeline(max_file_mb=1.0)
    with pytest.raises(MedcapError, match=message):
        bare.analyze(path)
    preview, concepts, predicted, caption, heatmap, status = _outputs_for(bare, str(path))
    assert preview is None and concepts is None and heatmap is None
    assert "Cannot analyse this file" in status and "upload.jpg" in status and message in status
    assert "Traceback" not in status and str(tmp_path) not in status


def test_ui_outputs_show_probabilities_and_the_caption(pipeline, png):
    preview, concepts, predicted, caption, heatmap, status = _outputs_for(pipeline, str(png))
    assert preview.size == (80, 60) and heatmap is not None
    assert concepts and all(0.0 <= v <= 1.0 for v in concepts.values())
    assert all("(C" in label for label in concepts)  # "name (CUI)"
    assert caption == pipeline.analyze(png).caption
    assert "Analysed scan.png" in status


def test_no_upload_clears_the_outputs(pipeline):
    assert _outputs_for(pipeline, None) == (None, None, "", "", None, "")


def test_ui_builds_with_an_upload_field_that_takes_any_file(pipeline):
    import gradio as gr

    demo = build_ui(pipeline)
    files = [b for b in demo.blocks.values() if isinstance(b, gr.File)]
    assert len(files) == 1 and files[0].file_types is None  # DICOM (.dcm) uploads are not filtered out


def test_serve_command_needs_a_model_folder(cli, tmp_path):
    rc, _, err = cli("serve")
    assert rc == 2 and "--concepts" in err
    rc, _, err = cli("serve", "--concepts", tmp_path / "nope")
    assert rc == 2 and "not found" in err


def test_a_training_folder_stands_for_the_model_folder_inside_it(tiny_models):
    from medcap.inference.pipeline import model_folder

    assert model_folder(tiny_models.concepts.parent) == tiny_models.concepts
    assert model_folder(tiny_models.captions) == tiny_models.captions
    assert model_folder(None) is None


def test_a_concept_prompted_captioner_starts_from_the_detected_concepts(tiny_models, png, tmp_path):
    from medcap.models.captioner import Captioner, ConceptPrompt

    pipeline = Pipeline(tiny_models.concepts, None)
    vocab = pipeline.concept_model.vocabulary
    captioner = Captioner.from_pretrained(tiny_models.captions)
    captioner.concept_prompt = ConceptPrompt.from_vocabulary(vocab, max_tokens=8)
    folder = captioner.save_pretrained(tmp_path / "prompted")
    result = Pipeline(tiny_models.concepts, folder).analyze(png)
    detected = [c.cui for c in result.predicted]
    assert result.caption == captioner.generate([result.image], batch_size=1, concepts=[detected])[0]
    alone = Pipeline(None, folder).analyze(png)
    assert alone.caption is None and any("load a concept model too" in n for n in alone.notes)
