"""Ship trained weights: copy them into weights/, write the manifest and one model card each.

Usage::

    python scripts/ship_weights.py --runs RUNS_DIR --eval EVAL_DIR [--eval EVAL_DIR2 ...] \
        [--copy two_stream ...] [--last NAME ...] [--default NAME] [--status NAME=TEXT ...]

For each model named by ``--copy``, ``RUNS_DIR/<model>/best.safetensors`` (``last.safetensors`` where there is no best, or for
models named by ``--last``) is copied to
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

from napari_clickseg.files import replacing
from napari_clickseg.weights import (
    WeightsError,
    check_engine_changes,
    load_weights,
    read_metadata,
    save_weights,
    set_engine_settings,
    sha256_file,
)

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


def _honouring(results: list[dict], name: str) -> str:
    """How the model's runs honoured contradicted clicks (the engine's ``click_radius``;
    runs from before it existed had none)."""
    radii = {r.get("settings", {}).get("click_radius") or 0.0 for r in results if _key(r) == name}
    if len(radii) != 1:
        return "click honouring as recorded per run"
    radius = radii.pop()
    return f"click honouring {radius:g} view px" if radius else "no click honouring"


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


def _stage(tr: dict) -> str:
    """One line on one training run, from its ``training`` metadata (or on a mean of runs)."""
    if "averaged" in tr:
        runs = "; ".join(f"({chr(97 + i)}) {_stage(m)}" for i, m in enumerate(tr["averaged"]))
        return f"the mean of the weights of {len(tr['averaged'])} runs from the same start (a model soup): {runs}"
    cfg = tr.get("config", {})
    init = cfg.get("init")
    init_txt = "ImageNet (EfficientNet-Lite0)" if init == "imagenet" else f"`{init}`"
    hw = tr.get("hardware", {})
    procs = int(hw.get("processes") or 1)
    batch = f"{cfg.get('batch_size')}" + (f" x {procs} processes" if procs > 1 else "")
    where = {"cuda": f"on one {hw.get('gpu', 'GPU')}", "cpu": "on CPU"}.get(hw.get("device"), "")
    extras = "; BatchNorm statistics frozen" if cfg.get("frozen_bn") else ""
    if cfg.get("corrupt_prev"):  # an option of commit 5a33ea9, removed since
        extras += (f"; {cfg['corrupt_prev']:.0%} of click sequences started from a corrupted true mask "
                   "(`corrupt_prev`, commit 5a33ea9)")
    return (
        f"init {init_txt}; loss `{cfg.get('loss')}`; clicks `{cfg.get('click_schedule')}`; "
        f"crop {cfg.get('crop_size')}, batch {batch}, lr {cfg.get('lr')}, "
        f"object scale {cfg.get('object_scale')}{extras}; {tr.get('iterations')} iterations, "
        f"{tr.get('samples_seen')} samples, {(tr.get('wall_time_s') or 0) / 60:.0f} min wall time{' ' + where if where else ''}"
    )


def stages(meta: dict) -> list[dict]:
    """Training stages (``training`` dicts), oldest first.

    Weights written by the current trainer carry ``earlier_stages``; for older
    files the chain is followed back through their ``init`` weights files.
    """
    tr = dict(meta.get("training", {}))
    if "averaged" in tr:  # a mean of runs: their common history, then one stage naming each run
        *earlier, _ = stages({"training": tr["averaged"][0]["training"]})
        return [*earlier, {"averaged": [stages({"training": m["training"]})[-1] for m in tr["averaged"]]}]
    if "earlier_stages" in tr:
        return [*tr.pop("earlier_stages"), tr]
    init = tr.get("config", {}).get("init", "")
    if isinstance(init, str) and init.endswith(".safetensors") and Path(init).is_file():
        prev = read_metadata(init)
        if prev.get("training") != meta.get("training"):  # not the file itself
            return [*stages(prev), tr]
    return [tr]


def _copy_with_history(src: Path, dst: Path) -> None:
    """Copy weights, first writing their stage history into the copy's metadata
    (the init file they name may be the one this copy replaces)."""
    meta = read_metadata(src)
    tr = meta.get("training", {})
    if "earlier_stages" in tr or "averaged" in tr:  # the file describes its whole history
        with replacing(dst) as tmp:  # never half a file, and a link at dst is not followed
            shutil.copyfile(src, tmp)
        return
    *earlier, _ = stages(meta)
    model, meta = load_weights(src)
    save_weights(model, dst, training={**meta["training"], "earlier_stages": earlier}, metrics=meta.get("metrics"),
                 engine=meta.get("engine"))


def _selection_scores(metrics: dict) -> str:
    """The line on the validation that chose the weights (crops in runs before the engine's)."""
    crops = "val_crops_objects" in metrics
    n = int(metrics.get("val_crops_objects" if crops else "val_objects", 0))
    clicks = sum(k.startswith("val_crops_iou@" if crops else "val_iou@") for k in metrics)
    how = "on crops" if crops else "on full images through the engine"
    return (
        f"Selection scores ({n} val objects {how}, {clicks} clicks; not PROTOCOL numbers): "
        + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()
                    if isinstance(v, float) and k not in ("val_crops_objects", "val_objects"))
    )


def card(name: str, meta: dict, sha: str, results: list[dict], eval_cmd: str, notes: str, status: str,
         sharing: str) -> str:
    tr = meta.get("training", {})
    if "averaged" in tr:  # data, validation and hardware of the first of the averaged runs
        tr = tr["averaged"][0]["training"]
    cfg = tr.get("config", {})
    data = ", ".join(f"{Path(d['path']).parent.name}/{Path(d['path']).name} ({d['objects']} objects)"
                     for d in tr.get("data", []))
    lines = [
        f"# `{name}` weights",
        "",
        f"- file: `weights/{name}.safetensors` (fp16 safetensors), sha256 `{sha}`",
        f"- architecture: `{meta['arch']}` with kwargs `{json.dumps(meta['kwargs'])}`",
        f"- normalisation: {json.dumps(meta.get('normalization'))}",
        *(
            [f"- engine settings (the predictor uses them unless told otherwise): `{json.dumps(meta['engine'])}`"]
            if meta.get("engine") else []
        ),
        "",
        f"**Status:** {status}",
        "",
        "## How they were made",
        "",
        f"Trained with `napari-clickseg train` ({notes}) on {data}; each folder sampled equally "
        f"often; "
        + (
            "validation folders "
            + ", ".join(f"{Path(d).parent.name}/{Path(d).name}" for d in cfg["val_dirs"])
            + " given to the last stage (the Status line says which weights were shipped and why)"
            if cfg.get("val_dirs")
            else "no validation during the last stage (the Status line says how it was chosen)"
        )
        + ". Stages:",
        "",
        *(f"{i + 1}. {_stage(t)}" for i, t in enumerate(stages(meta))),
        "",
        f"Hardware (last stage): {json.dumps(tr.get('hardware', {}))}. {sharing}",
        "",
        *([_selection_scores(meta["metrics"]), ""] if meta.get("metrics") else []),
        f"## How well (docs/PROTOCOL.md robot user, up to 20 clicks, no BRS, no structural integrity, {_honouring(results, name)})",
        "",
        f"Command: `{eval_cmd}`",
        "",
        table(results, [name, "random_walker"]),
        "",
        "Objects: on full images; where the table says N of M with N below M, a fixed-seed sample (seed 0) "
        "of the dataset's M objects, else all of them. The random walker is the classical baseline on the same objects. s/click measured with "
        "evaluations running side by side on the 2 CPU cores, one thread each (see the benchmark for latency).",
        "",
    ]
    return "\n".join(lines)


def _kept_default(models: list[str]) -> str:
    """The manifest's current default when it is still shipped, else the first model."""
    try:
        current = json.loads((WEIGHTS / "manifest.json").read_text()).get("default")
    except (OSError, ValueError, AttributeError):
        current = None
    return current if current in models else models[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--eval", type=Path, action="append", default=[])
    ap.add_argument("--eval-command", default="see the evaluation JSON")
    ap.add_argument("--models", nargs="*", default=["early", "two_stream", "multi_stage", "fca", "hires"])
    ap.add_argument("--default", default=None)
    ap.add_argument("--notes", default="scripts/train_shipped.sh, then scripts/finetune_stage2.sh where there are two stages")
    ap.add_argument("--copy", nargs="*", default=[], metavar="NAME",
                    help="models whose weights are copied from the runs (others keep theirs; cards for all)")
    ap.add_argument("--last", nargs="*", default=[], metavar="NAME",
                    help="of the --copy models, those whose run's last.safetensors is shipped instead of best")
    ap.add_argument("--status", action="append", default=[], metavar="NAME=TEXT",
                    help="a model's status line on its card")
    ap.add_argument("--engine", action="append", default=[], metavar="NAME=JSON",
                    help='Predictor settings changed in a model\'s file (its others stay; null removes one), '
                         'e.g. hires={"min_crop_size": 80}')
    ap.add_argument("--sharing", default="", help="how many runs shared the CPU cores in each stage")
    args = ap.parse_args(argv)

    # every argument is checked before anything in weights/ is written: a half-done run would
    # leave files whose sha256 no longer matches the manifest (the shipped models stop loading)
    if args.default is not None and args.default not in args.models:
        ap.error(f"--default {args.default!r} is not one of --models {args.models}")
    if set(args.copy) - set(args.models):
        ap.error(f"--copy names models that are not in --models: {sorted(set(args.copy) - set(args.models))}")
    if set(args.last) - set(args.copy):
        ap.error(f"--last names models that are not copied: {sorted(set(args.last) - set(args.copy))}")
    sources = {}
    for name in args.copy:
        src = args.runs / name / ("last.safetensors" if name in args.last else "best.safetensors")
        if not src.is_file() and name not in args.last:
            src = args.runs / name / "last.safetensors"
        if not src.is_file():
            ap.error(f"--copy {name}: no best.safetensors or last.safetensors in {args.runs / name}")
        try:  # a corrupt source must fail before any file in weights/ is replaced
            load_weights(src)
        except WeightsError as e:
            ap.error(f"--copy {name}: {e}")
        sources[name] = src
    engines = {}
    for item in args.engine:
        name, _, raw = item.partition("=")
        if name not in args.models:
            ap.error(f"--engine for unknown model {name!r}; models: {args.models}")
        try:
            engines[name] = check_engine_changes(json.loads(raw), f"--engine {name}")
        except (json.JSONDecodeError, ValueError) as e:
            ap.error(f"--engine {item!r}: {e}")
    bad = [item for item in args.status if "=" not in item]
    if bad:
        ap.error(f"--status takes NAME=TEXT, got {bad[0]!r}")
    status = dict(item.split("=", 1) for item in args.status)
    unknown = sorted(set(status) - set(args.models))
    if unknown:
        ap.error(f"--status for unknown model(s) {unknown}; models: {args.models}")
    missing = [name for name in args.models if name not in sources and not (WEIGHTS / f"{name}.safetensors").is_file()]
    if missing:
        ap.error(f"no weights/{missing[0]}.safetensors and no --copy for it")
    try:
        results = load_results(args.eval) if args.eval else []
    except (OSError, ValueError, KeyError) as e:
        ap.error(f"--eval: cannot read the evaluation results: {e}")

    WEIGHTS.mkdir(exist_ok=True)
    for name, src in sources.items():
        _copy_with_history(src, WEIGHTS / f"{name}.safetensors")
        print(f"{name}: {src} -> weights/{name}.safetensors")
    for name, engine in engines.items():
        sha = set_engine_settings(WEIGHTS / f"{name}.safetensors", engine)
        print(f"{name}: engine settings {json.dumps(engine)} (sha256 {sha[:12]})")
    manifest = {"default": None, "models": {}}
    for name in args.models:
        f = WEIGHTS / f"{name}.safetensors"
        sha = sha256_file(f)
        meta = read_metadata(f)
        manifest["models"][name] = {"file": f.name, "sha256": sha, "card": f"{name}.md"}
        if results:
            (WEIGHTS / f"{name}.md").write_text(card(name, meta, sha, results, args.eval_command, args.notes,
                                                                 status.get(name, ""), args.sharing))
    noc = {}
    for r in results:
        if _key(r) in args.models:
            v = _metric(r["metrics"], "noc90")
            if v is not None:
                noc.setdefault(_key(r), []).append(v)
    manifest["default"] = args.default or (
        min(noc, key=lambda k: sum(noc[k]) / len(noc[k])) if noc else _kept_default(args.models)
    )
    (WEIGHTS / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"default: {manifest['default']}")
    if results:
        (WEIGHTS / "RESULTS.md").write_text(table(results, [*args.models, "random_walker"]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
