"""Where was each predicted concept found? Heatmap overlays from the head's class score maps.

- MedCSRA (paper head): the fused map (1 - lam) * CAM_global + lam * attended contribution,
  where CAM_global[k, n] = W_fc[k] . x_n / N (the class activation map of the global branch)
  and the attended contribution is W_att_fc[k] . (a_n * x_n); summed over the positions n it
  gives the logit (minus its bias), so the map shows what made the score.
- CSRA (Fang et al.): the class-specific score map S = conv1x1(x) / ||w_k||, summed over heads.

Only the positive part of a map is drawn (evidence for the concept), scaled to its maximum.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..fileio import atomic_dir


def concept_heatmaps(model, image) -> tuple[np.ndarray, np.ndarray]:
    """PIL image -> (probabilities [K], score maps [K, S, S] upsampled to the input size S)."""
    import torch

    from ..data.transforms import normalize_batch, resize_image

    prep = model.preprocessing
    x = normalize_batch(resize_image(image, prep)[None], prep)
    with torch.inference_mode():
        if getattr(model, "is_ensemble", False):                                 # medcap.methods.ensemble
            probs, maps = model.eval().probabilities_and_maps(x)
            probs, maps = probs.float()[0], maps.float()
        else:
            f = model.eval().forward_features(x)
            probs = model.forward_head(f).float().sigmoid()[0]
            maps = model.head.score_map(f).float()                               # [1, K, h, w]
        maps = torch.nn.functional.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return probs.numpy(), maps[0].numpy()


def content_region(maps: np.ndarray, image_size: tuple[int, int], prep: dict) -> np.ndarray:
    """With letterboxing (resize: pad) keep the part of the square that shows the image."""
    if prep.get("resize") != "pad":
        return maps
    s = maps.shape[-1]
    scale = s / max(image_size)
    w, h = max(1, round(image_size[0] * scale)), max(1, round(image_size[1] * scale))
    x0, y0 = (s - w) // 2, (s - h) // 2
    return maps[:, y0:y0 + h, x0:x0 + w]


def _overlay(image, heat: np.ndarray, title: str, path: Path, alpha: float = 0.45) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heat = np.clip(heat, 0, None)
    heat = heat / heat.max() if heat.max() > 0 else heat
    fig, ax = plt.subplots(figsize=(4, 4.3), dpi=100)
    ax.imshow(np.asarray(image))
    ax.imshow(heat, cmap="jet", alpha=alpha, vmin=0, vmax=1,
              extent=(0, image.size[0], image.size[1], 0), interpolation="bilinear")
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def explain_image(model_or_dir, image_path: str | Path | bytes, out_dir: str | Path, top: int = 0,
                  display_size: int = 384, label: str | None = None) -> dict:
    """Write one overlay PNG per predicted concept (``top`` > 0: the top-k instead) and
    ``explain.json`` into ``out_dir`` (written whole or not at all). Returns the JSON's content.
    ``image_path`` may be encoded bytes (a parquet dataset's image); ``label`` then names it."""
    from PIL import Image

    from ..data.images import load_image
    from .concepts import decide, load_detector

    model = load_detector(model_or_dir)
    image = load_image(image_path, name=label)
    probs, maps = concept_heatmaps(model, image)
    vocab = model.vocabulary
    if top > 0:
        cols = list(np.argsort(-probs, kind="stable")[:top])
        chosen = [(vocab.cuis[k], float(probs[k])) for k in cols]
    else:
        chosen = decide(model, probs[None])[0]
    scale = display_size / max(image.size)
    shown = image.resize((max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale))),
                         Image.BILINEAR)
    col = {c: i for i, c in enumerate(vocab.cuis)}
    maps = content_region(maps, image.size, model.preprocessing)
    entries = []
    with atomic_dir(out_dir) as tmp:
        for rank, (cui, p) in enumerate(chosen, 1):
            name = f"{rank:02d}_{cui}.png"
            heat = np.asarray(Image.fromarray(maps[col[cui]].astype(np.float32)).resize(shown.size, Image.BILINEAR))
            _overlay(shown, heat, f"{cui} {vocab.name(cui)}  p={p:.2f}"[:70], tmp / name)
            entries.append({"cui": cui, "name": vocab.name(cui), "probability": round(p, 6), "file": name})
        report = {"image": label or str(image_path), "head": model.config.head, "concepts": entries}
        (tmp / "explain.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return report
