"""The settings of the reward half, as typed dataclasses with a `#:` doc per field (the CLI's options and help come
from them): how VideoReward scores (shared by score, relabel, bench reward and bench winrate's `reward` section)
and what trains in train-reward. Importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: the released VideoReward on the Hugging Face hub
DEFAULT_REWARD_MODEL = "KwaiVGI/VideoReward"


@dataclass
class ScoringConfig:
    """How VideoReward scores videos."""

    #: VideoReward checkpoint: hub id, local folder (reference layouts or ours) or tiny-random
    model: str = DEFAULT_REWARD_MODEL
    #: where the base Qwen2-VL comes from (hub id or folder); default: the checkpoint's model_name_or_path
    base_model: str | None = None
    #: checkpoint-<step> to load from a reference-layout folder; default: the largest step
    checkpoint_step: int | None = None
    #: compute dtype; auto = bfloat16 on GPU, float32 on CPU (use float32 for exact parity)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    #: auto, cpu, cuda or cuda:N (under accelerate launch each process uses its own device)
    device: str = "auto"
    #: videos per forward pass
    batch_size: int = 8
    #: threads that decode and resize ahead of the model
    num_workers: int = 2
    #: frames per second to sample; default: the checkpoint's (2.0 for the released model)
    fps: float | None = None
    #: fixed number of frames per video instead of fps sampling
    num_frames: int | None = None
    #: upper bound on resized frame area h*w; default: the checkpoint's (200704)
    max_pixels: int | None = None
    #: report raw head outputs instead of normalised (z-) scores
    raw: bool = False

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be 0 or more, got {self.num_workers}")
        if self.fps is not None and self.num_frames is not None:
            raise ValueError("fps and num_frames are exclusive: set only one of them")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.num_frames is not None and self.num_frames < 2:
            raise ValueError(f"num_frames must be at least 2, got {self.num_frames}")


#: the ScoringConfig fields that change scores: an output written with other values cannot be resumed into
SCORE_SETTINGS = ("model", "base_model", "checkpoint_step", "dtype", "fps", "num_frames", "max_pixels", "raw")


@dataclass
class TrainableConfig:
    #: LoRA rank on the language model's linear layers (0 = full fine-tuning of those layers is NOT offered)
    lora_r: int = 64
    #: LoRA alpha (scale alpha/r)
    lora_alpha: float = 128.0
    #: LoRA dropout (the reference uses 0.05; 0.0 makes runs bit-reproducible across process counts)
    lora_dropout: float = 0.05
    #: module-name substrings that never get LoRA
    lora_exclude: list[str] = field(default_factory=lambda: ["lm_head", "rm_head", "embed_tokens", "visual"])
    #: train the vision tower's blocks (the reference and the paper do)
    train_vision: bool = True
    #: train the vision merger
    train_merger: bool = True
    #: learning rate of the LoRA factors and the reward head
    learning_rate: float = 2e-6
    #: learning rate of the vision blocks
    vision_lr: float = 2e-6
    #: learning rate of the merger
    merger_lr: float = 2e-6
    #: learning rate of the reward tokens' embedding rows
    special_token_lr: float = 2e-6
    #: AdamW weight decay (not applied to the embedding)
    weight_decay: float = 0.0

    def __post_init__(self):
        if self.lora_r < 1:
            raise ValueError(f"lora_r must be >= 1, got {self.lora_r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")

    def lora_dict(self) -> dict:
        return {"r": self.lora_r, "alpha": self.lora_alpha, "dropout": self.lora_dropout,
                "exclude": list(self.lora_exclude), "target_modules": None, "use_rslora": False}
