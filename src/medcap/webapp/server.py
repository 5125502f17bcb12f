"""``medcap serve``: a local web app (Gradio) that analyses one uploaded image.

Upload a JPEG, PNG or DICOM file and see the detected concepts with their probabilities,
the generated caption and a heatmap of where the top concept was found. All the work is
done by :class:`medcap.inference.pipeline.Pipeline` (models loaded once, ``analyze(path) -> Analysis``),
which has no Gradio in it, so it is tested without a browser and reused by the report's gallery.

The server binds 127.0.0.1 unless told otherwise: medical images should not be served
to the network by accident. Research software, not for clinical use.

Bounds (one small upload must not take the server down): an image over ``max_pixels``
(stricter than the training limit, ``medcap.data.images.MAX_PIXELS``) is refused from its
header, before any pixel is decoded; an accepted one is reduced to ``max_side`` pixels on its
longer side right after decoding (JPEGs are even decoded at a reduced DCT scale), so the
preview, the heatmap overlay and the model inputs are never made at full size. Requests are
queued (``concurrency`` analysed at a time, at most ``queue_size`` waiting; more are refused
with a message), and each request's images are written to its own files.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import MedcapError
from ..inference.pipeline import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_FILE_MB,
    DEFAULT_MAX_PIXELS,
    DEFAULT_QUEUE_SIZE,
    KEEP_OUTPUTS,
    Pipeline,
)

TOP_K = 10  # concepts shown with their probabilities
MAX_LISTED = 15  # predicted concepts named under them


# ---------------------------------------------------------------------------------------
# Gradio
# ---------------------------------------------------------------------------------------

INTRO = ("Upload a medical image (JPEG, PNG or DICOM). medcap detects UMLS concepts (modality, body region, "
         "findings), writes a caption and shows where the top concept was found. "
         "**Research software: not for clinical use.**")


def _outputs_for(pipeline: Pipeline, file_path: str | None):
    """(preview, concept probabilities, predicted list, caption, heatmap, status) for the UI."""
    if not file_path:
        return None, None, "", "", None, ""
    try:
        analysis = pipeline.analyze(file_path)
    except MedcapError as e:
        return None, None, "", "", None, f"⚠ **Cannot analyse this file.** {e.format()}"
    probs = {c.label: round(c.probability, 4) for c in analysis.concepts[:TOP_K]}
    predicted = ""
    if analysis.concepts:
        chosen = analysis.predicted
        listed = ", ".join(f"**{c.label}** {c.probability:.2f}" for c in chosen[:MAX_LISTED])
        if len(chosen) > MAX_LISTED:
            listed += f" and {len(chosen) - MAX_LISTED} more"
        predicted = f"Predicted ({len(chosen)} above the model's thresholds): {listed or 'none'}"
    status = "✓ Analysed " + Path(file_path).name
    if analysis.heatmap_concept:
        name = next((c.label for c in analysis.concepts if c.cui == analysis.heatmap_concept), "")
        status += f" · heatmap of {name}"
    if analysis.notes:
        status += "  \n" + "  \n".join(f"ℹ {n}" for n in analysis.notes)
    return (analysis.image, probs or None, predicted, analysis.caption or "", analysis.heatmap, status)


class RequestOutputs:
    """Each request's images in files of its own (a folder per request, the oldest removed).

    Gradio would otherwise save a returned PIL image under a name derived from its content,
    rewriting that file for every request with the same image while it may be being served.
    """

    def __init__(self, root: str | Path | None = None, keep: int = KEEP_OUTPUTS):
        import tempfile
        from collections import deque

        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="medcap-serve-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._folders: deque = deque()

    def save(self, *images) -> list[str | None]:
        import shutil
        import tempfile

        folder = Path(tempfile.mkdtemp(dir=self.root))
        self._folders.append(folder)
        while len(self._folders) > self.keep:
            shutil.rmtree(self._folders.popleft(), ignore_errors=True)
        paths: list[str | None] = []
        for i, image in enumerate(images):
            if image is None:
                paths.append(None)
                continue
            path = folder / f"image-{i}.png"
            image.save(path)
            paths.append(str(path))
        return paths


def _handle(pipeline: Pipeline, outputs: RequestOutputs, file_path: str | None):
    preview, probs, predicted, caption, heatmap, status = _outputs_for(pipeline, file_path)
    preview, heatmap = outputs.save(preview, heatmap)
    return preview, probs, predicted, caption, heatmap, status


def build_ui(pipeline: Pipeline, outputs: RequestOutputs | None = None):
    """The Gradio Blocks app around ``pipeline``."""
    import gradio as gr

    outputs = outputs or RequestOutputs()

    with gr.Blocks(title="medcap", analytics_enabled=False) as demo:
        gr.Markdown("# medcap: medical image concepts and captions")
        gr.Markdown(INTRO + f" Files up to {pipeline.max_file_mb:g} MB and {pipeline.max_pixels / 1e6:g} megapixels.")
        banner = pipeline.synthetic_banner()
        if banner:  # before any output: a made-up caption of a real scan must not pass for a reading
            gr.Markdown(banner, elem_id="synthetic-banner")
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                upload = gr.File(label="Image file (JPEG, PNG or DICOM)", file_count="single", type="filepath",
                                 elem_id="upload", height=120)
                status = gr.Markdown(elem_id="status")
                with gr.Row():
                    preview = gr.Image(label="Image", type="filepath", interactive=False, elem_id="preview",
                                       height=300)
                    heatmap = gr.Image(label="Heatmap of the top concept", type="filepath", interactive=False,
                                       elem_id="heatmap", height=300)
            with gr.Column(scale=4):
                caption = gr.Textbox(label="Generated caption", interactive=False, lines=3, elem_id="caption")
                concepts = gr.Label(label="Concepts (probability)", num_top_classes=TOP_K, show_heading=False,
                                    elem_id="concepts")
                predicted = gr.Markdown(elem_id="predicted")
        upload.change(lambda f: _handle(pipeline, outputs, f), inputs=upload,
                      outputs=[preview, concepts, predicted, caption, heatmap, status],
                      api_name="analyze")
    return demo


def _theme():
    import gradio as gr

    # System fonts: the default theme fetches Google Fonts, which an offline machine cannot.
    fonts = ["-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"]
    return gr.themes.Soft(primary_hue="blue", font=fonts, font_mono=["ui-monospace", "Menlo", "monospace"])


def serve(concepts: str | Path | None, captions: str | Path | None, *, host: str = "127.0.0.1",
          port: int | None = None, max_file_mb: float = DEFAULT_MAX_FILE_MB, block: bool = True,
          max_pixels: int = DEFAULT_MAX_PIXELS, concurrency: int = DEFAULT_CONCURRENCY,
          queue_size: int = DEFAULT_QUEUE_SIZE, auth: str | None = None):
    """Load the models and start the web app; returns the Gradio app when ``block`` is False.
    ``auth``: ``USER:PASSWORD_FILE`` (Gradio's login page; the password is the file's first line)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if concurrency < 1 or queue_size < 1:
        raise MedcapError(f"concurrency and queue size must be at least 1, got {concurrency} and {queue_size}")
    login = read_auth(auth) if auth else None
    if login is None and not is_loopback(host):
        print(f"warning: serving on {host} without --auth: anyone who can reach this address can use the models "
              "and upload images; give --auth USER:PASSWORD_FILE or bind 127.0.0.1", file=sys.stderr)
    pipeline = Pipeline(concepts, captions, max_file_mb=max_file_mb, max_pixels=max_pixels)
    demo = build_ui(pipeline)
    # Each analysis holds one decoded upload and both models' activations: the concurrency
    # limit bounds memory, the queue bound keeps a burst from piling up without end.
    demo.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    # Gradio refuses bigger uploads itself too; the pipeline's own check covers other callers.
    demo.launch(server_name=host, server_port=port, max_file_size=f"{int(max_file_mb * 1024 * 1024)}b",
                prevent_thread_lock=not block, quiet=not block, share=False, theme=_theme(),
                show_error=False, auth=login)
    return demo


def read_auth(spec: str) -> tuple[str, str]:
    """``USER:PASSWORD_FILE`` -> (user, password): the password is read from a file, never typed
    on the command line (where other users of the machine see it in the process list)."""
    from ..fileio import read_bytes

    user, sep, file = spec.partition(":")
    if not sep or not user or not file:
        raise MedcapError(f"--auth expects USER:PASSWORD_FILE, got {spec!r}")
    lines = read_bytes(file, limit=4096).decode("utf-8", "replace").splitlines()
    if not lines or not lines[0]:
        raise MedcapError("the password file is empty (its first line is the password)", file=file)
    return user, lines[0]


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface

