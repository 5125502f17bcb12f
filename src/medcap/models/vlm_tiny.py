"""Tiny randomly initialised vision-language models, built from a transformers config in code.

``vlm-tiny`` (and the tests) train the generic VLM path of :mod:`.vlm` from scratch on a CPU:
a small model of a real architecture family, with a WordPiece tokenizer learned from the
dataset's captions (:func:`.tokenization.train_wordpiece`) plus the family's chat tokens, and
the family's own processor class. Two families:

- ``qwen2_vl`` (Qwen2-VL / Qwen2.5-VL layout): a ViT with 2 x 2 patch merging, M-RoPE text
  decoder. Its rotary sections must sum to half the head dimension (ENVIRONMENT.md).
- ``idefics3`` (Idefics3 / SmolVLM layout): a SigLIP encoder, pixel shuffle (scale factor 2),
  Llama text decoder; no image splitting at this size.

Every special token id lives inside the small vocabulary (the hub defaults, 151643..., do not).
"""
from __future__ import annotations

from collections.abc import Iterable

from ..errors import MedcapError

FAMILIES = ("qwen2_vl", "idefics3")
# Words of the chat template and the instruction go into the tokenizer's vocabulary too, so
# the prompt is a few whole words, not spelled letter by letter.
_ROLE_WORDS = "user: assistant: system:"

_QWEN_TOKENS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                "<|video_pad|>"]
_QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
_IDEFICS_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
_IDEFICS_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}:{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")

# Sizes: hidden 128, 2 + 2 layers, 8 px patches (64 px images -> 16 image tokens after merging).
HIDDEN, LAYERS, HEADS, PATCH = 128, 2, 4, 8


def tiny_tokenizer(captions: Iterable[str], family: str, extra_text: str = "", vocab_size: int = 2000,
                   max_length: int = 64):
    """WordPiece from ``captions`` (+ ``extra_text``: the instruction) with ``family``'s chat tokens;
    the end-of-turn token is the eos a caption ends with."""
    from .tokenization import train_wordpiece

    tokens = _QWEN_TOKENS if family == "qwen2_vl" else _IDEFICS_TOKENS
    # model_max_length: the whole sequence (image tokens, prompt, caption); captions are cut by VLMCaptioner
    tokenizer = train_wordpiece([*captions, _ROLE_WORDS, extra_text], vocab_size=vocab_size, max_length=4096)
    eos = "<|im_end|>" if family == "qwen2_vl" else "<end_of_utterance>"
    tokenizer.add_special_tokens({"additional_special_tokens": tokens, "eos_token": eos})
    return tokenizer


def tiny_processor(tokenizer, family: str, image_size: int):
    """The family's own processor class around ``tokenizer``, for ``image_size`` px images."""
    if family == "qwen2_vl":
        from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

        side = PATCH * 2  # patch x merge: the processor rounds sides to multiples of it
        images = Qwen2VLImageProcessor(size={"shortest_edge": side * side, "longest_edge": image_size * image_size},
                                       patch_size=PATCH, merge_size=2, temporal_patch_size=2)
        return Qwen2VLProcessor(image_processor=images, video_processor=Qwen2VLVideoProcessor(), tokenizer=tokenizer,
                                chat_template=_QWEN_TEMPLATE)
    from transformers import Idefics3ImageProcessor, Idefics3Processor

    images = Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": image_size},
                                    max_image_size={"longest_edge": image_size})
    return Idefics3Processor(image_processor=images, tokenizer=tokenizer, chat_template=_IDEFICS_TEMPLATE,
                             image_seq_len=(image_size // PATCH) ** 2 // 4)


def tiny_config(tokenizer, family: str, image_size: int, max_length: int, dropout: float = 0.0):
    """A transformers config of ``family`` at the tiny sizes, its token ids from ``tokenizer``."""
    ids = tokenizer.convert_tokens_to_ids
    text = {"vocab_size": len(tokenizer), "hidden_size": HIDDEN, "intermediate_size": 4 * HIDDEN,
            "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": HEADS // 2,
            "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
            "max_position_embeddings": max(512, 4 * max_length), "attention_dropout": dropout,
            "tie_word_embeddings": True}
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig

        head = HIDDEN // HEADS
        # M-RoPE: (temporal, height, width) sections summing to half the head dimension
        sections = [head // 2 - 2 * (head // 6), head // 6, head // 6]
        return Qwen2VLConfig(
            text_config={**text, "rope_scaling": {"type": "mrope", "mrope_section": sections},
                         "bos_token_id": ids("<|im_start|>")},
            vision_config={"depth": LAYERS, "embed_dim": HIDDEN // 2, "hidden_size": HIDDEN, "num_heads": HEADS // 2,
                           "patch_size": PATCH, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_chans": 3},
            image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
            tie_word_embeddings=True)
    if family == "idefics3":
        from transformers import Idefics3Config

        return Idefics3Config(
            text_config={**text, "model_type": "llama", "bos_token_id": tokenizer.cls_token_id},
            vision_config={"hidden_size": HIDDEN // 2, "intermediate_size": 2 * HIDDEN, "num_hidden_layers": LAYERS,
                           "num_attention_heads": HEADS // 2, "patch_size": PATCH, "image_size": image_size},
            image_token_id=ids("<image>"), scale_factor=2, pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=True)
    raise MedcapError(f"unknown tiny VLM family {family!r}; expected one of: {', '.join(FAMILIES)}")


def build_tiny(family: str, captions: Iterable[str], *, image_size: int = 64, vocab_size: int = 2000,
               max_length: int = 64, seed: int | None = None, instruction: str = "", processor=None,
               dropout: float = 0.0):
    """(model, processor): a tiny random ``family`` model; ``processor``: reuse one (``--resume``)."""
    import torch
    from transformers import AutoModelForImageTextToText

    if family not in FAMILIES:
        raise MedcapError(f"unknown tiny VLM family {family!r}; expected scratch:" + " or scratch:".join(FAMILIES))
    if image_size % (2 * PATCH):
        raise MedcapError(f"image_size: a tiny VLM needs a multiple of {2 * PATCH} px, got {image_size}")
    if processor is None:
        processor = tiny_processor(tiny_tokenizer(captions, family, instruction, vocab_size, max_length), family,
                                   image_size)
    config = tiny_config(processor.tokenizer, family, image_size, max_length, dropout)
    if seed is not None:
        torch.manual_seed(seed)
    return AutoModelForImageTextToText.from_config(config), processor
