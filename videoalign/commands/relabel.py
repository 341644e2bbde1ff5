"""`videoalign relabel`: turn generated videos into preference pairs labelled by VideoReward.

Input (told apart by its columns): a generation manifest (CSV or JSONL: prompt, video, optional group and
model), whose videos are paired within each group (or each prompt when there is no group column), or a
reference pair CSV (path_A, path_B, prompt, ...) that is relabelled with the model as ground truth.

Stages:
1. Every distinct video is scored once into a score cache (`--scores`, default `<output>.scores.jsonl`), in
   the format of `videoalign score --output`, so either command's file can seed the other. Scoring is
   sharded over processes and resumable (reward/scoring.py).
2. Rank 0 pairs and labels the scored videos (preferences.py), drops pairs under `--min-margin`, and writes
   the pairs JSONL atomically (`-` writes to stdout), a summary table and a margin histogram PNG. A pair CSV gives
   one pair per row, repeated rows included (labels.py).
A rerun with the same output reuses every cached score and rewrites the same pairs: nothing is lost or
duplicated. Exit code 1 when some videos failed; they appear in the output as `{"video", "error"}` lines.

1 process:  videoalign relabel manifest.csv --output pairs.jsonl --weights 1:1:1
N GPUs:     accelerate launch --num_processes N -m videoalign relabel manifest.csv --output pairs.jsonl
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from videoalign.reward.settings import ScoringConfig


@dataclass
class RelabelConfig(ScoringConfig):
    #: manifest (CSV/JSONL: prompt, video[, group, model]) or pair CSV (path_A, path_B, prompt); - for stdin
    input: str | None = None
    #: pairs JSONL to write; - for stdout
    output: str | None = None
    #: score cache (`videoalign score` format); default <output>.scores.jsonl, or relabel.scores.jsonl for -
    scores: str | None = None
    #: manifest pairing within a group: every pair, or the best against the worst by weighted reward
    pairing: Literal["all", "best-worst"] = "all"
    #: per-dimension weights VQ:MQ:TA of the reward r = sum_d w_d s_d / sum_d w_d (orientation, margin, `reward` label)
    weights: str = "1:1:1"
    #: a dimension (or the reward margin) within this absolute score difference is a tie
    tie_threshold: float = 0.0
    #: drop pairs whose weighted margin is below this from the output (near-ties)
    min_margin: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if not self.input:
            raise ValueError("relabel needs an INPUT manifest or pair CSV (or - for stdin)")
        if not self.output:
            raise ValueError("relabel needs --output PAIRS.jsonl (or - for stdout)")
        if self.tie_threshold < 0 or self.min_margin < 0:
            raise ValueError("tie_threshold and min_margin must be >= 0")
        from videoalign.preferences import parse_weights

        if "=" not in self.weights:  # positional weights: check the numbers now, their count after loading
            parse_weights(self.weights, [str(i) for i in range(self.weights.count(":") + 1)])

    def cache_path(self) -> Path:
        if self.scores:
            return Path(self.scores)
        return Path("relabel.scores.jsonl") if self.output == "-" else Path(self.output + ".scores.jsonl")


def collect_items(source):
    """Distinct ScoreItems of a RelabelInput plus its row errors, in first-seen order."""
    from videoalign.data import ScoreItem, video_key

    items: dict[str, ScoreItem] = {}
    errors: list[dict] = []
    if source.kind == "pairs":
        errors = [{"error": problem} for problem in source.pairs.problems]
        for pair in source.pairs.pairs:
            for video, path in ((pair.video_a, pair.path_a), (pair.video_b, pair.path_b)):
                key = video_key(path)
                items.setdefault(key, ScoreItem(key, video, Path(key), pair.prompt))
        return list(items.values()), errors
    for row in source.rows:
        where = f"{source.name} row {row['_row']}"
        if "_error" in row:
            errors.append({"row": row["_row"], "error": row["_error"]})
            continue
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            errors.append({"row": row["_row"], "error": f"{where}: empty prompt; fill in the prompt text"})
            continue
        video = str(row.get("video") or "").strip()
        if not video:
            errors.append({"row": row["_row"], "error": f"{where}: empty video; fill in a video path"})
            continue
        key = video_key(source.root / video)
        items.setdefault(key, ScoreItem(key, video, Path(key), prompt))
    return list(items.values()), errors


def build_pairs(source, scored: dict[str, dict], cfg: RelabelConfig, dims: list[str]):
    """Pairs (after --min-margin), dropped count, and ungroupable count from the scored records."""
    from videoalign.data import video_key
    from videoalign.preferences import make_pair, pair_group, parse_weights

    weights = parse_weights(cfg.weights, dims)
    ok = {k: r for k, r in scored.items() if "error" not in r}
    pairs: list[dict] = []
    singles = 0
    if source.kind == "pairs":
        for pair in source.pairs.pairs:  # one pair per row: a repeated row is a repeated pair (labels.py)
            a, b = ok.get(video_key(pair.path_a)), ok.get(video_key(pair.path_b))
            if a is not None and b is not None:
                pairs.append(make_pair(a, b, weights, cfg.tie_threshold, pair.group) | {"row": pair.line})
    else:
        groups: dict[str, list[dict]] = {}
        seen: set[tuple[str, str]] = set()
        for row in source.rows:
            record = ok.get(video_key(source.root / str(row.get("video") or "").strip())) if "_error" not in row else None
            if record is None:
                continue
            group = str(row.get("group") or "").strip() or row.get("prompt")
            if (group, record["path"]) not in seen:  # a video listed twice in a group counts once
                seen.add((group, record["path"]))
                groups.setdefault(group, []).append(record)
        for group, members in groups.items():
            if len(members) < 2:
                singles += 1
            pairs.extend(pair_group(members, weights, cfg.pairing, cfg.tie_threshold, group))
    kept = [p for p in pairs if p["margin"] >= cfg.min_margin]
    return kept, len(pairs) - len(kept), singles


def run(cfg: RelabelConfig) -> int:
    from videoalign.data import json_line, read_relabel_input, write_jsonl_atomic
    from videoalign.distributed import broadcast_from_main, make_accelerator
    from videoalign.log import console, stdout
    from videoalign.reward.scoring import score_into
    accelerator = make_accelerator(cfg.device)
    source = read_relabel_input(cfg.input)
    items, row_errors = collect_items(source)
    cache = cfg.cache_path()
    records = score_into(cfg, accelerator, items, cache, source.name)
    failed = 0
    if accelerator.is_main_process:
        scored = {r["path"]: r for r in records}
        first = next((r for r in records if "error" not in r), None)
        dims = [k for k in first["raw"] if k != "Overall"] if first else ["VQ", "MQ", "TA"]
        pairs, dropped, singles = build_pairs(source, scored, cfg, dims)
        errors = row_errors + [{"video": r["video"], "prompt": r["prompt"], "error": r["error"]}
                               for r in records if "error" in r]
        failed = len(errors)
        lines = pairs + errors
        if cfg.output == "-":
            for line in lines:
                stdout.print(json_line(line).rstrip("\n"), markup=False, highlight=False, soft_wrap=True)
        else:
            write_jsonl_atomic(cfg.output, lines)
        summarize(pairs, dropped, singles, errors, dims, cfg)
        if cfg.output != "-" and pairs:
            from videoalign.plots import margin_histograms

            margins = {d: [p["scores"]["chosen"][d] - p["scores"]["rejected"][d] for p in pairs] for d in dims}
            margins["reward"] = [p["margin"] for p in pairs]
            png = margin_histograms(margins, cfg.output + ".margins.png", title=f"{len(pairs)} pairs, {cfg.weights}")
            console.print(f"wrote {len(pairs)} pairs to {cfg.output} and {png}", highlight=False)
    failed = broadcast_from_main(accelerator, failed)
    return 1 if failed else 0


def summarize(pairs, dropped, singles, errors, dims, cfg) -> None:
    from rich.table import Table

    from videoalign.labels import REWARD
    from videoalign.log import console

    table = Table(title=f"relabel: {len(pairs)} pairs (weights {cfg.weights}, tie <= {cfg.tie_threshold})")
    table.add_column("dimension")
    for name in ("chosen", "rejected", "tie", "mean margin"):
        table.add_column(name, justify="right")
    for dim in [*dims, REWARD]:
        counts = {k: sum(1 for p in pairs if p["labels"][dim] == k) for k in ("chosen", "rejected", "tie")}
        if dim == REWARD:
            mean = sum(p["margin"] for p in pairs) / len(pairs) if pairs else 0.0
        else:
            diffs = [p["scores"]["chosen"][dim] - p["scores"]["rejected"][dim] for p in pairs]
            mean = sum(diffs) / len(diffs) if diffs else 0.0
        table.add_row(dim, str(counts["chosen"]), str(counts["rejected"]), str(counts["tie"]), f"{mean:.4f}")
    console.print(table)
    console.print(f"dropped under --min-margin {cfg.min_margin}: {dropped}; groups with one video: {singles}; "
                  f"failed: {len(errors)}", highlight=False)
    for e in errors:
        console.print(f"[red]failed:[/] {e['error']}", highlight=False)
