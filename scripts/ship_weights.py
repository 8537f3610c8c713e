"""Ship trained weights: copy them into weights/, write the manifest and one model card each.

Usage::

    python scripts/ship_weights.py --runs RUNS_DIR --eval EVAL_DIR [--eval EVAL_DIR2 ...] \
        [--default NAME] [--models two_stream hires ...]

``RUNS_DIR/<model>/best.safetensors`` (or ``last.safetensors``) is copied to
``weights/<model>.safetensors`` (replacing the old file); ``EVAL_DIR`` holds the
``evaluation.json`` written by ``napari-clickseg evaluate`` on those copies. The
card says how the weights were made (from the file's own training metadata) and
how well they do (the evaluation, with the random-walker baseline beside them).
The default model is the one with the lowest mean NoC@90 unless ``--default``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from napari_clickseg.weights import read_metadata, sha256_file

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights"
METRICS = [
    ("NoC@85", "noc85"),
    ("NoC@90", "noc90"),
    ("NoF@90", "nof90"),
    ("mIoU@1", "miou@1"),
    ("mIoU@3", "miou@3"),
    ("mIoU@5", "miou@5"),
    ("mIoU@20", "miou@20"),
    ("AuC", "auc"),
    ("s/click (median)", "spc_median"),
]


def _metric(m: dict, key: str) -> float | None:
    """Look a metric up in a result's ``metrics`` dict, tolerating the runner's naming."""
    if key == "spc_median":
        s = m.get("seconds_per_click") or {}
        return s.get("median") if isinstance(s, dict) else None
    if key.startswith("miou@"):
        k = int(key.split("@")[1])
        curve = m.get("miou_curve") or []
        if isinstance(curve, list) and len(curve) >= k:
            return curve[k - 1]
    return m.get(key)


def _fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.2f}"


def load_results(eval_dirs: list[Path]) -> list[dict]:
    results = []
    for d in eval_dirs:
        data = json.loads((d / "evaluation.json").read_text())
        results.extend(data["runs"])
    return results


def _key(r: dict) -> str:
    m = r["model"]
    if m.get("weights_path"):
        return Path(m["weights_path"]).stem
    return str(m.get("arch") or m.get("requested"))


def _dataset(r: dict) -> str:
    d = r["dataset"]
    return str(d.get("name") or d.get("root"))


def table(results: list[dict], names: list[str]) -> str:
    rows = ["| model | dataset | objects | " + " | ".join(h for h, _ in METRICS) + " |"]
    rows.append("|" + "---|" * (3 + len(METRICS)))
    for r in sorted(results, key=lambda r: (_dataset(r), _key(r))):
        if _key(r) not in names:
            continue
        d = r["dataset"]
        n = f"{d.get('n_objects')} of {d.get('n_objects_total')}"
        vals = " | ".join(_fmt(_metric(r["metrics"], k)) for _, k in METRICS)
        rows.append(f"| {_key(r)} | {_dataset(r)} | {n} | {vals} |")
    return "\n".join(rows)


def _stage(meta: dict) -> str:
    """One line on one training run, from the metadata its weights carry."""
    tr = meta.get("training", {})
    cfg = tr.get("config", {})
    init = cfg.get("init")
    init_txt = "ImageNet (EfficientNet-Lite0)" if init == "imagenet" else f"`{init}`"
    return (
        f"init {init_txt}; loss `{cfg.get('loss')}`; clicks `{cfg.get('click_schedule')}`; "
        f"crop {cfg.get('crop_size')}, batch {cfg.get('batch_size')}, lr {cfg.get('lr')}, "
        f"object scale {cfg.get('object_scale')}; {tr.get('iterations')} iterations, "
        f"{tr.get('samples_seen')} samples, {(tr.get('wall_time_s') or 0) / 60:.0f} min wall time"
    )


def _history(meta: dict) -> list[str]:
    """Training stages, oldest first, following ``init`` back through weights files."""
    stages = [meta]
    init = meta.get("training", {}).get("config", {}).get("init", "")
    while isinstance(init, str) and init.endswith(".safetensors") and Path(init).is_file():
        prev = read_metadata(init)
        stages.append(prev)
        init = prev.get("training", {}).get("config", {}).get("init", "")
    return [f"{i + 1}. {_stage(m)}" for i, m in enumerate(reversed(stages))]


def card(name: str, meta: dict, sha: str, results: list[dict], eval_cmd: str, notes: str) -> str:
    tr = meta.get("training", {})
    cfg = tr.get("config", {})
    data = ", ".join(f"{Path(d['path']).parent.name}/{Path(d['path']).name} ({d['objects']} objects)"
                     for d in tr.get("data", []))
    lines = [
        f"# `{name}` weights",
        "",
        f"- file: `weights/{name}.safetensors` (fp16 safetensors), sha256 `{sha}`",
        f"- architecture: `{meta['arch']}` with kwargs `{json.dumps(meta['kwargs'])}`",
        f"- normalisation: {json.dumps(meta.get('normalization'))}",
        "",
        "**Status: first training round** (about an hour of two shared CPU cores for all five "
        "models). These weights are far from the project's targets and, on dsb2018 and GrabCut, "
        "not yet better than the random walker; later rounds continue from them "
        "(`napari-clickseg train --init default ...`).",
        "",
        "## How they were made",
        "",
        f"Trained with `napari-clickseg train` ({notes}) on {data}; each folder sampled equally "
        f"often; model selection on {', '.join(cfg.get('val_dirs', []))}. Stages:",
        "",
        *_history(meta),
        "",
        f"Hardware: {json.dumps(tr.get('hardware', {}))}, five runs (stage 1) or three (stage 2) sharing the 2 cores.",
        "",
        "Selection scores (48 val objects on crops, 5 clicks; not PROTOCOL numbers): "
        + ", ".join(f"{k} {v:.3f}" for k, v in meta.get("metrics", {}).items()
                    if isinstance(v, float)),
        "",
        "## How well (PROTOCOL.md robot user, up to 20 clicks, no BRS, no structural integrity)",
        "",
        f"Command: `{eval_cmd}`",
        "",
        table(results, [name, "random_walker"]),
        "",
        "Objects: a fixed-seed sample (seed 0) of each dataset's objects, on full images; the "
        "random walker is the classical baseline on the same objects. s/click measured with "
        "three evaluations sharing 2 CPU cores (see the benchmark for latency).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--eval", type=Path, action="append", default=[])
    ap.add_argument("--eval-command", default="see the evaluation JSON")
    ap.add_argument("--models", nargs="*", default=["early", "two_stream", "multi_stage", "fca", "hires"])
    ap.add_argument("--default", default=None)
    ap.add_argument("--notes", default="scripts/train_shipped.sh, then scripts/finetune_stage2.sh where there are two stages")
    ap.add_argument("--copy", action="store_true", help="copy weights from the runs (else only cards)")
    args = ap.parse_args()

    WEIGHTS.mkdir(exist_ok=True)
    if args.copy:
        for name in args.models:
            src = args.runs / name / "best.safetensors"
            if not src.is_file():
                src = args.runs / name / "last.safetensors"
            shutil.copyfile(src, WEIGHTS / f"{name}.safetensors")
            print(f"{name}: {src} -> weights/{name}.safetensors")
    results = load_results(args.eval) if args.eval else []
    manifest = {"default": None, "models": {}}
    for name in args.models:
        f = WEIGHTS / f"{name}.safetensors"
        sha = sha256_file(f)
        meta = read_metadata(f)
        manifest["models"][name] = {"file": f.name, "sha256": sha, "card": f"{name}.md"}
        if results:
            (WEIGHTS / f"{name}.md").write_text(card(name, meta, sha, results, args.eval_command, args.notes))
    noc = {}
    for r in results:
        if _key(r) in args.models:
            v = _metric(r["metrics"], "noc90")
            if v is not None:
                noc.setdefault(_key(r), []).append(v)
    best = min(noc, key=lambda k: sum(noc[k]) / len(noc[k])) if noc else args.models[0]
    manifest["default"] = args.default or best
    (WEIGHTS / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"default: {manifest['default']}")
    if results:
        (WEIGHTS / "RESULTS.md").write_text(table(results, [*args.models, "random_walker"]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
