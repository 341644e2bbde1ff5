"""`videoalign score`: VideoReward scores for one clip (a table or JSON) or a CSV of clips (a JSONL file).

Batch jobs go through the scoring engine (reward/scoring.py): the distinct videos are sharded across processes,
every batch is appended as it finishes, and rerunning with the same `--output` skips every video that already has
scores (failed ones are retried), so a killed job resumes where it stopped without losing or duplicating work.
Records: docs/formats.md, Score records.

1 process:  videoalign score --csv videos.csv --output scores.jsonl
N GPUs:     accelerate launch --num_processes N -m videoalign score --csv videos.csv --output scores.jsonl
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from videoalign.reward.settings import ScoringConfig


@dataclass
class ScoreConfig(ScoringConfig):
    #: a video file to score (one clip; or use csv)
    video: str | None = None
    #: the text prompt the video was generated from
    prompt: str | None = None
    #: CSV to score: columns video,prompt, or the pair-label columns path_A,path_B,prompt
    csv: str | None = None
    #: JSONL output for csv; rerunning with the same file resumes
    output: str | None = None
    #: print one clip's scores as one JSON object instead of a table
    json: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.csv and not self.output:
            raise ValueError("--csv needs --output FILE.jsonl for the scores")
        if self.csv and (self.video or self.prompt):
            raise ValueError("pass either VIDEO PROMPT or --csv, not both")
        if not self.csv and (not self.video or self.prompt is None):
            raise ValueError('pass a video and its prompt (videoalign score clip.mp4 "a prompt") or --csv FILE '
                             "--output FILE")


def run(cfg: ScoreConfig) -> int:
    """One clip (a table or JSON on stdout) or a CSV of clips (a JSONL file)."""
    return run_batch(cfg) if cfg.csv else run_single(cfg, cfg.video, cfg.prompt, cfg.json)


def run_single(cfg: ScoreConfig, video: str, prompt: str, as_json: bool) -> int:
    """Score one clip; exit code 2 with a one-line error when it cannot be scored."""
    from videoalign.data import json_line
    from videoalign.log import error_line, stdout
    from videoalign.reward.scoring import load_model

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
        stdout.print(json_line(record).rstrip("\n"), markup=False, highlight=False)
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


def run_batch(cfg: ScoreConfig) -> int:
    """Score a CSV into cfg.output across all processes; exit code 1 if any video failed."""
    from videoalign.data import read_score_csv
    from videoalign.distributed import broadcast_from_main, make_accelerator
    from videoalign.log import console
    from videoalign.reward.scoring import score_into

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
