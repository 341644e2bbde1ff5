"""The scoring engine behind score, relabel, bench reward and bench winrate: VideoReward scores of many videos into
one JSONL file, sharded over processes and resumable (data.ResumableOutput; docs/formats.md, Score records).

Each rank scores every world-th video not yet scored and appends its records after every batch; at the end rank 0
merges them, with what the file already held, in input order. A rerun skips every video that already has scores
for the same prompt (failed ones are retried), so a killed job resumes where it stopped. A file written with other
scoring settings (ScoringConfig's SCORE_SETTINGS) is refused, naming the setting.
"""

from __future__ import annotations

from pathlib import Path

from videoalign.config import config_to_dict
from videoalign.reward.settings import SCORE_SETTINGS, ScoringConfig


def load_model(cfg: ScoringConfig, device: str | None = None):
    from videoalign.reward.videoreward import VideoReward

    return VideoReward.from_pretrained(cfg.model, base_model=cfg.base_model, checkpoint_step=cfg.checkpoint_step,
                                       dtype=cfg.dtype, device=device or cfg.device)


def score_output(output: str | Path):
    """The ResumableOutput of a score file: records keyed by their video's absolute path, settings beside it in
    `<output>.config.yaml`."""
    from videoalign.data import video_key
    from videoalign.resumable import ResumableOutput

    output = Path(output)
    return ResumableOutput(output, lambda r: video_key(r["path"]) if r.get("path") else None,
                           output.with_name(output.name + ".config.yaml"))


def score_into(cfg: ScoringConfig, accelerator, items: list, output: str | Path, source: str) -> list[dict]:
    """Score `items` (data.ScoreItem) into the JSONL `output`, sharded over the accelerator's processes and
    resumable. Returns the records of all items in input order on the main process (an empty list elsewhere)."""
    from videoalign.distributed import shard
    from videoalign.log import console, progress

    rank, world = accelerator.process_index, accelerator.num_processes
    out = score_output(output)
    out.check_settings({k: getattr(cfg, k) for k in SCORE_SETTINGS}, "scores")
    done = out.done()
    pending = [it for it in items if not _is_done(it, done)]
    mine = shard(pending, rank, world)
    accelerator.wait_for_everyone()  # every rank has read the old state before rank 0 rewrites anything
    if accelerator.is_main_process:
        out.save_settings(config_to_dict(cfg))
        console.print(f"{len(items)} videos in {source}: {len(items) - len(pending)} already scored, {len(pending)} "
                      f"to score on {world} process(es)", highlight=False)
    if mine:
        rm = load_model(cfg, device=str(accelerator.device))
        bad = [it for it in mine if it.error]
        if bad:
            out.append(rank, [{"video": it.video, "path": it.key, "prompt": it.prompt, "error": it.error}
                              for it in bad])
        good = [it for it in mine if not it.error]
        with progress(len(mine), "scoring", enabled=accelerator.is_main_process) as bar:
            if bad:
                bar.advance(len(bad))
            for chunk in rm.iter_scores([(it, it.prompt) for it in good], batch_size=cfg.batch_size,
                                        num_workers=cfg.num_workers, raw=cfg.raw, fps=cfg.fps,
                                        num_frames=cfg.num_frames, max_pixels=cfg.max_pixels):
                out.append(rank, [record for _, record in chunk])
                bar.advance(len(chunk))
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return []
    return out.merge([it.key for it in items])


def _is_done(item, done: dict[str, dict]) -> bool:
    """Scored before, without error, for the same prompt (TA depends on it)."""
    record = done.get(item.key)
    return record is not None and "error" not in record and record.get("prompt") == item.prompt
