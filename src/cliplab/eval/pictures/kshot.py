"""Zero-shot vs k-shot (the CLIP paper's Figure 6): linear-probe top-1 at k shots per class beside the
zero-shot line, and how many shots the probe needs to match zero-shot."""

from pathlib import Path

from matplotlib.figure import Figure

from cliplab.eval.pictures.data import KShotCurve, shots_matching


def matching_sentence(curve: KShotCurve, zero_shot: float | None) -> str:
    if zero_shot is None:
        return "no zero-shot entry on the same classes"
    k = shots_matching(curve, zero_shot)
    if k is None:
        return f"zero-shot ({zero_shot:.3f}) beats every probe up to {curve.shots[-1]} shots"
    if k == curve.shots[0] and curve.mean[0] >= zero_shot:
        return f"a {curve.shots[0]}-shot probe already matches zero-shot ({zero_shot:.3f})"
    return f"zero-shot ({zero_shot:.3f}) matches a {k:.1f}-shot probe"


def kshot_figure(curve: KShotCurve, zero_shot: float | None, title: str) -> Figure:
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    ax.errorbar(curve.shots, curve.mean, yerr=curve.std, marker="o", capsize=3, color="C0",
                label="linear probe, k shots per class (mean, std over seeds)")  # fmt: skip
    if zero_shot is not None:
        ax.axhline(zero_shot, ls="--", color="C3", label=f"zero-shot {zero_shot:.3f}")
    ax.axhline(1 / len(curve.classnames), ls=":", color="0.4", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks(curve.shots, [str(k) for k in curve.shots])
    ax.set_xlabel("training images per class (k)")
    ax.set_ylabel("top-1")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{title}\n{matching_sentence(curve, zero_shot)}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def draw_kshot(curve: KShotCurve, zero_shot: float | None, path: Path, title: str) -> Path:
    kshot_figure(curve, zero_shot, title).savefig(path, dpi=120)
    return Path(path)
