"""Caption generation: settings, the n-gram rule over generated tokens, batched generate().

- :class:`GenerationSettings`: greedy or beam search and its options (defaults: the authors'
  submitted run, REFERENCE §2); saved in the model folder's ``generation_config.json``
  (transformers' ``GenerationConfig``, medcap's own fields prefixed ``medcap_``), read back
  from there or from the ``generation`` entry of an older folder's ``medcap_captioner.json``;
- :class:`GeneratedNoRepeatNGram`: ``no_repeat_ngram_size`` over the caption, not its prompt;
- :func:`generate_ids`: token ids after the prompt, batched, with per-image concept prompts.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import MedcapError

GENERATION_FILE = "generation_config.json"
_OWN_FIELDS = ("prompt", "postprocess")   # not transformers' settings: stored as medcap_<name>


@dataclass
class GenerationSettings:
    """How captions are generated (defaults: the authors' submitted run, REFERENCE §2)."""
    num_beams: int = 5                  # 1 = greedy
    no_repeat_ngram_size: int = 2       # 0 = off
    max_new_tokens: int = 200
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    prompt: str = ""                    # text the decoder continues; cut from the output
    postprocess: bool = True            # repair WordPiece spacing, restore acronyms (medcap.text)

    @classmethod
    def from_dict(cls, values: dict | None, label: str | Path | None = None) -> GenerationSettings:
        """From a dict of these fields; an unknown key is refused with "did you mean"."""
        from ..config import check_keys

        values = values or {}
        check_keys(values, [f.name for f in dataclasses.fields(cls)], label, what="generation setting")
        return cls(**values)

    def to_generation_config(self, base=None):
        """A transformers ``GenerationConfig``: ``base``'s token ids with these settings."""
        from transformers import GenerationConfig

        values = base.to_dict() if base is not None else {}
        for key in ("transformers_version", "_from_model_config"):
            values.pop(key, None)
        values.update({k: v for k, v in dataclasses.asdict(self).items() if k not in _OWN_FIELDS})
        values.update({f"medcap_{k}": getattr(self, k) for k in _OWN_FIELDS})
        return GenerationConfig(**values)

    @classmethod
    def from_generation_config(cls, config) -> GenerationSettings:
        values = {f.name: getattr(config, f.name, f.default) for f in dataclasses.fields(cls)
                  if f.name not in _OWN_FIELDS}
        values.update({k: getattr(config, f"medcap_{k}") for k in _OWN_FIELDS if hasattr(config, f"medcap_{k}")})
        return cls(**values)

    def save_pretrained(self, folder: str | Path, base=None) -> Path:
        """Write ``generation_config.json`` (atomically; no transformers validation warnings)."""
        from ..fileio import write_text_atomic

        path = Path(folder) / GENERATION_FILE
        write_text_atomic(path, self.to_generation_config(base).to_json_string(use_diff=True))
        return path

    @classmethod
    def from_pretrained(cls, folder: str | Path, legacy: dict | None = None,
                        legacy_label: str | Path | None = None) -> GenerationSettings:
        """Settings of a model folder: ``generation_config.json`` when it holds medcap's fields,
        else ``legacy`` (the ``generation`` entry of an older medcap_captioner.json), else defaults."""
        path = Path(folder) / GENERATION_FILE
        if legacy is None and path.is_file():
            from transformers import GenerationConfig

            try:
                config = GenerationConfig.from_pretrained(folder)
            except (OSError, ValueError) as e:
                reason = str(e).splitlines()[0]
                raise MedcapError(f"cannot read the generation settings ({reason})", file=path) from None
            if hasattr(config, "medcap_postprocess"):
                return cls.from_generation_config(config)
        return cls.from_dict(legacy, legacy_label)


class GeneratedNoRepeatNGram:
    """``no_repeat_ngram_size`` over the generated tokens only (a transformers LogitsProcessor).

    transformers' own processor also counts the prompt, so a caption could not repeat a
    concept name its prompt holds: with n = 3, a prompt "plain x-ray" made the decoder write
    "plain x 2.8 cm-ray" and "optical coherence tomography" became "optical coherence
    publication". ``start``: the number of prompt columns in ``input_ids``.
    """

    def __init__(self, n: int, start: int):
        self.n, self.start = int(n), int(start)

    def __call__(self, input_ids, scores):
        n = self.n
        generated = input_ids[:, self.start:].tolist()
        for row, tokens in enumerate(generated):
            if len(tokens) < n:  # no whole n-gram generated yet
                continue
            prefix = tuple(tokens[len(tokens) - n + 1:]) if n > 1 else ()
            banned = {tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i:i + n - 1]) == prefix}
            if banned:
                scores[row, list(banned)] = -float("inf")
        return scores


def prompt_inputs(pixel_values, prompt_ids: Sequence[int], prompts: Sequence[Sequence[int]] | None,
                  bos: int, sep: int, pad: int):
    """(input_ids, attention_mask) generate() starts from: the text prompt for every image, or each
    image's concept prompt, padded on the LEFT so every caption starts right after its own prompt.

    generate() numbers the positions from the attention mask, which gives each token the
    position it had in training (prompt and caption padded on the right there).
    """
    import torch

    device = pixel_values.device
    if prompts is None:
        return torch.tensor([list(prompt_ids)] * pixel_values.shape[0], device=device), None
    # [PAD]... [DEC] prompt [SEP]; BLIP's generate() drops the last column, the way it drops [SEP]
    rows = [[bos, *p, sep] for p in prompts]
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
    attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return input_ids, attention_mask


def generation_kwargs(settings: GenerationSettings, start: int) -> dict:
    """generate()'s keyword arguments for ``settings``; ``start``: the first generated column."""
    kwargs = {"num_beams": settings.num_beams, "max_new_tokens": settings.max_new_tokens, "do_sample": False,
              "repetition_penalty": settings.repetition_penalty}
    if settings.num_beams > 1:
        kwargs["length_penalty"] = settings.length_penalty
    # n-gram repeats are counted over the caption, not the prompt (GeneratedNoRepeatNGram); 0 keeps
    # transformers' own rule (or a value in the model's generation_config) from applying too
    kwargs["no_repeat_ngram_size"] = 0
    if settings.no_repeat_ngram_size > 0:
        from transformers import LogitsProcessorList

        kwargs["logits_processor"] = LogitsProcessorList([GeneratedNoRepeatNGram(settings.no_repeat_ngram_size,
                                                                                 start)])
    return kwargs


def eval_batches(model, n: int, batch_size: int, fn) -> list:
    """``fn(part)`` for consecutive slices of ``n`` items, ``batch_size`` at a time, with ``model`` in
    eval mode and without autograd (its mode restored after) -> the results, concatenated."""
    import torch

    was_training = model.training
    model.eval()
    out: list = []
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                out += fn(slice(start, start + batch_size))
    finally:
        model.train(was_training)
    return out


def beam_kwargs(settings: GenerationSettings, n: int) -> dict:
    """generate()'s extra keyword arguments for the ``n`` best beams of each input with their
    length-normalised log-probabilities (``sequences_scores``), for any captioner."""
    return dict(num_beams=max(settings.num_beams, n), num_return_sequences=n, output_scores=True,
                return_dict_in_generate=True, length_penalty=settings.length_penalty)


def split_beams(texts: Sequence[str], scores, n: int) -> list[tuple[list[str], object]]:
    """[B * n] beams (image by image, best first) and their scores -> per image (texts, scores [n],
    a float numpy array)."""
    scores = scores.float().cpu().numpy()
    return [(list(texts[b * n:(b + 1) * n]), scores[b * n:(b + 1) * n]) for b in range(len(texts) // n)]


def generate_ids(model, pixel_values, input_ids, attention_mask, settings: GenerationSettings,
                 interpolate_pos_encoding: bool = False, return_beams: int = 0):
    """Generated token ids [B, T] after the prompt (batched greedy or beam search).

    ``return_beams`` > 0: the best ``return_beams`` beams of each image ([B * n, T], image by
    image, best first) and their length-normalised log-probabilities [B * n]
    (medcap.inference.rerank picks among them).
    """
    kwargs = generation_kwargs(settings, input_ids.shape[1] - 1)
    if return_beams:
        kwargs.update(beam_kwargs(settings, return_beams))
    unwrapped = getattr(model, "module", model)
    out = unwrapped.generate(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                             interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
    if return_beams:
        return out.sequences[:, input_ids.shape[1] - 1:], out.sequences_scores
    return out[:, input_ids.shape[1] - 1:]   # generate() was given all columns but the last
