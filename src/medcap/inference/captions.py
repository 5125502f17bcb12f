"""Prediction with a trained captioner: images (and their concepts) in, captions and submissions out.

Shared by the CLI, the demo, the report and the web app; training lives in
``medcap.training.captions``. Where the model is: :func:`medcap.models.location.resolve_model_folder`
(a run folder, its ``model/`` folder or a hub id).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import MedcapError
from ..models.captioner import Captioner


def load_captioner(model_or_dir):
    """A captioner as is, or loaded from a folder / run folder / hub id: a BLIP :class:`Captioner`, or a
    :class:`~medcap.models.vlm.VLMCaptioner` for a vision-language model folder (``medcap_vlm.json``)."""
    from ..models.vlm import VLMCaptioner, is_vlm_folder

    if isinstance(model_or_dir, (Captioner, VLMCaptioner)):
        return model_or_dir
    from ..models.location import resolve_model_folder

    where = resolve_model_folder(model_or_dir, "captions")
    if isinstance(where, Path) and is_vlm_folder(where):
        return VLMCaptioner.from_pretrained(where)
    return Captioner.from_pretrained(model_or_dir)


def predict_captions(model: str | Path | Captioner, images, out: str | Path | None = None, *,
                     num_beams: int | None = None, batch_size: int = 8, max_new_tokens: int | None = None,
                     device: str | None = None, progress: bool = False,
                     concepts: str | Path | dict[str, Sequence[str]] | None = None,
                     order: Sequence[str] | None = None, edition: int | None = None,
                     rerank: str | None = None, rerank_weight: float = 0.5,
                     cui_names: dict[str, str] | None = None, num_workers: int | str = "auto") -> dict[str, str]:
    """Caption every image and (with ``out``) write an official caption submission. Returns {ID: caption}.

    ``images``: folders / files (JPEG, PNG, DICOM, ...; the ID is the file name without its
    extension), PIL images or numpy arrays (IDs image-1, image-2, ...: their place in the list),
    or an ImageFolderItems (e.g. of a dataset split). Every image is captioned
    before anything is written, so an unreadable image leaves no file behind. ``concepts``:
    {ID: CUIs} or a concept submission file (``medcap predict concepts``), for a model trained
    with concept prompts (``concept_prompt: true``); every image needs its row there. ``order``:
    the IDs in the order to write (a gold or ID-order file's, REFERENCE §7), else as listed;
    ``edition``: whose rules the file is checked against (default the latest).
    A model trained with retrieval prompts (``retrieval_prompt: true``) retrieves each image's
    nearest training captions itself, with the embedder and index kept in its folder.
    ``rerank="concepts"``: generate ``num_beams`` beams (default 5) and keep the one that agrees
    best with ``concepts`` (medcap.inference.rerank; ``rerank_weight`` chosen on validation with
    ``medcap ensemble rerank-weight``). ``num_workers``: processes decoding the images beside the
    model (medcap.data.loading). Inside ``sharded_prediction`` under ``accelerate launch`` each process
    captions its block of the images, every process returns all captions, the main one writes ``out``.
    """
    from ..data.loading import gather_in_order, image_batches, is_main_process, process_shard, resolve_workers
    from ..device import resolve_device
    from ..progress import bar
    from ..submission import check_id_order, write_caption_submission
    from .concepts import image_items

    items = image_items(images)
    check_id_order(items.ids, order)
    captioner = load_captioner(model)
    captioner.model.to(resolve_device(device))
    overrides = {k: v for k, v in (("num_beams", num_beams), ("max_new_tokens", max_new_tokens)) if v is not None}
    per_image = None
    if captioner.concept_prompt is not None or rerank is not None:
        per_image = _image_concepts(concepts, items.ids, None if not isinstance(model, (str, Path)) else model)
    if rerank not in (None, "concepts"):
        raise MedcapError(f"--rerank: expected concepts, got {rerank!r}")
    if not 0.0 <= rerank_weight <= 1.0:
        raise MedcapError(f"--rerank-weight: expected a number in [0, 1], got {rerank_weight}")
    if rerank is not None:
        from .rerank import beam_candidates, concept_matcher, rerank_beams

        matcher, nameable = concept_matcher(cui_names)
    retrieved = _retrieved(captioner, items, batch_size, device, progress)
    # Under accelerate launch (medcap.data.loading.sharded_prediction): this process's block of the images.
    mine = process_shard(len(items.ids), device, batch_size)
    batches = worker_batches(image_batches(items, mine, batch_size, resolve_workers(num_workers, len(mine), device)))
    captions: list[str] = []
    for start, images_batch in bar(zip(range(mine.start, mine.stop, batch_size), batches, strict=True),
                                   total=-(-len(mine) // batch_size), desc="captioning", unit="batch", show=progress):
        ids = items.ids[start:min(start + batch_size, mine.stop)]
        batch_concepts = None if per_image is None else [per_image[i] for i in ids]
        batch_retrieved = None if retrieved is None else retrieved[start:start + len(ids)]
        if rerank is not None:
            prompts = batch_concepts if captioner.concept_prompt is not None else None
            cands = beam_candidates(captioner, images_batch, prompts, num_beams or 5, batch_size,
                                    retrieved=batch_retrieved)
            captions += rerank_beams(cands, batch_concepts, rerank_weight, matcher, nameable)
            continue
        captions += captioner.generate(images_batch, batch_size=batch_size, concepts=batch_concepts,
                                       retrieved=batch_retrieved, **overrides)
    result = dict(zip(items.ids, gather_in_order(captions, device), strict=True))
    if out is not None and is_main_process():
        write_caption_submission(out, result, gold_ids=order, edition=edition)
    return result


def worker_batches(loader):
    """The loader's batches, an unreadable image's error as its own line (medcap.data.loading.worker_errors)."""
    from ..data.loading import worker_errors

    with worker_errors():
        yield from loader


def _retrieved(captioner: Captioner, items, batch_size: int, device, progress: bool) -> list[list[str]] | None:
    """Each image's nearest training captions (a retrieval-prompted captioner), in ``items`` order."""
    from .concepts import image_embeddings

    index = getattr(captioner, "retrieval_prompt", None) or getattr(captioner.processor, "retrieval_prompt", None)
    if index is None:
        return None
    ids, emb = image_embeddings(index.load_embedder(), items, batch_size=max(batch_size, 32), device=device,
                                progress=progress)
    if list(ids) != list(items.ids):
        raise RuntimeError("image_embeddings changed the order of the images")  # a bug, not a user mistake
    return index.retrieve(emb)


def _image_concepts(concepts, ids: Sequence[str], model_folder=None) -> dict[str, Sequence[str]]:
    """{ID: CUIs} for every image of ``ids``, from a mapping or a concept submission file."""
    from ..submission import read_concept_submission

    if concepts is None:
        raise MedcapError("this captioner was trained with concept prompts: give the images' concepts "
                          "(--concepts FILE, a concept submission from `medcap predict concepts` on the same images)",
                          file=model_folder)
    source = None
    if not isinstance(concepts, dict):
        source, concepts = concepts, read_concept_submission(concepts)
    missing = [i for i in ids if i not in concepts]
    if missing:
        raise MedcapError(f"no concepts for {len(missing)} of {len(ids)} images (first: {missing[0]}); "
                          "predict concepts on the same images", file=source)
    return concepts
