"""Prompt building for the captioner: concept prompts and caption training targets.

- :class:`ConceptPrompt`: an image's concepts (their names) as the decoder's prompt
  (knowledge-guided captions);
- :class:`CaptionEncoder`: captions (after an optional prompt) -> ``input_ids``,
  ``attention_mask`` and ``labels`` with padding and prompt masked out of the loss
  (REFERENCE §2: the authors' code left the padding in).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..errors import MedcapError


class ConceptPrompt:
    """An image's concepts as the decoder's prompt (knowledge-guided captioning, the paper's future work).

    The prompt is the canonical names of the image's CUIs, the most frequent in training first,
    joined by "; " and cut to ``max_tokens`` WordPieces, then [SEP]; the caption follows it.
    Training uses each image's gold CUIs, prediction a concept detector's (a concept
    submission), so the caption can name what the detector found. CUIs not seen in training
    are left out (the model never learned them). ``concepts``: (CUI, name) pairs in prompt
    order. Kept in the model folder's medcap_captioner.json.
    """

    def __init__(self, concepts: Sequence[tuple[str, str]], max_tokens: int = 24):
        if max_tokens < 1:
            raise MedcapError(f"concept prompts need at least 1 token, got max_tokens={max_tokens}")
        self.concepts = [(str(c), str(n)) for c, n in concepts]
        self.max_tokens = int(max_tokens)
        self.rank = {c: i for i, (c, _) in enumerate(self.concepts)}
        self.names = dict(self.concepts)

    @classmethod
    def from_vocabulary(cls, vocab, max_tokens: int = 24) -> ConceptPrompt:
        """From a :class:`~medcap.data.vocab.ConceptVocabulary`: most frequent CUI first, its
        name from cui_mapping.csv (the CUI itself where the mapping has none)."""
        order = sorted(vocab.cuis, key=lambda c: (-vocab.counts.get(c, 0), c))
        return cls([(c, vocab.names.get(c, c)) for c in order], max_tokens)

    def text(self, cuis: Iterable[str]) -> str:
        known = sorted({c for c in cuis if c in self.rank}, key=self.rank.__getitem__)
        return "; ".join(self.names[c] for c in known)

    def ids(self, tokenizer, cuis: Iterable[str]) -> list[int]:
        """Token ids of the prompt (without [DEC]): at most ``max_tokens`` WordPieces, then [SEP]."""
        text = self.text(cuis)
        pieces = tokenizer(text, add_special_tokens=False)["input_ids"][:self.max_tokens] if text else []
        return pieces + [tokenizer.sep_token_id]

    def to_dict(self) -> dict:
        return {"max_tokens": self.max_tokens, "concepts": [list(pair) for pair in self.concepts]}

    @classmethod
    def from_dict(cls, values: dict) -> ConceptPrompt:
        try:
            return cls([tuple(pair) for pair in values["concepts"]], int(values["max_tokens"]))
        except (KeyError, TypeError, ValueError) as e:
            raise MedcapError(f"concept_prompt: expected max_tokens and (CUI, name) pairs ({e})") from None



class CaptionEncoder:
    """Captions -> training targets: ``input_ids``, ``attention_mask`` and ``labels`` (tensors [B, T]).

    With ``prompts`` (one list of token ids per caption, from :meth:`ConceptPrompt.ids`) each
    sequence is [DEC] + its prompt + the caption; the prompt is an input, not a target.

    Captions are truncated to ``max_length`` tokens (the final [SEP] kept). ``padding`` is
    "longest" (pad to the batch's longest caption) or "max_length" (to ``max_length``, as the
    paper did); with the padding masked out of the loss both give the same loss. Labels:
    padding and the prompt are -100 (ignored by the loss; the authors' code trained on the
    padding, REFERENCE §2). The first token is [DEC], the token generation starts from (BLIP's
    generate() puts it in place of [CLS]).
    """

    def __init__(self, tokenizer, bos_token_id: int, max_length: int, prompt: str = "", padding: str = "longest"):
        self.tokenizer, self.bos_token_id, self.max_length = tokenizer, bos_token_id, max_length
        self.prompt, self.padding = prompt.strip(), padding
        # [DEC] + the prompt's tokens (without [CLS] / [SEP]) are inputs, not targets
        self.prompt_length = len(tokenizer(self.prompt)["input_ids"]) - 1 if self.prompt else 0

    def __call__(self, captions: Sequence[str], prompts: Sequence[Sequence[int]] | None = None) -> dict:
        if prompts is not None:
            return self._with_prompts(captions, prompts)
        texts = [f"{self.prompt} {c}".strip() if self.prompt else c for c in captions]
        enc = self.tokenizer(texts, padding=self.padding, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        input_ids, attention_mask = enc["input_ids"], enc["attention_mask"]
        input_ids[:, 0] = self.bos_token_id
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        labels[:, :self.prompt_length] = -100
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def _with_prompts(self, captions: Sequence[str], prompts: Sequence[Sequence[int]]) -> dict:
        """[DEC] + prompt + caption tokens (caption truncated to max_length), padded on the right."""
        import torch

        caption_ids = self.tokenizer(list(captions), truncation=True, max_length=self.max_length)["input_ids"]
        rows = [[self.bos_token_id, *p, *ids[1:]] for p, ids in zip(prompts, caption_ids)]
        starts = [1 + len(p) for p in prompts]           # first caption token: the first target
        longest = max(len(r) for r in rows)
        width = longest if self.padding == "longest" else max(longest, self.max_length + max(starts) - 1)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (row, start) in enumerate(zip(rows, starts)):
            input_ids[i, :len(row)] = torch.tensor(row)
            attention_mask[i, :len(row)] = 1
            labels[i, start:len(row)] = input_ids[i, start:len(row)]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
