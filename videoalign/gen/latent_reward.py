"""The noisy-latent reward model r_phi(x_t, t, text) of Flow-NRG (docs/numerics.md, Flow-NRG), and its saved format.

r_phi reads a noisy latent directly, so its gradient with respect to x_t can steer sampling (guidance.py). It is
built from the first k blocks of the pretrained video transformer (Wan: `patch_embedding`, `rope`,
`condition_embedder`, `blocks[:k]`, deep copies) and runs them exactly as `WanTransformer3DModel.forward` does up
to its block loop (timestep input t * 1000, as `generator.Family.timestep_scale`). On top:

    h      = blocks[:k](patch_embedding(x_t), text, t)        # (B, N, inner_dim) token states
    h      = layer_norm(h) in float32, no affine               # as the transformer's own `norm_out`
    pooled = mean_N(h)  or  sum_N softmax_N(w . h) h           # `pooling`: mean | attention, (B, inner_dim)
    r_d    = head_d(pooled)                                    # one Linear(inner_dim, 1) or small MLP per dim d

Every head's last layer (and the attention-pooling score) starts at zero, so a new model returns rewards exactly
0 for every input, and attention pooling starts as mean pooling. `reward_gradient` gives d/dx_t of the weighted
reward sum_d w_d r_d, the quantity Flow-NRG follows.

Saved format (`save_latent_reward` / `load_latent_reward`): a folder with
    model.safetensors   the state dict (patch_embedding.*, condition_embedder.*, blocks.<i>.*, pool.*, heads.<dim>.*)
                        plus the rope tables (rope.freqs_cos, rope.freqs_sin: buffers outside the state dict), in
                        the dtypes it was saved with (Wan keeps its norms and time embedder in float32)
    config.json         {"format": "videoalign.latent_reward", "version", "reward": LatentRewardConfig,
                         "transformer": the WanTransformer3DModel config with num_layers = k (enough to rebuild the
                         k-block architecture without the full transformer), "source_num_layers",
                         "source_model", "timestep_scale", and informational shapes}
Loading is strict: a missing, unexpected or reshaped tensor raises with its name.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from videoalign.gen.families import WAN
from videoalign.gen.settings import LatentRewardConfig

LATENT_REWARD_FORMAT = "videoalign.latent_reward"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

#: WanRotaryPosEmbed's tables: non-persistent buffers, which the saved file holds as rope.<name>
_ROPE_TABLES = ("freqs_cos", "freqs_sin")


class AttentionPool(nn.Module):
    """sum_N softmax_N(w . h_n + b) h_n over the tokens of (B, N, D); w = 0 at init, so it starts as the mean."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        weights = self.score(h.to(self.score.weight.dtype)).float().softmax(dim=1)  # (B, N, 1)
        return (weights * h.float()).sum(dim=1)  # (B, D)


def _head(dim: int, hidden: int | None) -> nn.Module:
    """Linear(dim, 1), or Linear(dim, hidden) -> SiLU -> Linear(hidden, 1); the last layer is zero (reward 0)."""
    last = nn.Linear(dim if hidden is None else hidden, 1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return last if hidden is None else nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), last)


class LatentRewardModel(nn.Module):
    """r_phi(x_t, t, text) -> (B, len(dims)) float32 rewards. Build it with `build_latent_reward` or
    `load_latent_reward`; the constructor takes the (already copied) transformer parts."""

    def __init__(self, patch_embedding: nn.Conv3d, rope: nn.Module, condition_embedder: nn.Module,
                 blocks: nn.ModuleList, cfg: LatentRewardConfig, source_config: dict,
                 timestep_scale: float = WAN.timestep_scale, source_model: str | None = None, head_seed: int = 0):
        super().__init__()
        if len(blocks) != cfg.k:
            raise ValueError(f"k: expected {cfg.k} blocks, got {len(blocks)}")
        self.cfg = cfg
        #: the source transformer's config (public keys, its own num_layers): what compatibility checks compare
        self.source_config = dict(source_config)
        #: where the source transformer was loaded from (its config's _name_or_path), when known
        self.source_model = source_model
        self.timestep_scale = float(timestep_scale)
        self.patch_embedding = patch_embedding
        self.rope = rope
        self.condition_embedder = condition_embedder
        self.blocks = blocks
        self.latent_channels = int(patch_embedding.in_channels)
        self.inner_dim = int(patch_embedding.out_channels)
        self.patch_size = tuple(int(p) for p in self.source_config["patch_size"])
        self.text_dim = int(self.source_config["text_dim"])
        self.rope_max_seq_len = int(self.source_config["rope_max_seq_len"])
        self.norm_eps = float(self.source_config.get("eps", 1e-6))
        self.gradient_checkpointing = False
        # the MLP heads' first layers are the only random new weights: seed them without touching the global RNG
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(head_seed)
            self.pool = AttentionPool(self.inner_dim) if cfg.pooling == "attention" else None
            self.heads = nn.ModuleDict({d: _head(self.inner_dim, cfg.head_hidden) for d in cfg.dims})
        for module in (self.patch_embedding, self.condition_embedder, self.blocks):
            module.requires_grad_(not cfg.freeze_backbone)
        for module in (self.pool, self.heads):
            if module is not None:
                module.requires_grad_(True)

    @property
    def dims(self) -> list[str]:
        return list(self.cfg.dims)

    def check_compatible(self, latent_shape, text_dim: int) -> None:
        """Raise ValueError unless latents of shape (C, F', H', W') (or (B, C, F', H', W')) and text states of
        width text_dim fit this model: C, text width, divisibility by the patch and the rope's table length."""
        shape = tuple(int(s) for s in latent_shape)
        if len(shape) == 5:
            shape = shape[1:]
        if len(shape) != 4:
            raise ValueError(f"latent shape: expected (C, F', H', W') or (B, C, F', H', W'), got {shape}")
        if shape[0] != self.latent_channels:
            raise ValueError(f"latent channels: expected {self.latent_channels}, got {shape[0]} (latent shape "
                             f"{shape}); the latent reward model was built from another video model")
        if int(text_dim) != self.text_dim:
            raise ValueError(f"text width: expected {self.text_dim}, got {text_dim}; encode prompts with the text "
                             "encoder of the video model the latent reward model was built from")
        for name, size, patch in zip(("frames", "height", "width"), shape[1:], self.patch_size):
            if size % patch:
                raise ValueError(f"latent {name}: expected a multiple of the patch size {patch}, got {size} (latent "
                                 f"shape {shape})")
            if size // patch > self.rope_max_seq_len:
                raise ValueError(f"latent {name}: expected at most {self.rope_max_seq_len * patch} (the rope table "
                                 f"holds {self.rope_max_seq_len} positions), got {size}")

    def features(self, x_t: torch.Tensor, t: torch.Tensor | float, text: torch.Tensor) -> torch.Tensor:
        """(B, N, inner_dim) token states after the k blocks: WanTransformer3DModel.forward up to and including
        its block loop, with the same casts as generator.Generator.velocity.

        x_t (B, C, F', H', W'), t (B,) in [0, 1] (or a float for all rows), text (B, L, text_dim) zero-padded.
        """
        if x_t.dim() != 5:
            raise ValueError(f"x_t: expected (B, C, F', H', W'), got shape {tuple(x_t.shape)}")
        self.check_compatible(x_t.shape, text.shape[-1])
        batch = x_t.shape[0]
        t = torch.as_tensor(t, dtype=torch.float32, device=x_t.device)
        t = t.expand(batch) if t.dim() == 0 else t
        if t.shape != (batch,):
            raise ValueError(f"t: expected shape ({batch},) or a scalar, got {tuple(t.shape)}")
        timestep = t * self.timestep_scale  # (B,), as Generator.velocity
        x = x_t.to(self.patch_embedding.weight.dtype)
        text = text.to(device=x.device, dtype=self.condition_embedder.text_embedder.linear_1.weight.dtype)

        # 1. rotary embedding (from the shape only) and patch embedding: (B, C, F, H, W) -> (B, N, inner_dim)
        rotary_emb = self.rope(x)
        h = self.patch_embedding(x).flatten(2).transpose(1, 2).contiguous()
        # 2. timestep and text conditioning: timestep_proj (B, 6 * inner_dim) -> (B, 6, inner_dim)
        _, timestep_proj, text_states, _ = self.condition_embedder(timestep, text, None, timestep_seq_len=None)
        timestep_proj = timestep_proj.unflatten(1, (6, -1))
        # 3. the first k blocks
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                h = torch.utils.checkpoint.checkpoint(block, h, text_states, timestep_proj, rotary_emb,
                                                      use_reentrant=False)
            else:
                h = block(h, text_states, timestep_proj, rotary_emb)
        return h

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | float, text: torch.Tensor) -> torch.Tensor:
        """(B, len(dims)) float32 rewards, columns in `dims` order."""
        h = F.layer_norm(self.features(x_t, t, text).float(), (self.inner_dim,), eps=self.norm_eps)  # (B, N, D)
        pooled = h.mean(dim=1) if self.pool is None else self.pool(h)  # (B, D) float32
        return torch.cat([head(pooled.to(_first_dtype(head))) for head in self.heads.values()], dim=1).float()


def _first_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _public_config(transformer: nn.Module) -> dict:
    """The transformer's config without diffusers' private keys, tuples as lists (as JSON stores them)."""
    config = getattr(transformer, "config", None)
    if config is None or "patch_size" not in config:
        raise ValueError(f"expected a diffusers WanTransformer3DModel, got {type(transformer).__name__}")
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config).items() if not k.startswith("_")}


def build_latent_reward(transformer: nn.Module, cfg: LatentRewardConfig, head_seed: int = 0) -> LatentRewardModel:
    """A latent reward model from deep copies of a WanTransformer3DModel's `patch_embedding`, `rope`,
    `condition_embedder` and `blocks[:cfg.k]`, in the transformer's dtypes, plus new zero-output heads (float32).
    The transformer is not changed. `head_seed` seeds the MLP heads' first layers (only when head_hidden)."""
    source = _public_config(transformer)
    num_blocks = len(transformer.blocks)
    if cfg.k > num_blocks:
        raise ValueError(f"k = {cfg.k} is larger than the transformer's {num_blocks} blocks; use k <= {num_blocks}")
    if source.get("image_dim") is not None or source.get("added_kv_proj_dim") is not None:
        raise ValueError("image-conditioned Wan transformers (image_dim / added_kv_proj_dim set, I2V) are not "
                         "supported; build the latent reward model from a text-to-video transformer")
    lora = [n for n, _ in transformer.named_parameters() if "lora_" in n]
    if lora:
        raise ValueError(f"the transformer carries LoRA tensors ({lora[0]}, ...); build the latent reward model from "
                         "the base transformer, or fuse and unload the LoRA first")
    blocks = nn.ModuleList(copy.deepcopy(list(transformer.blocks[:cfg.k])))
    model = LatentRewardModel(copy.deepcopy(transformer.patch_embedding), copy.deepcopy(transformer.rope),
                              copy.deepcopy(transformer.condition_embedder), blocks, cfg, source,
                              source_model=transformer.config.get("_name_or_path"), head_seed=head_seed)
    device = next(transformer.parameters()).device
    return model.to(device).eval()


# -- gradient -------------------------------------------------------------------------------------------------

def weight_vector(model: LatentRewardModel, weights) -> torch.Tensor:
    """(D,) float32 weights in model.dims order from a sequence of D numbers, a (D,) tensor or {dim: w} (missing
    dims weigh 0)."""
    dims = model.dims
    if isinstance(weights, dict):
        unknown = sorted(set(weights) - set(dims))
        if unknown:
            raise ValueError(f"weights name unknown dimensions {', '.join(unknown)}; the model has "
                             f"{', '.join(dims)}")
        values = [float(weights.get(d, 0.0)) for d in dims]
    else:
        values = [float(w) for w in torch.as_tensor(weights, dtype=torch.float64).reshape(-1).tolist()]
        if len(values) != len(dims):
            raise ValueError(f"weights: expected {len(dims)} values ({':'.join(dims)}), got {len(values)}")
    if not all(torch.isfinite(torch.tensor(values)).tolist()):
        raise ValueError(f"weights must be finite numbers, got {values}")
    return torch.tensor(values, dtype=torch.float32)


def reward_gradient(model: LatentRewardModel, x_t: torch.Tensor, t: torch.Tensor | float, text: torch.Tensor,
                    weights) -> tuple[torch.Tensor, torch.Tensor]:
    """g = d/dx_t sum_b sum_d w_d r_d(x_t[b], t[b], text[b]) and the rewards.

    Each row's gradient is that row's own d(sum_d w_d r_d)/dx_t (rows do not interact). The gradient is taken
    on a detached copy of x_t under enable_grad (so it works inside no_grad sampling) with torch.autograd.grad
    with respect to that input only: no parameter's .grad is touched, whatever its requires_grad.

    Args:
        x_t: (B, C, F', H', W') noisy latents.
        t: (B,) times in [0, 1], or a float for all rows.
        text: (B, L, text_dim) zero-padded text states.
        weights: D numbers, a (D,) tensor or {dim: w} (see weight_vector).

    Returns:
        grad: like x_t (shape, dtype, device).
        rewards: (B, D) float32, detached.
    """
    w = weight_vector(model, weights).to(x_t.device)
    x = x_t.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        rewards = model(x, t, text)  # (B, D) float32
        (grad,) = torch.autograd.grad((rewards * w).sum(), x)
    return grad.to(x_t.dtype), rewards.detach()


# -- saving and loading ---------------------------------------------------------------------------------------

def save_latent_reward(model: LatentRewardModel, cfg: LatentRewardConfig | None, out_dir: str | Path,
                       clip: dict | None = None) -> Path:
    """Write model.safetensors and config.json to out_dir (created). cfg defaults to model.cfg; a cfg whose
    architecture (k, dims, pooling, head_hidden) differs from the model's is refused. `clip` (num_frames, height,
    width, fps of the training latents) is recorded for `videoalign guide`'s defaults."""
    from safetensors.torch import save_file

    cfg = model.cfg if cfg is None else cfg
    for name in ("k", "dims", "pooling", "head_hidden"):
        if getattr(cfg, name) != getattr(model.cfg, name):
            raise ValueError(f"{name}: expected the model's {getattr(model.cfg, name)!r}, got {getattr(cfg, name)!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # the rope tables are buffers outside the state dict; saved as they are, since a source loaded in bf16 may
    # hold rounded ones and the model must keep reproducing its source
    state.update({f"rope.{name}": getattr(model.rope, name).detach().contiguous().cpu() for name in _ROPE_TABLES})
    tmp = out_dir / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(out_dir / WEIGHTS_FILE)
    meta = {
        "format": LATENT_REWARD_FORMAT,
        "version": 1,
        "reward": dataclasses.asdict(cfg),
        "transformer": {**model.source_config, "num_layers": cfg.k},
        "source_num_layers": model.source_config["num_layers"],
        "source_model": model.source_model,
        "timestep_scale": model.timestep_scale,
        "latent_channels": model.latent_channels,
        "text_dim": model.text_dim,
        "patch_size": list(model.patch_size),
        "inner_dim": model.inner_dim,
        **(clip or {}),
    }
    tmp = out_dir / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out_dir / CONFIG_FILE)
    return out_dir


def load_latent_reward(path: str | Path, device: str | torch.device = "cpu") -> LatentRewardModel:
    """Rebuild the k-block architecture from config.json (no full transformer needed) and load model.safetensors
    strictly, keeping the saved dtypes. path: the folder, or its model.safetensors."""
    from diffusers import WanTransformer3DModel
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
    from safetensors.torch import load_file

    from videoalign.reward.model import load_strict

    path = Path(path)
    folder = path.parent if path.is_file() else path
    if not (folder / CONFIG_FILE).is_file():
        raise ValueError(f"{path}: not a latent reward model folder (no {CONFIG_FILE})")
    meta = json.loads((folder / CONFIG_FILE).read_text())
    if meta.get("format") != LATENT_REWARD_FORMAT:
        raise ValueError(f"{folder / CONFIG_FILE}: format expected {LATENT_REWARD_FORMAT!r}, got "
                         f"{meta.get('format')!r}")
    cfg = LatentRewardConfig(**meta["reward"])
    block_config = dict(meta["transformer"])
    if block_config.get("num_layers") != cfg.k:
        raise ValueError(f"{folder / CONFIG_FILE}: transformer.num_layers expected k = {cfg.k}, got "
                         f"{block_config.get('num_layers')}")

    # 1. the k-block architecture on the meta device (no memory, no random init), then empty CPU storage
    with torch.device("meta"):
        donor = WanTransformer3DModel(**block_config)
    source = {**block_config, "num_layers": meta["source_num_layers"]}
    model = LatentRewardModel(donor.patch_embedding, donor.rope, donor.condition_embedder, donor.blocks, cfg, source,
                              timestep_scale=meta["timestep_scale"], source_model=meta.get("source_model"))
    model.to_empty(device="cpu")
    # 2. the saved tensors, strictly, each in its saved dtype; the rope tables (outside the state dict) first
    weights_file = str(folder / WEIGHTS_FILE)
    state = load_file(weights_file)
    model.rope = WanRotaryPosEmbed(block_config["attention_head_dim"], block_config["patch_size"],
                                   block_config["rope_max_seq_len"])
    for name in _ROPE_TABLES:
        table, expected = state.pop(f"rope.{name}", None), getattr(model.rope, name)
        if table is None or table.shape != expected.shape:
            found = "missing" if table is None else f"shape {tuple(table.shape)}"
            raise ValueError(f"checkpoint {weights_file} does not fit the model: rope.{name} expected shape "
                             f"{tuple(expected.shape)}, got {found}")
        setattr(model.rope, name, table)
    for name, param in model.named_parameters():
        if name in state and state[name].dtype != param.dtype:
            param.data = param.data.to(state[name].dtype)
    load_strict(model, state, source=weights_file)
    return model.to(device).eval()
