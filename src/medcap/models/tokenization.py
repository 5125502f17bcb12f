"""A deterministic WordPiece tokenizer learned from the training captions (from-scratch captioners)."""
from __future__ import annotations

from collections.abc import Iterable

from ..errors import MedcapError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]")  # [PAD] gets id 0


def train_wordpiece(captions: Iterable[str], vocab_size: int = 4000, lowercase: bool = True,
                    max_length: int = 200):
    """A BERT WordPiece tokenizer whose vocabulary is learned from ``captions``, set up as BLIP expects.

    The vocabulary: BLIP's special tokens, every character seen (as a word start and as a
    ``##`` continuation, so no word is unknown), then the most frequent words, ties in
    alphabetical order, up to ``vocab_size``. A word outside it is spelled in pieces. It is
    built here rather than with the ``tokenizers`` WordPiece trainer because that trainer is
    not deterministic (three runs on the same captions gave three different vocabularies: it
    breaks ties in hash-map order), and a seed must give the same model.

    ``[DEC]`` is the beginning-of-sequence token generation starts from, ``[SEP]`` ends a
    caption, ``[PAD]`` (id 0) pads. transformers 5 ignores ``vocab_file=`` on BertTokenizer, so
    the vocabulary is passed as a dict (``vocab=``).
    """
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers
    from transformers import BertTokenizer

    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    splitter = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for caption in captions:
        if caption and caption.strip():
            words.update(w for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(caption)))
    if not words:
        raise MedcapError("cannot build a tokenizer: no non-empty training captions")
    chars = sorted({ch for w in words for ch in w})
    vocab = list(SPECIAL_TOKENS) + chars + [f"##{ch}" for ch in chars]
    known = set(vocab)
    for word, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        if word not in known:
            vocab.append(word)
    return BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=lowercase, bos_token="[DEC]",
                         model_max_length=max_length)
