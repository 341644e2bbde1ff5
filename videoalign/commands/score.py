"""`videoalign score`: VideoReward scores for one clip (a table or JSON) or a CSV of clips (a JSONL file).

Batch jobs shard the distinct videos across processes. Each rank appends finished records to
`<output>.parts/rank<r>.jsonl` after every batch; at the end rank 0 merges them, with what `<output>` already
held, into `<output>` in input order (a temp file renamed into place) and deletes the parts. Rerunning with
the same `--output` skips every video that already has scores (failed ones are retried), so a killed job
resumes where it stopped without losing or duplicating work.

1 process:  videoalign score --csv videos.csv --output scores.jsonl
N GPUs:     accelerate launch --num_processes N -m videoalign score --csv videos.csv --output scores.jsonl
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from videoalign.config import config_to_dict



@dataclass
class ScoreConfig:
    #: VideoReward checkpoint: hub id, local folder (reference layouts or ours) or tiny-random
    model: str = "KwaiVGI/VideoReward"
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
    #: report raw head outputs instead of normalised scores
    raw: bool = False
    #: CSV to score: columns video,prompt, or the pair-label columns path_A,path_B,prompt
    csv: str | None = None
    #: JSONL output for --csv; rerunning with the same file resumes
    output: str | None = None

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
        if self.csv and not self.output:
            raise ValueError("--csv needs --output FILE.jsonl for the scores")


def load_model(cfg: ScoreConfig, device: str | None = None):
    from videoalign.reward.videoreward import VideoReward

    return VideoReward.from_pretrained(cfg.model, base_model=cfg.base_model, checkpoint_step=cfg.checkpoint_step,
                                       dtype=cfg.dtype, device=device or cfg.device)


def run_single(cfg: ScoreConfig, video: str, prompt: str, as_json: bool) -> int:
    """Score one clip; exit code 2 with a one-line error when it cannot be scored."""
    from videoalign.log import error_line, stdout

    if not Path(video).is_file():
        error_line(f"{video}: no such video file; check the path")
        return 2
    rm = load_model(cfg)
    record = rm.score([video], [prompt], batch_size=1, num_workers=0, raw=cfg.raw, fps=cfg.fps,
                      num_frames=cfg.num_frames, max_pixels=cfg.max_pixels)[0]
    if "error" in record:
        error_line(record["error"])
        return 2
    if as_json:
        stdout.print(json.dumps(record, ensure_ascii=False), markup=False, highlight=False)
    else:
        stdout.print(score_table([record], rm.dims))
    return 0


def score_table(records: list[dict], dims: list[str]):
    from rich.table import Table

    kind = "normalised" if records and records[0].get("normalized") else "raw"
    table = Table(title=f"VideoReward scores ({kind})")
    table.add_column("video")
    for name in [*dims, "Overall"]:
        table.add_column(name, justify="right")
    table.add_column("frames", justify="right")
    for r in records:
        table.add_row(Path(r["video"]).name, *[f"{r[d]:.4f}" for d in [*dims, "Overall"]], str(r["num_frames"]))
    return table


def parts_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def load_done(output: Path) -> dict[str, dict]:
    """Records already written (final file, then the parts of an interrupted run), latest per video key."""
    from videoalign.data import read_jsonl, video_key

    done: dict[str, dict] = {}
    sources = [output, *sorted(parts_dir(output).glob("*.jsonl"))] if parts_dir(output).is_dir() else [output]
    for source in sources:
        for record in read_jsonl(source):
            if record.get("path"):
                done[video_key(record["path"])] = record
    return done


def is_done(item, done: dict[str, dict]) -> bool:
    """Scored before, without error, for the same prompt (TA depends on it)."""
    record = done.get(item.key)
    return record is not None and "error" not in record and record.get("prompt") == item.prompt


#: settings that change scores: an output written with other values cannot be resumed into
SCORE_SETTINGS = ("model", "base_model", "checkpoint_step", "dtype", "fps", "num_frames", "max_pixels", "raw")


def check_resumable(output: Path, cfg: ScoreConfig) -> None:
    """Refuse to mix scores from different models or sampling settings in one output file."""
    import yaml

    saved_path = output.with_name(output.name + ".config.yaml")
    if not saved_path.is_file() or not (output.is_file() or parts_dir(output).is_dir()):
        return
    saved = yaml.safe_load(saved_path.read_text()) or {}
    changed = [k for k in SCORE_SETTINGS if k in saved and saved[k] != getattr(cfg, k)]
    if changed:
        diffs = ", ".join(f"{k}: {saved[k]!r} -> {getattr(cfg, k)!r}" for k in changed)
        raise ValueError(f"{output} holds scores made with other settings ({diffs}); use a new --output "
                         "or the same settings to resume")


def score_into(cfg: ScoreConfig, accelerator, items: list, output: Path, source: str) -> list[dict]:
    """Score `items` into the JSONL `output`, sharded over the accelerator's processes and resumable.

    Returns the records of all items in input order on the main process (an empty list elsewhere).
    """
    from videoalign.data import append_jsonl, write_atomic, write_jsonl_atomic
    from videoalign.distributed import shard
    from videoalign.log import console, progress

    import yaml

    rank, world = accelerator.process_index, accelerator.num_processes
    check_resumable(output, cfg)
    done = load_done(output)
    pending = [it for it in items if not is_done(it, done)]
    mine = shard(pending, rank, world)
    accelerator.wait_for_everyone()  # every rank has read the old state before rank 0 rewrites anything
    if accelerator.is_main_process:
        write_atomic(output.with_name(output.name + ".config.yaml"), yaml.safe_dump(config_to_dict(cfg)))
        skipped = len(items) - len(pending)
        console.print(f"{len(items)} videos in {source}: {skipped} already scored, {len(pending)} to score "
                      f"on {world} process(es)", highlight=False)
    part = parts_dir(output) / f"rank{rank}.jsonl"
    if mine:
        rm = load_model(cfg, device=str(accelerator.device))
        bad = [it for it in mine if it.error]
        if bad:
            append_jsonl(part, [{"video": it.video, "path": it.key, "prompt": it.prompt, "error": it.error}
                                for it in bad])
        good = [it for it in mine if not it.error]
        with progress(len(mine), "scoring", enabled=accelerator.is_main_process) as bar:
            if bad:
                bar.advance(len(bad))
            for chunk in rm.iter_scores([(it, it.prompt) for it in good], batch_size=cfg.batch_size,
                                        num_workers=cfg.num_workers, raw=cfg.raw, fps=cfg.fps,
                                        num_frames=cfg.num_frames, max_pixels=cfg.max_pixels):
                append_jsonl(part, [record for _, record in chunk])
                bar.advance(len(chunk))
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return []
    merged = load_done(output)
    ordered = [merged[it.key] for it in items if it.key in merged]
    # Keep records of videos not in this input (a shared score cache), after this input's, once each.
    wanted = {it.key for it in items}
    extra = [r for k, r in merged.items() if k not in wanted]
    write_jsonl_atomic(output, ordered + extra)
    if parts_dir(output).is_dir():
        for f in parts_dir(output).glob("*.jsonl"):
            f.unlink()
        parts_dir(output).rmdir()
    return ordered


def run_batch(cfg: ScoreConfig) -> int:
    """Score a CSV into cfg.output across all processes; exit code 1 if any video failed."""
    from videoalign.data import read_score_csv
    from videoalign.distributed import broadcast_from_main, make_accelerator
    from videoalign.log import console

    accelerator = make_accelerator(cfg.device)
    items = read_score_csv(cfg.csv)  # raises DataError (exit 2) on a missing file or missing columns
    output = Path(cfg.output)
    ordered = score_into(cfg, accelerator, items, output, cfg.csv)
    failed = 0
    if accelerator.is_main_process:
        failed = sum(1 for r in ordered if "error" in r)
        for r in ordered:
            if "error" in r:
                console.print(f"[red]failed:[/] {r['error']}", highlight=False)
        console.print(f"wrote {len(ordered)} records to {output} ({failed} failed)", highlight=False)
    failed = broadcast_from_main(accelerator, failed)
    return 1 if failed else 0
