"""Evaluation plots as PNG files (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no screen: render to files only
import matplotlib.pyplot as plt


def calibration_plot(bins: dict[str, list[tuple[float, float, int]]], path: Path) -> Path:
    """Draw observed rate against mean prediction per bin, one panel per model."""
    fig, axes = plt.subplots(1, len(bins), figsize=(5 * len(bins), 4.2), squeeze=False)
    for ax, (name, table) in zip(axes[0], sorted(bins.items()), strict=True):
        xs = [m for m, _, _ in table]
        ys = [r for _, r, _ in table]
        top = max([*xs, *ys, 1e-3]) * 1.1
        ax.plot([0, top], [0, top], "--", color="grey", label="perfect")
        ax.plot(xs, ys, "o-", label="model")
        ax.set(title=f"{name}: calibration (held-out slice)", xlabel="mean predicted",
               ylabel="observed rate", xlim=(0, top), ylim=(0, top))
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def lift_plot(by_segment: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """Draw, per segment, the base rate and the model's mean prediction."""
    names = sorted(by_segment)
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [by_segment[n]["base_rate"] for n in names], 0.4,
           label="observed")
    ax.bar([x + 0.2 for x in xs], [by_segment[n]["mean_prediction"] for n in names], 0.4,
           label="predicted")
    ax.set_xticks(list(xs), names, rotation=20)
    ax.set(title=title, ylabel="rate")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def ope_plot(ope: dict[str, Any], truth: float, closed_loop: dict[str, float], path: Path):
    """Draw the OPE intervals against the closed-loop truth and the other policies."""
    names = ["ips", "snips", "dr"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, name in enumerate(names):
        e = ope[name]
        ax.errorbar(i, e["value"], yerr=[[e["value"] - e["ci_low"]], [e["ci_high"] - e["value"]]],
                    fmt="o", capsize=6, label=name.upper())
    ax.axhline(truth, color="black", label="model policy, closed loop (truth)")
    for name, style in (("logging", ":"), ("random", "-."), ("oracle", "--")):
        if name in closed_loop:
            ax.axhline(closed_loop[name], linestyle=style, color="grey", alpha=0.7)
            ax.text(-0.45, closed_loop[name], name, va="bottom", ha="left", fontsize=8)
    ax.set_xticks(range(len(names)), [n.upper() for n in names])
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set(title="off-policy estimates (95 % bootstrap) vs closed loop",
           ylabel="reward per decision")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
