"""Evaluation reports: JSON (every number), a markdown table and a mIoU-per-click plot.

``write_reports(results, out_dir)`` writes ``evaluation.json``, ``evaluation.md``
and ``miou.png`` for a list of results of ``runner.evaluate`` (several models,
settings and datasets; the plot has one panel per dataset and one curve per
model/setting).
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from ..files import replacing
from . import metrics as M

__all__ = [
    "jsonable",
    "markdown_table",
    "paired_differences",
    "plot_miou",
    "report_paths",
    "run_label",
    "run_labels",
    "write_reports",
]


def jsonable(obj: Any) -> Any:
    """Copy of ``obj`` that strict JSON accepts: NaN and infinities become None, numpy becomes Python."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


def _model_name(result: dict, with_folder: bool = False) -> str:
    m = result.get("model", {})
    name = m.get("arch") or m.get("requested") or "model"
    w = m.get("weights_path")
    if w:
        stem = Path(str(w)).stem
        if with_folder:
            stem = f"{Path(str(w)).parent.name}/{stem}"
        if stem != name:
            name = f"{name} ({stem})"
    return str(name)


def _settings_tag(result: dict) -> str:
    s = result.get("settings", {})
    tags = []
    if s.get("brs", "off") != "off":
        tags.append(str(s["brs"]).replace("fbrs", "f-BRS").replace("brs", "BRS"))
    if s.get("structural_integrity"):
        tags.append("SI")
    if s.get("zoom_in"):
        tags.append("zoom")
    if s.get("click_radius"):
        tags.append(f"honour {s['click_radius']:g}px")
    if s.get("graph_cut"):
        tags.append("GC")
    return "+".join(tags)


def run_label(result: dict, with_folder: bool = False) -> str:
    """Short label of a run: model name and non-default settings, e.g. ``early [f-BRS+zoom]``."""
    tag = _settings_tag(result)
    name = _model_name(result, with_folder)
    return f"{name} [{tag}]" if tag else name


def _dataset_key(result: dict) -> tuple:
    d = result["dataset"]
    return d.get("name"), d.get("path")


def run_labels(results: Sequence[dict]) -> list[str]:
    """``run_label`` of each run, unique among the runs on the same dataset.

    Labels that collide (e.g. ``runs/a/best.safetensors`` and ``runs/b/best.safetensors``)
    get their weights' folder, and any still alike a run number.
    """
    labels = [run_label(r) for r in results]
    keys = [(label, _dataset_key(r)) for label, r in zip(labels, results)]
    labels = [run_label(r, keys.count(k) > 1) for r, k in zip(results, keys)]
    keys = [(label, _dataset_key(r)) for label, r in zip(labels, results)]
    return [f"{key[0]} #{i + 1}" if keys.count(key) > 1 else key[0] for i, key in enumerate(keys)]


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _interval(v: Any) -> str:
    if not v or any(x is None or not math.isfinite(x) for x in v):
        return "n/a"
    return f"{v[0]:.2f}-{v[1]:.2f}"


def _object_nocs(result: dict) -> dict[tuple[str, int], int] | None:
    objs = result.get("objects")
    if not objs:
        return None
    mc = int(result["metrics"]["max_clicks"])
    return {(str(o["image"]), int(o["object"])): M.noc(M.fill_curve(o["ious"], mc), 0.90, mc) for o in objs}


def paired_differences(results: Sequence[dict]) -> list[str]:
    """NoC@90 of each run against the first run on the same dataset, object by object.

    Only runs that kept their ``objects`` and scored exactly the same objects are
    paired. Per-object differences cancel what the objects share (a hard object is
    hard for both), so the interval is much tighter than either run's own.
    """
    lines = []
    first: dict[tuple, tuple[str, dict]] = {}
    for r, label in zip(results, run_labels(results)):
        nocs = _object_nocs(r)
        if nocs is None:
            continue
        d = r["dataset"]
        key = _dataset_key(r)
        if key not in first:
            first[key] = (label, nocs)
            continue
        ref_label, ref_nocs = first[key]
        if set(nocs) != set(ref_nocs):
            continue
        diff = np.array([nocs[k] - ref_nocs[k] for k in ref_nocs], dtype=np.float64)
        lo, hi = M.mean_interval(diff)
        lines.append(
            f"- {d.get('name')}: {label} minus {ref_label}: {diff.mean():+.2f} clicks "
            f"(95 % interval {lo:+.2f} to {hi:+.2f}); fewer clicks on {int((diff < 0).sum())}, "
            f"more on {int((diff > 0).sum())} of {diff.size} objects"
        )
    return lines


def markdown_table(results: Sequence[dict]) -> str:
    """One markdown row per run with the protocol's numbers, then the provenance of each run."""
    if not results:
        return "(no results)\n"
    max_clicks = max(r["metrics"]["max_clicks"] for r in results)
    ks = [k for k in ("1", "3", "5", "10", "20") if int(k) <= max_clicks]
    head = (
        ["model", "dataset", "objects", "NoC@85", "NoC@90", "NoC@90 95% interval", "NoF@90"]
        + [f"mIoU@{k}" for k in ks]
        + ["AuC", f">95%@{max_clicks}", f">99%@{max_clicks}", "s/click median", "s/click p90"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    labels = run_labels(results)
    for r, label in zip(results, labels):
        m, d = r["metrics"], r["dataset"]
        spc = m.get("seconds_per_click", {})
        row = [
            label,
            f"{d.get('name')}",
            f"{d.get('n_objects')}" + (f" of {d.get('n_objects_total')}" if d.get("sampled") else ""),
            _f(m.get("noc85"), 2),
            _f(m.get("noc90"), 2),
            _interval(m.get("noc90_interval95")),
            _f(m.get("nof90")),
        ]
        row += [_f(m.get("miou", {}).get(k)) for k in ks]
        row += [
            _f(m.get("auc")),
            _f(m.get("above95")),
            _f(m.get("above99")),
            _f(spc.get("median")),
            _f(spc.get("p90")),
        ]
        lines.append("| " + " | ".join(row) + " |")
    paired = paired_differences(results)
    if paired:
        lines += ["", "NoC@90 object by object, against the first run on the same objects:", "", *paired]
    lines.append("")
    lines.append("Runs:")
    lines.append("")
    for r, label in zip(results, labels):
        mod, d, s = r.get("model", {}), r["dataset"], r.get("settings", {})
        weights = mod.get("weights_path") or "none (random init or classical)"
        sha = mod.get("weights_sha256") or "n/a"
        sampled = (
            f"{d.get('n_objects')} of {d.get('n_objects_total')} objects sampled with seed {d.get('sample_seed')}"
            if d.get("sampled")
            else f"all {d.get('n_objects')} objects"
        )
        stop = s.get("stop_iou")
        stop_txt = (
            f"; objects stop at IoU >= {stop} and repeat their last IoU" if stop is not None else ""
        )
        zoom = [f"box x{s['zoom_expansion']:g}"] if s.get("zoom_expansion") else []
        if s.get("zoom_min_crop"):
            zoom.append(f"at least {s['zoom_min_crop']} px")
        if s.get("zoom_max_upscale"):
            zoom.append(f"up to {s['zoom_max_upscale']:g}x")
        expansion_txt = f" ({', '.join(zoom)})" if s.get("zoom_in") and zoom else ""
        lines.append(
            f"- **{label}** on `{d.get('path') or d.get('name')}` (split {d.get('split')}, "
            f"{sampled}, {d.get('n_images_used')} images): weights `{weights}` sha256 `{sha}`; "
            f"device {mod.get('device', 'n/a')}, dtype {mod.get('dtype', 'n/a')}; "
            f"BRS {s.get('brs')}, structural integrity {s.get('structural_integrity')}, "
            f"zoom-in {s.get('zoom_in')}{expansion_txt}, click honouring radius {s.get('click_radius')}, "
            f"graph cut {s.get('graph_cut')}, "
            f"max clicks {s.get('max_clicks')}{stop_txt}."
        )
    lines.append("")
    lines.append(
        "NoC@t: mean clicks to reach IoU t (max clicks if never); NoC@90 95% interval: bootstrap over "
        "the objects, how far the mean could move on another sample of such objects (compare models "
        "object by object on the same sample, not by overlapping intervals); NoF@90: objects never reaching 0.90; "
        "AuC: mean of the mIoU curve over clicks 1..max; >95%/>99%: share of objects above that IoU "
        "after the last click (n/a when objects stopped early); s/click: wall time of one predict call (image features cached)."
    )
    return "\n".join(lines) + "\n"


def plot_miou(results: Sequence[dict], path: str | os.PathLike) -> Path:
    """mIoU against clicks, one panel per dataset, one curve per run (AuC in the legend)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    datasets: list[tuple] = []
    for r in results:
        if _dataset_key(r) not in datasets:
            datasets.append(_dataset_key(r))
    names = [name for name, _ in datasets]
    labels = run_labels(results)
    n = max(1, len(datasets))
    # about 150 characters of 7-pt text fit in a 5.5-inch panel's width
    footer = [line for p in dict.fromkeys(_provenance(r, label) for r, label in zip(results, labels))
              for line in textwrap.wrap(p, width=int(27 * 5.5 * n), subsequent_indent="    ")]
    footer_h = 0.15 * len(footer) + 0.1  # inches
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.2 + footer_h), squeeze=False)
    for ax, key in zip(axes[0], datasets):
        for r, label in zip(results, labels):
            if _dataset_key(r) != key:
                continue
            curve = [float("nan") if v is None else v for v in r["metrics"]["miou_curve"]]
            xs = list(range(1, len(curve) + 1))
            auc = r["metrics"].get("auc")
            ax.plot(xs, curve, marker="o", markersize=3, label=f"{label} (AuC {_f(auc)})")
        d = next(r["dataset"] for r in results if _dataset_key(r) == key)
        name, folder = key
        where = f"{name} at {folder}" if names.count(name) > 1 else name  # two folders of one name
        count = (
            f"{d.get('n_objects')} of {d.get('n_objects_total')} objects, seed {d.get('sample_seed')}"
            if d.get("sampled")
            else f"{d.get('n_objects')} objects"
        )
        split = f", split {d.get('split')}" if d.get("split") not in (None, "all") and not name.endswith(f"/{d.get('split')}") else ""
        ax.set_title(f"{where} ({count}{split})", fontsize=10 if where != name else None)
        ax.set_xlabel("clicks")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("mean IoU")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.text(0.01, 0.05 / fig.get_figheight(), "\n".join(footer), fontsize=7, va="bottom", ha="left")
    fig.tight_layout(rect=(0, footer_h / fig.get_figheight(), 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _provenance(result: dict, label: str) -> str:
    """One line for the plot: the run's weights, their sha256 and its settings."""
    mod, s = result.get("model", {}), result.get("settings", {})
    weights = Path(mod["weights_path"]).name if mod.get("weights_path") else "no weights"
    sha = (mod.get("weights_sha256") or "")[:12]
    return (
        f"{label}: {weights}{f' sha256 {sha}' if sha else ''}, {mod.get('dtype', 'n/a')}; BRS {s.get('brs')}, "
        f"structural integrity {s.get('structural_integrity')}, zoom-in {s.get('zoom_in')}, "
        f"graph cut {s.get('graph_cut')} (evaluation.md has the rest)"
    )


def report_paths(out_dir: str | os.PathLike, stem: str = "evaluation") -> dict[str, Path]:
    """The files ``write_reports`` writes into ``out_dir``: json, markdown and plot."""
    out = Path(out_dir)
    return {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md", "plot": out / "miou.png"}


def write_reports(
    results: Sequence[dict], out_dir: str | os.PathLike, stem: str = "evaluation", incomplete: str | None = None
) -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and ``miou.png`` into ``out_dir``; returns their paths.

    All three are written to temporary files first and replace earlier ones only when all
    were written: a full disk or an interrupt leaves the earlier reports whole.
    ``incomplete``: why the evaluation stopped before its last run (recorded in both reports).
    """
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    paths = report_paths(out_dir, stem)
    with ExitStack() as stack:
        tmp = {k: stack.enter_context(replacing(p)) for k, p in paths.items()}
        doc = {"runs": list(results), **({"incomplete": incomplete} if incomplete else {})}
        tmp["json"].write_text(json.dumps(jsonable(doc), indent=1) + "\n")
        warning = f"**Incomplete:** {incomplete}\n\n" if incomplete else ""
        tmp["markdown"].write_text("# Robot-user evaluation\n\n" + warning + markdown_table(results))
        plot_miou(results, tmp["plot"])
    return paths
