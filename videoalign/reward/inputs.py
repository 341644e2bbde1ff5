"""Prompt template + video tokens -> VideoReward model inputs. The one place that knows the chat layout.

The rendered sequence (docs/numerics.md, Prompt and tokens) is the Qwen2-VL chat template with one user turn, the
video first and the filled rubric second, the default system prompt and the generation prompt:

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n<|vision_start|>
    <|video_pad|> x N <|vision_end|>{template.format(text_prompt=prompt)}<|im_end|>\\n<|im_start|>assistant\\n

Special tokens are atomic in the tokenizer, so tokenising the pieces around the N pad tokens separately gives
exactly the ids of tokenising the whole string, without building a string of N pad tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import torch

DEFAULT_DIMS = ("VQ", "MQ", "TA")
TEMPLATES = {"detailed_special": "prompt_template_detailed_special.txt"}
SYSTEM_PREFIX = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
TURN_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
VIDEO_PAD = "<|video_pad|>"
VISION_END = "<|vision_end|>"
#: special tokens that would add or break vision slots if a prompt contained them (atomic in the tokenizer)
RESERVED_IN_PROMPT = ("<|video_pad|>", "<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>")


def reward_token(dim: str) -> str:
    """`"VQ"` -> `"<|VQ_reward|>"`: the special token whose final hidden state gives that dimension's score."""
    return f"<|{dim}_reward|>"


def generic_template(dims) -> str:
    """A rubric for custom dimensions (any names): the prompt, then one rating line per reward token.
    The released template is VQ/MQ/TA-specific; this one serves models trained on other label columns."""
    lines = ["", "Please evaluate the video generated from the textual prompt below.",
             "Textual prompt - {text_prompt}"]
    lines += [f"Please provide the rating of {d}: {reward_token(d)}" for d in dims]
    return "\n".join(lines) + "\nEND\n"


@lru_cache(maxsize=None)
def load_template(template_type: str = "detailed_special") -> str:
    """The byte-exact rubric text (read with newline="" so nothing touches its line ends or spaces)."""
    if template_type not in TEMPLATES:
        raise ValueError(
            f"prompt template {template_type!r} is unknown; use one of {', '.join(sorted(TEMPLATES))}"
        )
    ref = resources.files("videoalign") / "assets" / TEMPLATES[template_type]
    with ref.open("r", encoding="utf-8", newline="") as fh:
        return fh.read()


def fill_template(template: str, prompt: str) -> str:
    """`template.format(text_prompt=prompt)`: braces inside the prompt are inserted literally."""
    return template.replace("{text_prompt}", prompt)


@dataclass
class TokenizedPrompt:
    input_ids: list[int]
    #: position of each dimension's reward token, in `dims` order
    reward_positions: list[int]


class RewardInputBuilder:
    """Tokenises prompts into the reward layout and collates a batch with right padding."""

    def __init__(self, tokenizer, dims=DEFAULT_DIMS, template_type: str = "detailed_special"):
        self.tokenizer = tokenizer
        self.dims = tuple(dims)
        self.template = generic_template(self.dims) if template_type == "generic" else load_template(template_type)
        tokens = [reward_token(d) for d in self.dims]
        missing = [t for t in tokens if t not in self.template]
        if missing:
            raise ValueError(
                f"prompt template {template_type!r} has no {', '.join(missing)}; it supports the dimensions "
                "VQ, MQ, TA only"
            )
        self.reward_token_ids = [self._token_id(t) for t in tokens]
        self.video_pad_id = self._token_id(VIDEO_PAD)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._token_id("<|endoftext|>")
        self.prefix_ids = self._encode(SYSTEM_PREFIX)

    def _token_id(self, token: str) -> int:
        ids = self.tokenizer.convert_tokens_to_ids([token])
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if not ids or ids[0] is None or (unk is not None and ids[0] == unk):
            raise ValueError(f"tokenizer has no special token {token}; load it through VideoReward.from_pretrained")
        return int(ids[0])

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def check_prompt(self, prompt: str) -> None:
        """Reject a prompt that would break reward-token pooling (docs/numerics.md, Prompt and tokens)."""
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be text, got {type(prompt).__name__}")
        for token in [*(reward_token(d) for d in self.dims), *RESERVED_IN_PROMPT]:
            if token in prompt:
                raise ValueError(f"prompt contains the reserved token {token}; remove it from the prompt")

    def tokenize(self, prompt: str, num_video_tokens: int) -> TokenizedPrompt:
        """Input ids for one (prompt, video) with `num_video_tokens` pads (= gt*gh*gw/4)."""
        self.check_prompt(prompt)
        suffix = self._encode(VISION_END + fill_template(self.template, prompt) + TURN_SUFFIX)
        ids = self.prefix_ids + [self.video_pad_id] * num_video_tokens + suffix
        positions = []
        for dim, tid in zip(self.dims, self.reward_token_ids):
            where = [i for i, t in enumerate(suffix) if t == tid]
            if len(where) != 1:
                raise ValueError(f"expected exactly one {reward_token(dim)} per sequence, found {len(where)}")
            positions.append(len(self.prefix_ids) + num_video_tokens + where[0])
        return TokenizedPrompt(ids, positions)

    def collate(self, prompts: list[TokenizedPrompt], pixels: list) -> dict[str, torch.Tensor]:
        """Right-pad to the longest row; concatenate the videos' patch rows in batch order.

        Returns input_ids/attention_mask (B, L) int64, reward_positions (B, D) int64,
        pixel_values_videos (sum rows, 1176) float32 and video_grid_thw (B, 3) int64.
        """
        length = max(len(p.input_ids) for p in prompts)
        input_ids = torch.full((len(prompts), length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), length), dtype=torch.long)
        for row, p in enumerate(prompts):
            input_ids[row, : len(p.input_ids)] = torch.tensor(p.input_ids, dtype=torch.long)
            attention_mask[row, : len(p.input_ids)] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "reward_positions": torch.tensor([p.reward_positions for p in prompts], dtype=torch.long),
            "pixel_values_videos": torch.cat([px.pixel_values for px in pixels], dim=0),
            "video_grid_thw": torch.tensor([list(px.grid_thw) for px in pixels], dtype=torch.long),
        }
