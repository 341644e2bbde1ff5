"""The settings of the generator half, as typed dataclasses with a `#:` doc per field (the CLI's options and help
come from them): LoRA, the latent reward model, and the fields every command that trains on cached latents of a
pair file shares (dpo, rwr, train-latent-rm). Importing this module does not import torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from videoalign.gen.families import DEFAULT_MODEL, WAN_LORA_TARGETS
from videoalign.trainer import TrainingConfig

Pooling = Literal["mean", "attention"]
POOLINGS = ("mean", "attention")
_DIM_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass
class LoraSettings:
    #: false = full fine-tuning of the transformer (DPO then keeps a frozen copy as the reference)
    enabled: bool = True
    #: LoRA rank r (paper Table 10: 64)
    rank: int = 64
    #: LoRA alpha (paper: 128); the update is alpha / r * B A
    alpha: float = 128.0
    #: dropout on the LoRA input
    dropout: float = 0.0
    #: module names (or suffixes) to adapt; default: q/k/v/o of self- and cross-attention
    targets: list[str] = field(default_factory=lambda: list(WAN_LORA_TARGETS))


@dataclass
class LatentRewardConfig:
    """Architecture and training choice of a latent reward model (what save/load keep beside the weights)."""

    #: transformer blocks taken from the start of the video transformer (the paper: "a few early layers")
    k: int = 4
    #: reward dimensions, in output-column order; one head each
    dims: list[str] = field(default_factory=lambda: ["VQ", "MQ", "TA"])
    #: train only the pooling and the heads (the paper trains the whole model)
    freeze_backbone: bool = False
    #: how token states become one vector: mean over tokens, or a learned softmax weighting (starts as the mean)
    pooling: Pooling = "mean"
    #: hidden width of a two-layer SiLU MLP head per dimension; None = one Linear(inner_dim, 1) per dimension
    head_hidden: int | None = None

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1 (transformer blocks to keep), got {self.k!r}")
        if isinstance(self.dims, str) or not isinstance(self.dims, (list, tuple)) or not self.dims:
            raise ValueError(f"dims must be a non-empty list of dimension names such as [VQ, MQ, TA], got "
                             f"{self.dims!r}")
        self.dims = list(self.dims)
        bad = [d for d in self.dims if not isinstance(d, str) or not _DIM_NAME.match(d)]
        if bad:
            raise ValueError(f"dims: names must be letters, digits or _ (they name the heads), got {bad!r}")
        if len(set(self.dims)) != len(self.dims):
            raise ValueError(f"dims must not repeat a name, got {self.dims}")
        if not isinstance(self.freeze_backbone, bool):
            raise ValueError(
                f"freeze_backbone must be true or false, got {self.freeze_backbone!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.head_hidden is not None and (isinstance(self.head_hidden, bool) or not isinstance(self.head_hidden, int)
                                             or self.head_hidden < 1):
            raise ValueError(f"head_hidden must be an integer >= 1 or null (a linear head), got {self.head_hidden!r}")



@dataclass
class LatentTrainingConfig(TrainingConfig):
    """What the commands that train on cached latents of a pair file share (dpo, rwr, train-latent-rm)."""

    #: pair file: relabel's pairs JSONL or a reference pair CSV (rwr also takes score's JSONL)
    data: str | None = None
    #: folder the data file's relative video paths are relative to (default: the file's folder)
    videos_root: str | None = None
    #: latent cache folder (default: <output_dir>/cache); share one between runs to encode once
    cache_dir: str | None = None
    #: false = encode every clip and prompt on the fly at every step (no cache; for checks and one-off runs)
    latent_cache: bool = True
    #: diffusers text-to-video model: hub id, folder or tiny-random
    model: str = DEFAULT_MODEL
    #: transformer and text-encoder dtype (the VAE stays float32); float16 is refused for Wan
    dtype: Literal["bfloat16", "float32", "float16"] = "bfloat16"
    #: frames per training clip; Wan needs 4k+1
    num_frames: int = 81
    #: training height (a multiple of 16)
    height: int = 480
    #: training width (a multiple of 16)
    width: int = 832
    #: frame rate the clips are read at (null: consecutive source frames)
    fps: float | None = None
    #: crop = scale to cover and centre-crop; stretch = resize to height x width
    resize: Literal["crop", "stretch"] = "crop"
    #: AdamW learning rate (paper: 5e-6; >= 1e-4 has collapsed LoRA DPO runs)
    learning_rate: float = 5e-6
    #: AdamW weight decay
    weight_decay: float = 0.0
    #: training timesteps: logit_normal (SD3's, concentrated mid-way) or uniform (every noise level alike)
    timestep_sampling: Literal["logit_normal", "uniform"] = "logit_normal"
    #: mean of the normal whose logistic gives logit_normal timesteps
    logit_mean: float = 0.0
    #: standard deviation of that normal
    logit_std: float = 1.0
    #: flow shift s applied to the drawn t (1.0 = none; null: the model family's, 3.0 for Wan 480p)
    shift: float | None = None

    def __post_init__(self):
        super().__post_init__()
        from videoalign.gen.families import family_of

        if not self.data:
            raise ValueError("data is required: a pair JSONL from videoalign relabel or a reference pair CSV")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.shift is not None and self.shift <= 0:
            raise ValueError(f"shift must be > 0 (1.0 = no shift) or null, got {self.shift}")
        family = family_of(self.model)
        if self.dtype in family.refused_dtypes:
            raise ValueError(f"dtype: {family.refused_dtypes[self.dtype]}")
        family.check_clip(self.num_frames, self.height, self.width)
        self.family = family


@dataclass
class AlignConfig(LatentTrainingConfig):
    """Flow-DPO and Flow-RWR on a generator's transformer: LoRA or full fine-tuning, validation samples, export."""

    lora: LoraSettings = field(default_factory=LoraSettings)
    #: linear warm-up steps, then constant
    warmup_steps: int = 0
    #: sample the validation prompts to mp4 every N steps (0 = never; the end of training always, if any)
    validate_every: int = 0
    #: prompts sampled to samples/step-N/ and samples/final/ with the trained weights (repeat the option per prompt)
    validation_prompts: list[str] = field(default_factory=list)
    #: one video per (prompt, seed)
    validation_seeds: list[int] = field(default_factory=lambda: [0])
    #: Euler steps of the validation samples
    sample_steps: int = 50
    #: classifier-free guidance scale of the validation samples (1 = no negative branch)
    guidance_scale: float = 5.0
    #: negative prompt of the validation samples' classifier-free guidance
    negative_prompt: str = ""
    #: fps written into the sample mp4s
    sample_fps: float = 16.0
    #: also save the transformer with the LoRA fused in (output_dir/merged, a diffusers pipeline folder)
    merge: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.sample_steps < 1:
            raise ValueError(f"sample_steps must be >= 1, got {self.sample_steps}")
        if self.lora.enabled:
            if self.lora.rank < 1:
                raise ValueError(f"lora.rank must be >= 1, got {self.lora.rank}")
            if problem := self.family.check_lora_targets(self.lora.targets):
                raise ValueError(f"lora.targets: {problem}")
