"""``lerobot-pirl-plot <run dir>``: the training curves of any πRL run in one PNG.

Reads the learner's ``<run dir>/metrics.jsonl`` (update and evaluation records) and draws, against env
steps: success (training episodes and held-out evaluations), episode return, ``approx_kl``,
``clip_fraction``, ``explained_variance`` and the exploration noise std; a panel whose metric the run never
logged says so instead of staying empty. Written next to the metrics as ``training_curves.png`` unless
``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# (panel title, [(metric key, record kind, line label)])
PANELS = (
    (
        "success",
        [("episode_success", "update", "training episodes"), ("eval_success_rate", "eval", "held-out eval")],
    ),
    ("episode return", [("episode_return", "update", "training episodes")]),
    ("approx_kl", [("approx_kl", "update", "approx_kl")]),
    ("clip fraction", [("clip_fraction", "update", "clip_fraction")]),
    ("explained variance", [("explained_variance", "update", "explained_variance")]),
    ("noise std", [("noise_std", "update", "noise_std")]),
)


def read_metrics(metrics: Path) -> list[dict]:
    """The records of a learner's ``metrics.jsonl`` (none if it does not exist yet; a line being written is
    skipped)."""
    if not metrics.is_file():
        return []
    records = []
    for line in metrics.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_records(run_dir: Path) -> list[dict]:
    """A run folder's records; a folder without ``metrics.jsonl`` is an error naming the file."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"run dir: {path} does not exist (expected a πRL learner's output_dir)")
    return read_metrics(path)


def series(records: list[dict], key: str, kind: str) -> tuple[list[float], list[float]]:
    """(env steps, values) of ``key`` over the records of ``kind`` that carry a number for it."""
    rows = [r for r in records if r.get("kind") == kind and isinstance(r.get(key), int | float)]
    return [r["env_steps"] for r in rows], [float(r[key]) for r in rows]


def plot_run(run_dir: Path, out: Path | None = None) -> Path:
    """Draw the run's curves; returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_records(run_dir)
    out = out or run_dir / "training_curves.png"
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (title, lines) in zip(axes.flat, PANELS, strict=True):
        drawn = False
        for key, kind, label in lines:
            x, y = series(records, key, kind)
            if x:
                ax.plot(x, y, marker="o" if kind == "eval" else None, markersize=4, label=label)
                drawn = True
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged by this run", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
    updates = sum(r.get("kind") == "update" for r in records)
    fig.suptitle(f"{run_dir}: {updates} updates")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    from lerobot_pirl.cli import run_cli

    p = argparse.ArgumentParser(description="Plot a πRL run's training curves (metrics.jsonl) into one PNG")
    p.add_argument("run_dir", help="the learner's output_dir (holds metrics.jsonl)")
    p.add_argument("--out", default=None, help="PNG path (default <run_dir>/training_curves.png)")
    args = p.parse_args(argv)

    def startup():
        read_records(Path(args.run_dir))  # a wrong folder is a one-line error
        return lambda: print(plot_run(Path(args.run_dir), Path(args.out) if args.out else None))

    run_cli(startup)


if __name__ == "__main__":
    main()
