"""``pedsearch train | eval | export``: the training part's sub-commands.

Registered through the ``pedsearch.commands`` entry point (``train = "training.cli:register"``);
``python -m training.cli`` runs the same commands without it.

    pedsearch train --config tiny.yaml [--resume] [--workers N] [--export DIR] [--overwrite]
    pedsearch eval --bundle DIR [--data CONFIG|FOLDER|peta] [--split test] [--out DIR]
                   [--against DIR]
    pedsearch export --run DIR --out DIR [--which best|last]

``--config`` after ``train`` names the *training* configuration (a file, or a packaged one of
``training/configs/``); ``pedsearch --config site.yaml train ...`` still reads the deployment
settings (Ray address, data root) from ``site.yaml``.
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Any

from pedsearch.argtypes import bounded
from pedsearch.errors import InvalidInput, NotFound

SPLITS = ("train", "val", "test", "all")


#: config key -> (argparse dest, flag) of the ``train`` flags that override the config
TRAIN_FLAGS = {"num_workers": ("workers", "--workers"), "use_gpu": ("use_gpu", "--gpu/--cpu"),
               "epochs": ("epochs", "--epochs"), "output_dir": ("output_dir", "--output-dir"),
               "run_name": ("run_name", "--run-name"), "init_from": ("init_from", "--init-from")}


def register(subparsers: Any) -> None:
    """Add ``train``, ``eval`` and ``export`` to the ``pedsearch`` command line."""
    p = subparsers.add_parser(
        "train", help="train the models with Ray Train (N workers, CPU or GPU)",
        description="Train with Ray Train. The run folder is <output_dir>/<run_name>; "
        "PEDSEARCH_TRAIN__<FIELD> variables override the file (e.g. PEDSEARCH_TRAIN__EPOCHS=3).",
    )
    p.add_argument("--config", dest="train_config", default="base.yaml", metavar="FILE",
                   help="training configuration: a YAML file or the name of a packaged one "
                   "(tiny.yaml, default.yaml, base.yaml); default base.yaml")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue the run from its latest checkpoint (also after a crash)")
    start.add_argument("--overwrite", action="store_true",
                       help="delete an existing run folder (and --export bundle) and start again")
    p.add_argument("--workers", type=bounded(int, 1, 4096), default=None, metavar="N",
                   help="Ray Train workers (overrides num_workers)")
    p.add_argument("--gpu", dest="use_gpu", action="store_const", const=True, default=None,
                   help="train on GPUs (default: when the cluster has them)")
    p.add_argument("--cpu", dest="use_gpu", action="store_const", const=False,
                   help="train on CPUs even when GPUs are there")
    p.add_argument("--epochs", type=bounded(int, 1), default=None, help="override epochs")
    p.add_argument("--output-dir", default=None, metavar="DIR", help="override output_dir")
    p.add_argument("--run-name", default=None, help="override run_name")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="write the best checkpoint as a model bundle to DIR at the end")
    p.add_argument("--init-from", default=None, metavar="BUNDLE",
                   help="fine-tune: start from this bundle's towers instead of ImageNet weights "
                   "('default' = the shipped bundle; overrides init_from)")
    p.set_defaults(handler=cmd_train)

    p = subparsers.add_parser(
        "eval", help="evaluate a model bundle: text/attribute/image retrieval and attributes",
        description="Evaluate a bundle folder exactly as it ships (load_bundle). Writes "
        "metrics.json, cmc.png and cmc.html.",
    )
    p.add_argument("--bundle", required=True, metavar="DIR", help="the bundle folder")
    p.add_argument("--data", default=None, metavar="SPEC",
                   help="a training config (its split), a data set folder (reid_raw.json, "
                   "synthetic or CUHK-PEDES form), or 'peta' (every PETA image); default: the "
                   "configuration the bundle was trained with")
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="which part of the data (default test; 'all' for everything): a "
                   "training config's split as it trained, a data set folder's own split "
                   "(its file's), none for 'peta'")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="results folder (default runs/eval/<bundle version>-<split>, then "
                   "the --data, --source and --max-images given)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--source", default=None, metavar="NAME",
                   help="only images of this data set (peta, synthetic, market1501, ...): with "
                   "the bundle's own config, 'peta' scores its held-out PETA identities alone")
    p.add_argument("--max-images", type=bounded(int, 1), default=None,
                   help="evaluate on at most this many images (whole identities, seeded)")
    p.add_argument("--output-dir", default=None, metavar="DIR",
                   help="with a training config: the output_dir it was trained with (where its "
                   "synthetic data was generated)")
    p.add_argument("--against", default=None, metavar="DIR",
                   help="a second bundle (the one in service) scored on the same images: every "
                   "figure's difference with a 95 %% interval (paired bootstrap over persons), "
                   "in compare.json and compare.png")
    p.set_defaults(handler=cmd_eval)

    p = subparsers.add_parser("export", help="write a training checkpoint as a model bundle")
    p.add_argument("--run", required=True, metavar="DIR", help="run folder or checkpoint folder")
    p.add_argument("--out", required=True, metavar="DIR", help="bundle folder to create")
    p.add_argument("--which", choices=("best", "last"), default="best")
    p.add_argument("--version", default=None, help="bundle version (default: time + digest)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    p.set_defaults(handler=cmd_export)


# ------------------------------------------------------------------------------------------------
# handlers
# ------------------------------------------------------------------------------------------------
def _settings(args: argparse.Namespace):
    from pedsearch.config import load_settings

    return load_settings(getattr(args, "config", None))


def _console():
    from rich.console import Console

    return Console(stderr=True)


def cmd_train(args: argparse.Namespace) -> int:
    from training.config import load_train_config
    from training.job import run_training

    overrides = {key: getattr(args, dest) for key, (dest, _) in TRAIN_FLAGS.items()
                 if getattr(args, dest) is not None}
    cfg = load_train_config(args.train_config, overrides=overrides,
                            flags={key: flag for key, (_, flag) in TRAIN_FLAGS.items()})
    settings = _settings(args)
    console = _console()
    outcome = run_training(
        cfg, resume=args.resume, overwrite=args.overwrite, export_dir=args.export,
        ray_address=settings.ray.address, ray_num_cpus=settings.ray.num_cpus,
        data_root=settings.paths.resolved_data_root(), console=console,
    )
    console.print(f"[green]done[/]: {outcome.epochs} epochs in {outcome.run_dir}; best checkpoint "
                  f"{outcome.best_checkpoint.name if outcome.best_checkpoint else '-'}")
    _print_metrics(console, {k: v for k, v in outcome.metrics.items()
                             if k.startswith("val/") or k == "loss/total"}, "last epoch")
    if outcome.bundle is not None:
        console.print(f"bundle: {outcome.bundle}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pedsearch.bundle import load_bundle
    from training.compare import against_baselines, write_comparison
    from training.data import eval_subset
    from training.evaluate import evaluate_bundle

    console = _console()
    # every bundle's files and the device are checked before the data, which may take minutes
    bundles = {path: load_bundle(path, device=args.device)
               for path in filter(None, (args.bundle, args.against))}
    manifest = bundles[args.bundle].manifest
    settings = _settings(args)
    records = eval_records(args.data, args.split, manifest=manifest,
                           data_root=settings.paths.resolved_data_root(),
                           output_dir=args.output_dir)
    if args.source is not None:
        records = only_source(records, args.source)
    if args.max_images is not None:
        records = eval_subset(records, args.max_images, 0)
    if args.against is not None:
        return _compare_bundles(args, manifest, bundles, records, console)
    out = pathlib.Path(args.out) if args.out else _default_out(args, manifest["version"])
    bundle = bundles[args.bundle]
    per_query: dict[str, dict] = {}
    with console.status(f"evaluating {manifest['version']} on {len(records)} images ..."):
        metrics = evaluate_bundle(bundle, records, out_dir=out,
                                  title=f"{manifest['version']} ({args.split})",
                                  per_query=per_query)
    _print_metrics(console, metrics, f"bundle {manifest['version']}, {args.split} split")
    with console.status("bootstrapping the differences ..."):
        diffs = against_baselines(per_query, bundle.text_attribute_weight)
    if diffs:
        write_comparison(diffs, out, baseline="attribute prediction", candidate="as served",
                         stem="baselines")
        _print_differences(console, diffs, "attr. pred.", "served",
                           f"as the gateway serves it vs attribute prediction alone, "
                           f"{args.split} split, {len(records)} images")
    console.print(f"results: {out / 'metrics.json'}, {out / 'cmc.png'}"
                  + (f", {out / 'baselines.png'}" if diffs else ""))
    return 0


def _print_differences(console: Any, diffs: list, old: str, new: str, title: str) -> None:
    """A rich table of :class:`~training.compare.Difference` rows (percent)."""
    from rich.table import Table

    table = Table(title=f"{title}; percent, 95 % interval of the difference (paired bootstrap "
                  "over persons)")
    table.add_column("figure", no_wrap=True)
    table.add_column(old, justify="right")
    table.add_column(new, justify="right")
    table.add_column(f"{new} - {old} [interval]", justify="right", no_wrap=True)
    table.add_column("queries", justify="right")
    table.add_column("verdict", no_wrap=True)
    style = {"better": "green", "worse": "red", "not decided": "dim"}
    for d in diffs:
        table.add_row(d.metric, f"{100 * d.baseline:.1f}", f"{100 * d.candidate:.1f}",
                      f"{100 * d.delta:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}]",
                      str(d.queries), f"[{style[d.verdict]}]{d.verdict}[/]")
    console.print(table)


def _default_out(args: argparse.Namespace, name: str) -> pathlib.Path:
    """``runs/eval/<name>-<split>[-<data>][-<source>][-max<N>]``: two evaluations of one bundle
    on different images do not overwrite each other's results."""
    parts = [name, args.split]
    if args.data:
        parts.append(pathlib.Path(args.data).stem)
    if args.source:
        parts.append(args.source.lower())
    if args.max_images:
        parts.append(f"max{args.max_images}")
    return pathlib.Path("runs") / "eval" / "-".join(parts)


def _compare_bundles(args: argparse.Namespace, manifest: dict[str, Any], bundles: dict,
                     records: list, console: Any) -> int:
    """``eval --against OLD``: both bundles on the same images, then the paired differences."""
    from training.compare import compare_per_query, write_comparison
    from training.evaluate import evaluate_bundle

    other = bundles[args.against].manifest
    new, old = manifest["version"], other["version"]
    if manifest.get("schema") != other.get("schema"):
        raise InvalidInput(f"{old} and {new} speak different attribute schemas; their attribute "
                           "figures cannot be paired")
    if args.data is None and ((manifest.get("train_config") or {}).get("data")
                              != (other.get("train_config") or {}).get("data")):
        raise InvalidInput(
            f"{old} and {new} were trained on different data, so the held-out images of one may "
            "be training images of the other; pass --data with images neither trained on")
    out = pathlib.Path(args.out) if args.out else _default_out(args, f"{new}-vs-{old}")
    per_query: dict[str, dict] = {"old": {}, "new": {}}
    for role, path, version in (("old", args.against, old), ("new", args.bundle, new)):
        with console.status(f"evaluating {version} on {len(records)} images ..."):
            evaluate_bundle(bundles[path], records, out_dir=out / f"{role}-{version}",
                            title=f"{version} ({args.split})", per_query=per_query[role])
    weights = (bundles[args.against].text_attribute_weight,
               bundles[args.bundle].text_attribute_weight)
    with console.status("bootstrapping the differences ..."):
        diffs = compare_per_query(per_query["old"], per_query["new"], weights=weights)
    write_comparison(diffs, out, baseline=old, candidate=new)

    console.print(f"old: {old} ({args.against}); new: {new} ({args.bundle})")
    _print_differences(console, diffs, "old", "new",
                       f"{args.split} split, {len(records)} images")
    console.print("text_served: each bundle's text queries ranked as the gateway serves them "
                  f"(text-attribute weight {weights[0]:g} for {old}, {weights[1]:g} for {new})")
    console.print(f"results: {out / 'compare.json'}, {out / 'compare.png'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from training.export import export_bundle

    out = export_bundle(args.run, args.out, which=args.which, version=args.version,
                        overwrite=args.overwrite)
    _console().print(f"bundle: {out}")
    return 0


# ------------------------------------------------------------------------------------------------
# evaluation data
# ------------------------------------------------------------------------------------------------
def eval_records(
    spec: str | None,
    split: str,
    *,
    manifest: dict[str, Any] | None = None,
    data_root: pathlib.Path | None = None,
    output_dir: str | pathlib.Path | None = None,
) -> list:
    """The images ``pedsearch eval`` scores.

    Args:
        spec: a training config (file or packaged name): its data, split as in training; a
            folder with ``reid_raw.json`` (synthetic form when ``attributes.json`` is beside it,
            else CUHK-PEDES): the file's own split; ``peta``: every PETA image of the data root;
            None: the training configuration stored in the bundle's manifest.
        split: ``train`` / ``val`` / ``test`` / ``all``.
        manifest: the bundle's ``bundle.json`` (for ``spec=None``).
        data_root: where PETA is looked for.
        output_dir: overrides a training config's ``output_dir`` (where its synthetic data is).

    Raises:
        InvalidInput / NotFound: nothing usable at ``spec``, or the split is empty.
    """
    from pedsearch.attributes import AttributeSchema
    from training.config import load_train_config, parse_train_config, resolve_config_path
    from training.data import load_records, split_records

    schema = AttributeSchema.default()
    cfg = None
    records: list = []
    if spec is None:
        stored = (manifest or {}).get("train_config")
        if not stored:
            raise InvalidInput("the bundle stores no training configuration; pass --data")
        cfg = parse_train_config({**stored, **({"output_dir": str(output_dir)} if output_dir
                                               else {})}, where="the bundle's train_config")
    elif spec.lower() == "peta":
        from training.datasets.peta import load_peta
        from training.data import _data_root

        records = load_peta(_data_root(data_root), schema=schema)
    else:
        path = pathlib.Path(spec).expanduser()
        if path.is_dir():
            records = _folder_records(path, schema)
        else:
            over = {"output_dir": str(output_dir)} if output_dir else None
            cfg = load_train_config(resolve_config_path(spec), overrides=over)
    if cfg is not None:
        all_records = load_records(cfg.data, output_dir=cfg.output_dir, schema=schema,
                                   data_root=data_root)
        if split == "all":
            records = all_records
        else:
            records = getattr(split_records(all_records, cfg), split)
    elif split != "all":
        if not any(r.split for r in records):
            # scoring "test" would silently mean every image, a model's training ones included
            hint = ("for a bundle's held-out PETA identities leave out --data and pass --source "
                    "peta" if spec.lower() == "peta" else "its file marks no split")
            raise InvalidInput(f"--data {spec} has no {split} split ({hint}); pass --split all "
                               "to score every image")
        records = [r for r in records if r.split in (None, split)]
    if not records:
        raise InvalidInput(f"no images in the {split} split of {spec or 'the bundle config'}")
    return records


def only_source(records: list, source: str) -> list:
    """The records of one data set (``ImageRecord.source``).

    Raises:
        InvalidInput: none of the records comes from ``source`` (the message lists those that do).
    """
    kept = [r for r in records if r.source == source.lower()]
    if not kept:
        have = sorted({r.source for r in records})
        raise InvalidInput(f"none of these {len(records)} images comes from {source!r}; their "
                           f"sources are {', '.join(have)}")
    return kept


def _folder_records(path: pathlib.Path, schema: Any) -> list:
    from training.datasets.captions import load_cuhk_pedes, load_synthetic

    if not (path / "reid_raw.json").is_file():
        raise NotFound(f"{path} holds no reid_raw.json (synthetic / CUHK-PEDES form)")
    if (path / "attributes.json").is_file():
        return load_synthetic(path, schema=schema)
    return load_cuhk_pedes(path / "reid_raw.json")


def _print_metrics(console: Any, metrics: dict[str, Any], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in sorted(metrics):
        v = metrics[k]
        if isinstance(v, float):
            count = k.endswith("queries") or k in ("images", "ids")
            table.add_row(k, f"{v:.0f}" if count else f"{v:.4f}")
    console.print(table)


if __name__ == "__main__":  # python -m training.cli: the same commands as `pedsearch`
    import sys

    from pedsearch.cli import main

    sys.exit(main())
