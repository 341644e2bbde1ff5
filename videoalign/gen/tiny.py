"""Seeded random generators for tests, offline smoke runs and benchmarks, built from configs (no download):
`tiny-random`, a tiny Wan (transformer, VAE, UMT5 and a BPE tokenizer trained in-process), and the Wan2.1-T2V-1.3B
transformer architecture with random weights (`wan2.1-1.3b-random`, for real-size speed figures)."""

from __future__ import annotations

import torch

from videoalign.gen.families import WAN


def tiny_text_tokenizer():
    """A 384-token BPE trained in-process (deterministic, milliseconds) with T5-style <pad>, </s>, <unk>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from videoalign.reward.inputs import fill_template, load_template

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<pad>", "</s>", "<unk>"], show_progress=False)
    backend.train_from_iterator([fill_template(load_template(), "")], trainer=trainer)
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=32)


def tiny_random_components(seed: int = 0) -> dict:
    """Seeded tiny Wan: transformer (2 blocks, width 32), VAE (8x spatial, 4x temporal), UMT5 (2 layers, 32)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = tiny_text_tokenizer()
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16,
                                        in_channels=16, out_channels=16, text_dim=32, freq_dim=32, ffn_dim=64,
                                        num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        rope_max_seq_len=32)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    torch.manual_seed(seed + 2)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                               num_heads=4, relative_attention_num_buckets=8, pad_token_id=0,
                                               eos_token_id=1, decoder_start_token_id=0))
    return {"transformer": transformer.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(),
            "tokenizer": tokenizer, "scheduler": FlowMatchEulerDiscreteScheduler(shift=WAN.default_shift)}




#: WanTransformer3DModel config of Wan-AI/Wan2.1-T2V-1.3B-Diffusers
WAN_1_3B_CONFIG = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                       out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
                       cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)


def transformer_only(model: str, dtype: str, seed: int = 0):
    """A Generator holding only a transformer, on the CPU: tiny-random's, or the Wan2.1-1.3B architecture with
    seeded random weights (model = wan2.1-1.3b-random). No VAE, text encoder or tokenizer (benchmarks feed random
    latents and text states)."""
    import dataclasses

    from videoalign.gen.families import TINY_RANDOM
    from videoalign.gen.generator import DTYPES, Generator, cast_module, load_generator

    if model == TINY_RANDOM:
        gen = load_generator(TINY_RANDOM, dtype, "cpu", seed=seed)
        return dataclasses.replace(gen, vae=None, text_encoder=None, tokenizer=None)
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    # cast_module keeps Wan's _keep_in_fp32_modules in float32, as from_pretrained(torch_dtype=...) loads them
    transformer = cast_module(WanTransformer3DModel(**WAN_1_3B_CONFIG), DTYPES[dtype]).requires_grad_(False).eval()
    return Generator(WAN, transformer, None, None, None, DTYPES[dtype], WAN.text_max_length)


def at_depth(gen, num_layers: int, seed: int):
    """gen with tiny-random's transformer rebuilt (same config, seeded random weights) at num_layers blocks;
    the gen itself when it already has them."""
    import dataclasses

    from diffusers import WanTransformer3DModel

    transformer = gen.transformer
    if len(transformer.blocks) == num_layers:
        return gen
    config = {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}
    torch.manual_seed(seed)
    deeper = WanTransformer3DModel(**{**config, "num_layers": num_layers}).to(gen.dtype)
    return dataclasses.replace(gen, transformer=deeper.requires_grad_(False).eval())
