"""Tests for videoalign.reward.inputs: the rubric template, the chat layout, collation (docs/numerics.md, Prompt and tokens).

The layout test rebuilds the docs/numerics.md, Prompt and tokens string by hand (the reference's `template.format(text_prompt=...)`,
literal chat markers) and checks that the package's ids decode to it and equal the ids of tokenising that
whole string at once.
"""

from __future__ import annotations

import hashlib
from importlib import resources

import pytest
import torch

from videoalign.reward.inputs import RewardInputBuilder, TokenizedPrompt, load_template
from videoalign.reward.model import build_tiny_random
from videoalign.reward.vision import VideoPixels, preprocess_frames

TEMPLATE_SHA256 = "fdb6309bac618dd0c8b1b589d3a0970a974f7856eecbb355a190b2dce54af700"
TEMPLATE_BYTES = 3997

# docs/numerics.md, Prompt and tokens
QWEN_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|video_pad|>": 151656,
    "<|VQ_reward|>": 151657,
    "<|MQ_reward|>": 151658,
    "<|TA_reward|>": 151659,
}


def reference_layout(prompt: str, num_video_tokens: int) -> str:
    """docs/numerics.md, Prompt and tokens, written out literally."""
    template = (
        resources.files("videoalign")
        .joinpath("assets", "prompt_template_detailed_special.txt")
        .read_bytes()
        .decode("utf-8")
    )
    return (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
        + "<|video_pad|>" * num_video_tokens
        + "<|vision_end|>"
        + template.format(text_prompt=prompt)
        + "<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_random()


# ---- template (docs/numerics.md, Prompt and tokens) --------------------------------------------------------------------


def test_packaged_template_is_byte_exact():
    data = (
        resources.files("videoalign").joinpath("assets", "prompt_template_detailed_special.txt").read_bytes()
    )
    assert len(data) == TEMPLATE_BYTES
    assert hashlib.sha256(data).hexdigest() == TEMPLATE_SHA256
    text = load_template()
    assert text.encode("utf-8") == data  # nothing touched line ends or trailing spaces
    assert text.startswith("\n") and text.endswith("<|TA_reward|>\nEND\n")
    assert sum(1 for line in text.split("\n") if line != line.rstrip(" ")) == 5
    assert text.count("{") == text.count("}") == 1 and text.count("{text_prompt}") == 1
    for dim in ("VQ", "MQ", "TA"):
        assert text.count(f"<|{dim}_reward|>") == 1
    assert (
        text.index("<|VQ_reward|>")
        < text.index("<|MQ_reward|>")
        < text.index("{text_prompt}")
        < text.index("<|TA_reward|>")
    )


def test_packaged_template_equals_shared_copy(shared_data):
    shared = (shared_data / "videoreward" / "prompt_template_detailed_special.txt").read_bytes()
    assert load_template().encode("utf-8") == shared


def test_unknown_template_type_is_an_error():
    with pytest.raises(ValueError, match="detailed_special"):
        load_template("simple")


# ---- layout (docs/numerics.md, Prompt and tokens) ----------------------------------------------------------------------


def _check_layout(tokenizer, prompt: str, n: int = 4):
    builder = RewardInputBuilder(tokenizer)
    tokens = builder.tokenize(prompt, n)
    expected = reference_layout(prompt, n)
    decoded = tokenizer.decode(
        tokens.input_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    assert decoded == expected
    # tokenising the pieces separately gives the ids of the whole string (special tokens are atomic)
    assert tokens.input_ids == list(tokenizer(expected, add_special_tokens=False)["input_ids"])
    ids = tokenizer.convert_tokens_to_ids(
        ["<|VQ_reward|>", "<|MQ_reward|>", "<|TA_reward|>", "<|video_pad|>"]
    )
    *reward_ids, pad = ids
    assert tokens.input_ids.count(pad) == n
    for tid, pos in zip(reward_ids, tokens.reward_positions):
        assert tokens.input_ids.count(tid) == 1
        assert tokens.input_ids[pos] == tid
    assert tokens.reward_positions == sorted(tokens.reward_positions)
    return tokens


def test_layout_tiny_random_tokenizer(tiny):
    _, tokenizer, _ = tiny
    _check_layout(tokenizer, "a corgi surfs a wave at sunset")


def test_layout_parity_base_tokenizer(shared_data):
    """The parity base's tokenizer (saved by transformers 4.45), reward tokens added as at load time."""
    from videoalign.reward.model import add_reward_tokens, load_tokenizer

    tokenizer = load_tokenizer(str(shared_data / "videoreward" / "parity" / "tiny_qwen2vl_base"))
    assert add_reward_tokens(tokenizer, ["VQ", "MQ", "TA"]) == [1014, 1015, 1016]  # parity JSON meta
    _check_layout(tokenizer, "A first-person view of an astronaut, with {braces}.")


def test_reward_positions_follow_the_video_length(tiny):
    """The video pads sit before all three reward tokens, so each extra pad shifts every position by one."""
    _, tokenizer, _ = tiny
    builder = RewardInputBuilder(tokenizer)
    a, b = builder.tokenize("x", 4), builder.tokenize("x", 10)
    assert [q - p for p, q in zip(a.reward_positions, b.reward_positions)] == [6, 6, 6]


# ---- collation (docs/numerics.md, Prompt and tokens) -------------------------------------------------------------------


class StubTokenizer:
    """The Qwen2-VL special-token ids of docs/numerics.md, Prompt and tokens; text is encoded one id per character."""

    def __init__(self, pad_token_id):
        self.pad_token_id = pad_token_id
        self.unk_token_id = None

    def convert_tokens_to_ids(self, tokens):
        return [QWEN_IDS.get(t) for t in tokens]

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


@pytest.mark.parametrize("pad_token_id", [151643, None])
def test_collate_right_pads_with_the_pad_id(pad_token_id):
    """Rows of length 5 and 3 -> (2, 5) ids right-padded with 151643 (the pad id, or <|endoftext|> when the
    tokenizer has no pad id), mask 1 on real tokens and 0 on padding; videos concatenated in batch order."""
    builder = RewardInputBuilder(StubTokenizer(pad_token_id))
    assert builder.pad_id == 151643
    long_row = TokenizedPrompt([1, 2, 3, 4, 5], [1, 2, 3])
    short_row = TokenizedPrompt([7, 8, 9], [0, 1, 2])
    px_a = VideoPixels(torch.full((16, 1176), 1.0), (2, 2, 4))
    px_b = VideoPixels(torch.full((8, 1176), 2.0), (2, 2, 2))
    batch = builder.collate([short_row, long_row], [px_a, px_b])
    assert batch["input_ids"].tolist() == [[7, 8, 9, 151643, 151643], [1, 2, 3, 4, 5]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["reward_positions"].tolist() == [[0, 1, 2], [1, 2, 3]]
    assert batch["video_grid_thw"].tolist() == [[2, 2, 4], [2, 2, 2]]
    assert batch["pixel_values_videos"].shape == (24, 1176)
    assert batch["pixel_values_videos"][:16].eq(1.0).all() and batch["pixel_values_videos"][16:].eq(2.0).all()
    for key in ("input_ids", "attention_mask", "reward_positions", "video_grid_thw"):
        assert batch[key].dtype == torch.long


def test_builder_refuses_a_tokenizer_without_reward_tokens():
    from videoalign.reward.model import tiny_random_tokenizer

    with pytest.raises(ValueError, match="VQ_reward"):
        RewardInputBuilder(tiny_random_tokenizer())


# ---- causal attention + right padding (docs/numerics.md, Prompt and tokens) --------------------------------------------


def test_vq_mq_hidden_states_do_not_depend_on_the_prompt(tiny):
    """Two prompts of different lengths, same video, one batch (so the shorter row is padded): the hidden
    states at <|VQ_reward|> and <|MQ_reward|> are bit-identical (float32), the ones at <|TA_reward|>
    are not."""
    model, tokenizer, _ = tiny
    frames = torch.randint(
        0, 256, (2, 3, 48, 80), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    pixels = preprocess_frames(frames)
    builder = RewardInputBuilder(tokenizer)
    prompts = ["a cat", "a long and winding road through autumn hills, leaves falling, slow dolly shot"]
    tokens = [builder.tokenize(p, pixels.num_tokens) for p in prompts]
    assert len(tokens[0].input_ids) < len(tokens[1].input_ids)
    batch = builder.collate(tokens, [pixels, pixels])
    captured = []
    handle = model.model.register_forward_hook(
        lambda m, a, out: captured.append(out.last_hidden_state.clone())
    )
    try:
        with torch.inference_mode():
            scores = model.eval()(**batch)
    finally:
        handle.remove()
    (hidden,) = captured
    h = [hidden[row, tokens[row].reward_positions] for row in range(2)]  # (3, H) each
    assert tokens[0].reward_positions[:2] == tokens[1].reward_positions[:2]
    assert torch.equal(h[0][0], h[1][0])  # VQ
    assert torch.equal(h[0][1], h[1][1])  # MQ
    assert not torch.allclose(h[0][2], h[1][2], atol=1e-3)  # TA sees the prompt
    # The scores are that hidden state times one shared head row. The head's small GEMM may round rows in
    # different SIMD lanes (1 ulp seen on CPU), so they are compared to round-off, not bit for bit.
    torch.testing.assert_close(scores[0, :2], scores[1, :2], atol=1e-7, rtol=1e-6)
    assert abs(float(scores[0, 2] - scores[1, 2])) > 1e-5
