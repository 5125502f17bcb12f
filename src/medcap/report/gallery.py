"""The report's gallery: test images with gold vs predicted concepts and captions, and heatmaps.

Predicted concepts and captions come from the submission files when given (what was
scored); the models fill in what the files lack and draw the heatmaps, through the same
:class:`medcap.webapp.server.Pipeline` that the web app uses.
"""
from __future__ import annotations

import dataclasses

from ..errors import MedcapError
from . import html as H

THUMB_PX = 240  # gallery pictures are shown at most this wide (and saved at this size)
MAX_CHIPS = 15  # predicted concepts shown per image (most probable first)


def pick_ids(ids: list[str], n: int) -> list[str]:
    """``n`` IDs spread evenly over the split (deterministic, not only the first ones)."""
    if n <= 0 or not ids:
        return []
    if len(ids) <= n:
        return list(ids)
    step = len(ids) / n
    return [ids[int(i * step)] for i in range(n)]


def _thumb(image):
    from PIL import Image

    image = image.convert("RGB")
    scale = THUMB_PX / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
    return image


def _concept_chips(gold: list[str] | None, pred: list[str], names: dict[str, str],
                   probs: dict[str, float]) -> tuple[str, str]:
    """(gold chips, predicted chips) with correct / missed / false-positive colours."""
    gold_set = {c.upper() for c in gold or []}
    pred_set = {c.upper() for c in pred}

    def label(cui: str) -> str:
        text = names.get(cui, cui)
        return f"{text} {probs[cui]:.2f}" if cui in probs else text

    gold_chips = [(label(c), "hit" if c in pred_set else "miss") for c in (gold or [])]
    if gold is None:
        pred_chips = [(label(c), "plain") for c in pred]
    else:
        pred_chips = [(label(c), "hit" if c in gold_set else "extra") for c in pred]
    more = ""
    if len(pred_chips) > MAX_CHIPS:
        more = f'<span class="na"> and {len(pred_chips) - MAX_CHIPS} more</span>'
        pred_chips = pred_chips[:MAX_CHIPS]
    return (H.chips(gold_chips) if gold is not None else '<span class="na">no gold file</span>',
            H.chips(pred_chips) + more)


def build_cards(ctx, split, n: int) -> list[str]:
    """HTML cards for ``n`` images of ``split``; their pictures are also saved as PNG files."""
    ids = pick_ids(split.image_ids(), n)
    if not ids:
        return []
    pipeline = _pipeline(ctx)
    names = ctx.names
    out = ctx.out / "gallery"
    out.mkdir(parents=True, exist_ok=True)
    cards = []
    for image_id in ids:
        try:
            image = split.load_image(image_id)
        except MedcapError as e:
            ctx.notes.append(f"Gallery: {e}")
            continue
        analysis = pipeline.analyze_image(image) if pipeline is not None else None
        if analysis is not None:
            names = {**names, **{c.cui: c.name for c in analysis.concepts if c.name}}
        probs = {c.cui: c.probability for c in analysis.concepts} if analysis is not None else {}

        pred = None
        if ctx.concept_pred is not None:
            pred = ctx.concept_pred.get(image_id, [])
        elif analysis is not None and analysis.concepts:
            pred = [c.cui for c in analysis.predicted]
        caption = None
        if ctx.caption_pred is not None:
            caption = ctx.caption_pred.get(image_id)
        elif analysis is not None:
            caption = analysis.caption

        pics = []
        thumb = _thumb(image)
        thumb.save(out / f"{image_id}.png")
        pics.append(f'<figure><img src="{H.image_data_uri(thumb, "JPEG")}" alt="{H.esc(image_id)}">'
                    f"<figcaption>image</figcaption></figure>")
        if analysis is not None and analysis.heatmap is not None:
            heat = _thumb(analysis.heatmap)
            heat.save(out / f"{image_id}_heatmap.png")
            what = names.get(analysis.heatmap_concept or "", analysis.heatmap_concept or "")
            pics.append(f'<figure><img src="{H.image_data_uri(heat, "JPEG")}" alt="heatmap of {H.esc(what)}">'
                        f"<figcaption>heatmap: {H.esc(what)}</figcaption></figure>")

        gold = split.concepts.get(image_id, []) if split.concepts is not None else None
        rows = []
        f1 = ""
        if pred is not None:
            gold_html, pred_html = _concept_chips(gold, pred, names, probs)
            rows.append(f'<div class="row"><span class="lbl">Gold</span><span class="val">{gold_html}</span></div>')
            rows.append(f'<div class="row"><span class="lbl">Predicted</span>'
                        f'<span class="val">{pred_html}</span></div>')
            if gold:
                g, p = {c.upper() for c in gold}, {c.upper() for c in pred}
                f1 = f'<span class="f1">F1 {2 * len(g & p) / (len(g) + len(p)):.2f}</span>'
        gold_caption = split.captions.get(image_id) if split.captions is not None else None
        if gold_caption is not None:
            rows.append(f'<div class="row"><span class="lbl">Gold caption</span><span class="val caption" '
                        f'title="{H.esc(gold_caption)}">{H.esc(_shorten(gold_caption))}</span></div>')
        if caption is not None:
            rows.append(f'<div class="row"><span class="lbl">Generated</span>'
                        f'<span class="val caption gen">{H.esc(caption)}</span></div>')
        cards.append(f'<div class="card"><div class="id">{H.esc(image_id)}{f1}</div>'
                     f'<div class="pics">{"".join(pics)}</div>{"".join(rows)}</div>')
    return cards


def _shorten(text: str, words: int = 60) -> str:
    """At most ``words`` words (long case narratives would make one card the height of the page)."""
    parts = text.split()
    return text if len(parts) <= words else " ".join(parts[:words]) + " …"


def _pipeline(ctx):
    """The app's pipeline over the given models (the captioner only when no caption submission
    is given), or None when there is nothing to run."""
    captions = ctx.inputs.caption_model if ctx.caption_pred is None else None
    if ctx.inputs.concept_model is None and captions is None:
        return None
    from ..inference.pipeline import Pipeline

    if captions is not None and ctx.inputs.captioner is None:
        from ..inference.captions import load_captioner  # BLIP or a vision-language model folder

        ctx.inputs = dataclasses.replace(ctx.inputs, captioner=load_captioner(captions))
    return Pipeline.from_models(None if ctx.inputs.concept_model is None else ctx.detector(),
                                None if captions is None else ctx.inputs.captioner,
                                concepts_dir=ctx.inputs.concept_model, captions_dir=captions)
