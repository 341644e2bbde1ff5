"""PNG figures written beside command outputs. The only module that imports matplotlib (Agg, no display)."""

from __future__ import annotations

from pathlib import Path


def margin_histograms(margins: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """One histogram panel per key (e.g. VQ, MQ, TA, Overall) of chosen-minus-rejected margins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(margins)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = margins[key]
        ax.hist(values, bins=min(30, max(5, len(values) // 2)) if values else 5, color="#4477aa")
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_title(f"{key} (n={len(values)})")
        ax.set_xlabel("chosen - rejected")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def accuracy_curves(curves: dict[str, tuple[list[float], list[float]]], path: str | Path, title: str = "") -> Path:
    """Accuracy with ties against the tie threshold, one line per dimension: curves[dim] = (thresholds, acc)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for dim, (thresholds, accuracy) in curves.items():
        ax.step(thresholds, [100 * a for a in accuracy], where="post", label=dim)
    ax.set_xlabel("tie threshold |s_A - s_B|")
    ax.set_ylabel("accuracy with ties (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def accuracy_by_noise(accuracy: dict[str, dict[str, dict]], path: str | Path, title: str = "") -> Path:
    """Accuracy against the noise level t, one colour per dimension: accuracy[dim][bin label "lo-hi"] =
    {"accuracy_without_ties", "accuracy_with_ties", ...} (values in [0, 1] or None). Solid: without ties; dashed: with."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (dim, bins) in enumerate(accuracy.items()):
        centres = [sum(float(x) for x in label.split("-")) / 2 for label in bins]
        colour = f"C{i}"
        for key, style, name in (("accuracy_without_ties", "-o", "without ties"), ("accuracy_with_ties", "--s", "with ties")):
            values = [100 * v[key] if v.get(key) is not None else float("nan") for v in bins.values()]
            ax.plot(centres, values, style, color=colour, label=f"{dim} {name}", markersize=4)
    ax.axhline(50.0, color="grey", linewidth=0.8)
    ax.set_xlabel("noise level t (bin centre; t = 1 is pure noise)")
    ax.set_ylabel("pairwise accuracy (%)")
    ax.set_xlim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    """Write a figure as PNG under a temp name, then rename it into place; close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def frame_strip(rows: dict, path: str | Path, n_frames: int = 4, title: str = "") -> Path:
    """A grid of frames: one row per labelled clip (uint8 (F, H, W, 3) arrays, e.g. guided above unguided), n_frames
    evenly spaced frames each (the same indices in every row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = list(rows)
    total = min(len(rows[label]) for label in labels)
    picks = sorted({round(float(i)) for i in np.linspace(0, total - 1, min(n_frames, total))})
    height, width = rows[labels[0]].shape[1:3]
    cell = 1.6  # inches per frame along its longer side
    aspect = width / max(height, width), height / max(height, width)
    fig, axes = plt.subplots(len(labels), len(picks), squeeze=False,
                             figsize=(cell * len(picks) * aspect[0] + 0.6,
                                      cell * len(labels) * aspect[1] + (0.5 if title else 0.2)))
    for r, label in enumerate(labels):
        for c, index in enumerate(picks):
            ax = axes[r][c]
            ax.imshow(rows[label][index])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {index}", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def win_tie_loss_bars(figures: dict[str, dict], path: str | Path, title: str = "") -> Path:
    """One horizontal bar per dimension, stacked win | tie | loss (percent of n), with the win rate
    (wins + ties / 2) / n written beside it: figures[dim] = {"win", "tie", "loss", "win_rate", "n"} (fractions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = list(figures)[::-1]  # the first dimension on top
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(dims) + 1.4))
    left = [0.0] * len(dims)
    for key, colour in (("win", "#228833"), ("tie", "#bbbbbb"), ("loss", "#ee6677")):
        widths = [100 * figures[d][key] for d in dims]
        ax.barh(dims, widths, left=left, color=colour, label=key)
        left = [a + w for a, w in zip(left, widths)]
    for y, d in enumerate(dims):
        ax.text(101, y, f"{100 * figures[d]['win_rate']:.1f}  (n={figures[d]['n']})", va="center", fontsize=8)
    ax.axvline(50.0, color="black", linewidth=0.8)
    ax.set_xlim(0, 125)
    ax.set_xlabel("% of videos (win rate = win + tie / 2, right)")
    ax.legend(loc="lower right", fontsize=7, ncol=3)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
