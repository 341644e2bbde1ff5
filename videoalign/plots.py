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


def _save(fig, path: str | Path) -> Path:
    """Write a figure as PNG under a temp name, then rename it into place; close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
