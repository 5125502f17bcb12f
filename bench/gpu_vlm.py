"""LoRA training-step memory and speed, and batched caption generation, of real-size vision-language models.

    .venv/bin/python bench/gpu_vlm.py                      # on a CUDA GPU: every case below
    .venv/bin/python bench/gpu_vlm.py --tiny --cases 3b-bf16   # a CPU smoke run of the script itself

Real-size architectures with random weights (the time and memory of a step do not depend on the
weights; nothing is downloaded): Qwen2.5-VL-3B-Instruct's and -7B-Instruct's sizes as published
in their config.json (:data:`SIZES`), built with ``Qwen2_5_VLConfig`` and a small WordPiece
tokenizer (its token ids fall inside the real vocabulary). Each case goes through medcap's own
path (:class:`medcap.models.vlm.VLMCaptioner`: chat-template prompt, caption-only labels, left
padding, LoRA r 16 on the language model's attention via peft):

- ``3b-bf16``: bf16 weights, LoRA, gradient checkpointing;
- ``7b-4bit``: QLoRA: the random 7B saved once to a temporary folder and reloaded in 4-bit NF4
  (bitsandbytes), LoRA on top, gradient checkpointing.

Per case: peak GPU memory (``torch.cuda.max_memory_allocated``) and images/s of AdamW LoRA steps
at 448 px (256 image tokens) with 48-token captions, then captions/s of batched greedy
generation of exactly 32 new tokens (``min_new_tokens``: random weights would stop anywhere).
Each case runs in its own process, so its peak memory is its own. Writes JSON to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CAPTIONS = ["Axial CT of the chest shows a 2.3 cm nodule in the right upper lobe.",
            "Plain radiograph of the knee (AP view) with a transverse fracture of the tibia.",
            "T2-weighted MRI of the brain showing a cystic lesion.", "Ultrasound of the liver, no abnormality."]
# From Qwen/Qwen2.5-VL-{3B,7B}-Instruct's config.json (text decoder and vision tower sizes).
SIZES = {
    "3b": {"text": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                    "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936},
           "vision": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                      "out_hidden_size": 2048}, "tie": True},
    "7b": {"text": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                    "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064},
           "vision": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                      "out_hidden_size": 3584}, "tie": False},
}
TINY = {"text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "vocab_size": 1000},
        "vision": {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2, "out_hidden_size": 64},
        "tie": True}
CASES = {"3b-bf16": ("3b", "bf16"), "7b-4bit": ("7b", "4bit")}


def build(size: dict, tokenizer):
    """A random Qwen2.5-VL of ``size`` whose special token ids are ``tokenizer``'s."""
    from transformers import Qwen2_5_VLConfig

    ids = tokenizer.convert_tokens_to_ids
    head = size["text"]["hidden_size"] // size["text"]["num_attention_heads"]
    sections = [head // 2 - 2 * (3 * head // 16), 3 * head // 16, 3 * head // 16]  # 3B/7B: [16, 24, 24]
    return Qwen2_5_VLConfig(
        text_config={**size["text"], "rope_scaling": {"type": "mrope", "mrope_section": sections},
                     "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "bos_token_id": ids("<|im_start|>"), "tie_word_embeddings": size["tie"]},
        vision_config={**size["vision"], "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                       "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31][:max(1, size["vision"]["depth"]
                                                                                       // 8)]},
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=size["tie"])


def one(case: str, batch: int, steps: int, warmup: int, new_tokens: int, tiny: bool, image_size: int) -> dict:
    import tempfile

    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    from medcap.models.vlm import LoraSettings, VLMCaptioner, four_bit_config
    from medcap.models.vlm_tiny import _QWEN_TEMPLATE, tiny_tokenizer

    size_name, precision = CASES[case]
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    tokenizer = tiny_tokenizer(CAPTIONS, "qwen2_vl", "Write the caption of this medical image.", 500)
    images = Qwen2VLImageProcessor(size={"shortest_edge": 56 * 56, "longest_edge": image_size * image_size},
                                   patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2VLProcessor(image_processor=images, video_processor=Qwen2VLVideoProcessor(),
                                 tokenizer=tokenizer, chat_template=_QWEN_TEMPLATE)
    config = build(TINY if tiny else SIZES[size_name], tokenizer)
    torch.manual_seed(0)
    if precision == "4bit":
        from peft import prepare_model_for_kbit_training

        with tempfile.TemporaryDirectory() as tmp:  # bitsandbytes quantises while loading
            AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16).save_pretrained(tmp)
            model = AutoModelForImageTextToText.from_pretrained(tmp, quantization_config=four_bit_config(),
                                                                device_map={"": 0})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    else:
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16 if cuda else torch.float32)
        model.to(device)
    captioner = VLMCaptioner(model, processor, image_size=image_size, max_length=48)
    captioner.enable_gradient_checkpointing()
    captioner.add_lora(LoraSettings(r=16, alpha=32), gradient_checkpointing=True)
    params = sum(p.numel() for p in captioner.model.parameters())
    trainable = sum(p.numel() for p in captioner.model.parameters() if p.requires_grad)
    rng = np.random.default_rng(0)
    pics = [Image.fromarray(rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)) for _ in range(batch)]
    caps = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch)]
    data = {k: v.to(device) for k, v in captioner.encode(pics, captioner.prompts(batch), caps).items()}
    opt = torch.optim.AdamW([p for p in captioner.model.parameters() if p.requires_grad], lr=1e-4)
    captioner.model.train()

    def step():
        loss = captioner.loss(captioner.model, data)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    step_s = (time.perf_counter() - t) / steps
    train_peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    captioner.model.eval()
    prompt = {k: v.to(device) for k, v in captioner.encode(pics, captioner.prompts(batch)).items()}
    with torch.inference_mode():
        captioner.model.generate(**prompt, max_new_tokens=2, min_new_tokens=2, do_sample=False)  # warm-up
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = captioner.model.generate(**prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                       do_sample=False)
        if cuda:
            torch.cuda.synchronize()
        gen_s = time.perf_counter() - t
    return {"case": case, "tiny": tiny, "device": torch.cuda.get_device_name() if cuda else "cpu",
            "parameters_m": round(params / 1e6, 1), "trainable_m": round(trainable / 1e6, 2), "batch": batch,
            "image_size": image_size, "sequence": int(data["input_ids"].shape[1]),
            "step_s": round(step_s, 3), "images_per_s": round(batch / step_s, 2),
            "train_peak_gib": None if train_peak is None else round(train_peak, 2),
            "generated_tokens": int(out.shape[1] - prompt["input_ids"].shape[1]),
            "captions_per_s": round(batch / gen_s, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: check the script on a CPU")
    parser.add_argument("--out", type=Path, default=Path("gpu_vlm.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # the child process of one case
        print(json.dumps(one(args.one, args.batch, args.steps, args.warmup, args.new_tokens, args.tiny,
                             args.image_size)))
        return 0
    rows = []
    for case in args.cases:
        cmd = [sys.executable, __file__, "--one", case, "--batch", str(args.batch), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--new-tokens", str(args.new_tokens), "--image-size",
               str(args.image_size)] + (["--tiny"] if args.tiny else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            rows.append({"case": case, "error": (done.stderr.strip().splitlines() or ["?"])[-1]})
        else:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    print(f"{'case':10} {'peak GiB':>9} {'images/s':>9} {'captions/s':>11}")
    for r in rows:
        print(f"{r['case']:10} {r.get('train_peak_gib')!s:>9} {r.get('images_per_s', '-')!s:>9} "
              f"{r.get('captions_per_s', r.get('error', '-'))!s:>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
