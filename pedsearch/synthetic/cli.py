"""``pedsearch synth`` (write a synthetic data set) and ``pedsearch synth-preview`` (pictures).

Registered through the ``pedsearch.commands`` entry point group
(``synth = "pedsearch.synthetic.cli:register"``).
"""

from __future__ import annotations

import argparse

from pedsearch.argtypes import bounded


def register(subparsers) -> None:
    syn = subparsers.add_parser(
        "synth", help="generate a synthetic pedestrian data set (CUHK-PEDES format)",
        description="Render identities with controlled attributes, several views each, with "
        "two captions per image, split train/val/test by identity. Writes imgs/, "
        "reid_raw.json, attributes.json, people.json and meta.json under --out.",
    )
    syn.add_argument("--out", required=True, help="output folder (empty or new)")
    syn.add_argument("--ids", type=bounded(int, 1), default=200, help="identities")
    syn.add_argument("--images-per-id", type=bounded(int, 1), default=4)
    syn.add_argument("--seed", type=bounded(int, 0), default=0)
    syn.add_argument("--height", type=bounded(int, 32), default=256,
                     help="crop height in pixels (width is half)")
    syn.add_argument("--splits", type=float, nargs=3, default=(0.8, 0.1, 0.1),
                     metavar=("TRAIN", "VAL", "TEST"), help="identity fractions, summing to 1")
    syn.add_argument("--workers", type=bounded(int, 1), default=1, help="render processes")
    syn.add_argument("--overwrite", action="store_true",
                     help="write into a folder that already has files")
    syn.set_defaults(handler=cmd_synth)

    pre = subparsers.add_parser(
        "synth-preview", help="contact sheet of synthetic crops and scene frames with truth",
        description="Write crops.png (labelled crops) and scene.png (two cameras, raw and with "
        "truth boxes) under --out, to judge the synthetic world by eye.",
    )
    pre.add_argument("--out", required=True, help="output folder")
    pre.add_argument("--seed", type=bounded(int, 0), default=0)
    pre.add_argument("--crops", type=bounded(int, 1), default=32)
    pre.set_defaults(handler=cmd_preview)


def cmd_synth(args: argparse.Namespace) -> int:
    from pedsearch.synthetic.dataset import generate_dataset

    root = generate_dataset(args.out, num_ids=args.ids, images_per_id=args.images_per_id,
                            seed=args.seed, splits=tuple(args.splits), height_px=args.height,
                            workers=args.workers, overwrite=args.overwrite)
    print(f"wrote {args.ids * args.images_per_id} images to {root}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from pedsearch.synthetic.preview import write_preview

    for path in write_preview(args.out, seed=args.seed, num_crops=args.crops):
        print(path)
    return 0
