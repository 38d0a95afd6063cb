"""``pedsearch rollout``: move the index to a new model version with no query downtime.

Each model version has its own Milvus collection (``detections_<version>``) and queries go
through one alias. A roll-out of a retrained bundle, in the order that loses nothing:

1. ``pedsearch rollout --bundle NEW --no-switch`` stages NEW in Redis (:mod:`pedsearch.fleet`):
   every running gateway loads it within seconds, beside the version it answers with, no
   restart. Then it copies into the new collection every detection of the aliased one,
   embedding its stored crop again with NEW (the detection's id, camera, time, box and crop
   stay), while queries and the workers go on with OLD. It names any gateway that has not
   loaded NEW by then.
2. The workers restart with ``model.bundle`` = NEW: from then on they write the new
   collection (they create it if need be; the alias stays where it is).
3. ``pedsearch rollout --bundle NEW`` copies what the old workers wrote since (a copy takes
   only the detections the new collection lacks, or holds with an earlier crop), waits until
   every gateway reporting in Redis holds NEW and Milvus has compacted and indexed the new
   collection (so the first queries do not scan fresh rows), then moves the alias in one
   atomic step. Each request is answered whole by the version the alias points at, so
   queries never stop.

A detection whose crop is gone from the crop store cannot be embedded again: it is counted
and reported, not copied. The old collection is kept (drop it when no client needs it); moving
the alias back is the way to roll back; ``--unstage VERSION`` abandons a roll-out before its
switch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import cv2
import numpy as np
import redis
from pymilvus.exceptions import MilvusException

from pedsearch.argtypes import bounded
from pedsearch.bundle import Bundle
from pedsearch.cropstore import CropStore
from pedsearch.errors import InvalidInput, NotFound, NotReady, Unavailable
from pedsearch.fleet import Fleet, GatewayReport, lacking
from pedsearch.schema import (
    SCALAR_FIELDS,
    DetectionCollections,
    DetectionRow,
    version_of_collection,
)

log = logging.getLogger("pedsearch.rollout")

#: detections read, embedded and written per step
BATCH = 256
#: the fields a copy keeps; the embedding and the attribute probabilities are the new model's
KEPT_FIELDS = [f for f in SCALAR_FIELDS if f != "model_version"]

#: seconds ``pedsearch rollout`` waits for the gateways by default
WAIT_S = 120.0

#: seconds a switching roll-out waits for Milvus to compact and index the new collection (1M
#: indexed rows took 27 min on 2 cores: docs/BENCHMARKS.md, session 20)
SETTLE_S = 7200.0

#: ``progress(rows_done, rows_total)`` after every batch of a pass
ProgressFn = Callable[[int, int], None]


@dataclass
class CopyStats:
    """What a backfill did.

    Attributes:
        copied: detections embedded again and written to the new collection.
        present: detections the new collection held already (written by new workers).
        missing_crop: detections whose crop is not in the crop store (not copied).
        bad_crop: detections whose crop does not decode as an image (not copied).
    """

    copied: int = 0
    present: int = 0
    missing_crop: int = 0
    bad_crop: int = 0

    def add(self, later: "CopyStats") -> None:
        """Add a later pass: its ``present`` rows are the ones the passes before settled."""
        self.copied += later.copied
        self.missing_crop += later.missing_crop
        self.bad_crop += later.bad_crop


@dataclass
class RolloutReport:
    """The outcome of :func:`rollout`: the alias moved from ``previous`` (None: there was no
    alias) to ``collection``, after copying ``stats``."""

    previous: str | None
    collection: str
    version: str
    stats: CopyStats
    switched: bool
    gateways: list[GatewayReport] = field(default_factory=list)  # reporting at the switch
    unstaged: list[str] = field(default_factory=list)  # versions gateways may now drop


def _count(client, name: str) -> int:
    rows = client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return int(rows[0]["count(*)"])


def _batches(client, name: str, fields: list[str], batch: int) -> Iterator[list[dict]]:
    """Every row of ``name``, ``batch`` at a time (strong consistency: rows written just
    before are included)."""
    # Milvus 2.3 has no mvccTs: pymilvus warns once per iterator and uses the client's clock,
    # which is what a copy wants
    logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)
    it = client.query_iterator(name, batch_size=batch, output_fields=fields,
                               consistency_level="Strong")
    try:
        while rows := it.next():
            yield rows
    finally:
        it.close()


def _stamps(client, name: str) -> dict[int, int]:
    """``id -> ts_us`` of every row of ``name``."""
    return {int(r["id"]): int(r["ts_us"])
            for rows in _batches(client, name, ["id", "ts_us"], 4096) for r in rows}


def copy_pass(cols: DetectionCollections, crops: CropStore, bundle: Bundle, source: str,
              target: str, *, done: dict[int, int], batch: int = BATCH,
              progress: ProgressFn | None = None) -> CopyStats:
    """Copy the rows of ``source`` that ``done`` lacks into ``target``, each embedded again
    from its stored crop with ``bundle``; what is written is added to ``done``.

    A row ``done`` holds with an earlier capture time is copied again: the workers rewrite a
    detection when its track window ends with a better crop (same id, later time).

    Args:
        cols: the collections (its client reads ``source`` and writes ``target``).
        crops: where the crops are (``paths.crops_dir``).
        bundle: the new version's bundle, loaded with its ``image`` part.
        done: ``id -> ts_us`` of the rows settled already: held by ``target``, or without a
            usable crop (updated in place; ``present`` counts the rows of ``source`` there).
        progress: called with (rows read, rows in ``source``) after every batch.
    """
    stats = CopyStats()
    total, seen = _count(cols.client, source), 0
    for rows in _batches(cols.client, source, KEPT_FIELDS, batch):
        seen += len(rows)
        todo, images = [], []
        for r in rows:
            key, ts = int(r["id"]), int(r["ts_us"])
            if done.get(key, ts - 1) >= ts:
                stats.present += 1
                continue
            try:
                jpeg = crops.get(r["crop_ref"])
            except (NotFound, InvalidInput):
                stats.missing_crop += 1
                done[key] = ts  # settled: a later pass need not look again
                continue
            # an empty file (a crash on a shared volume) makes imdecode raise, not return None
            image = (cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) if jpeg
                     else None)
            if image is None:
                stats.bad_crop += 1
                done[key] = ts
                continue
            todo.append(r)
            images.append(image)
        if todo:
            emb, probs = bundle.encode_images(images)
            cols.upsert(target, [
                DetectionRow(
                    id=int(r["id"]), camera_id=r["camera_id"], ts_us=int(r["ts_us"]),
                    track_id=int(r["track_id"]), frame_seq=int(r["frame_seq"]),
                    box=(r["box_x"], r["box_y"], r["box_w"], r["box_h"]),
                    det_score=float(r["det_score"]), crop_ref=r["crop_ref"],
                    model_version=bundle.version, embedding=e, attributes=p)
                for r, e, p in zip(todo, emb, probs)], bundle.schema)
            done.update((int(r["id"]), int(r["ts_us"])) for r in todo)
            stats.copied += len(todo)
        if progress is not None:
            progress(seen, max(total, seen))
    return stats


def wait_for_gateways(fleet: Fleet, version: str, *, timeout_s: float,
                      poll_s: float = 1.0) -> tuple[list[GatewayReport], list[GatewayReport]]:
    """Wait up to ``timeout_s`` until every gateway reporting in ``fleet`` holds ``version``.

    Returns:
        (the gateways reporting, those of them still without ``version``).
    """
    end = time.monotonic() + timeout_s
    while True:
        reports = fleet.gateways()
        behind = lacking(reports, version)
        if not behind or time.monotonic() >= end:
            return reports, behind
        time.sleep(poll_s)


def _settle(cols: DetectionCollections, name: str, timeout_s: float,
            progress: ProgressFn | None) -> None:
    """Flush ``name``, compact its sealed segments and wait for their indexes (steps 0..2)."""
    steps = ("compacting", "indexing")  # settle's phases, after the flush
    if progress is not None:
        progress(0, len(steps))
    cols.client.flush(name)
    try:
        cols.settle(name, None, timeout_s=timeout_s, on_progress=None if progress is None else
                    lambda phase: progress(steps.index(phase), len(steps)))
    except NotReady as exc:
        raise NotReady(f"the alias was not moved: {exc.message}. Run the command again: the "
                       "copy is kept, and Milvus goes on indexing meanwhile") from None
    if progress is not None:
        progress(len(steps), len(steps))


def rollout(cols: DetectionCollections, crops: CropStore, bundle: Bundle, *,
            fleet: Fleet | None = None, bundle_path: str | None = None,
            copy: bool = True, switch: bool = True, wait_s: float = WAIT_S,
            settle_s: float = SETTLE_S, force: bool = False,
            progress: Callable[[str], ProgressFn] | None = None) -> RolloutReport:
    """Stage ``bundle`` for the gateways, fill its version's collection from the aliased one,
    then move the alias once every gateway holds the version.

    Args:
        cols: the detection collections of the deployment's Milvus.
        crops: the crop store the workers write (``paths.crops_dir``).
        bundle: the new version's bundle, loaded with its ``image`` part.
        fleet: the deployment's staged bundles and gateway reports in Redis (``None``: no
            gateway is told or waited for).
        bundle_path: the bundle's folder as the gateways read it (staged in ``fleet``).
        copy: copy the aliased collection's detections (False: the new version starts with
            what its workers have written).
        switch: move the alias at the end (False: fill only, e.g. to check it first).
        wait_s: how long to wait for the gateways to hold the version before switching.
        settle_s: how long to wait, before switching, for Milvus to compact and index what the
            new collection holds.
        force: switch even if some gateway does not hold it by then.
        progress: ``progress(pass title)`` returns the progress callback of that pass.

    Returns:
        what was done.

    Raises:
        NotReady: some gateway does not hold the version after ``wait_s`` (and not ``force``),
            or the new collection is not indexed after ``settle_s``; the copy is kept, the
            alias not moved.
    """
    if fleet is not None and bundle_path is not None:
        fleet.stage(bundle.version, bundle_path)  # first: the gateways load it during the copy
    target = cols.ensure(bundle.version, embed_dim=bundle.embed_dim, attributes=bundle.schema,
                         make_alias=False)
    previous = cols.resolve_alias()
    stats = CopyStats()
    if copy and previous is not None and previous != target:
        if not crops.root.is_dir() and not force:
            # every row would be "without a crop", and the alias would move to an empty index
            raise NotReady(f"the crop store {crops.root} is not a folder here, so no detection "
                           "could be re-embedded: point paths.crops_dir at the workers' crop "
                           "store (the same path, or a shared volume), or pass --force")
        done = _stamps(cols.client, target)

        def run(title: str) -> CopyStats:
            got = copy_pass(cols, crops, bundle, previous, target, done=done,
                            progress=progress(title) if progress else None)
            log.debug("%s: %d copied, %d without a usable crop", title, got.copied,
                      got.missing_crop + got.bad_crop)
            return got

        stats = run("copying the indexed detections")
        # the second pass takes what the old workers wrote while the first one ran
        stats.add(run("copying those that arrived meanwhile"))
    switched = switch and previous != target
    lost = stats.missing_crop + stats.bad_crop
    if switched and not force and lost > stats.copied + stats.present:
        raise NotReady(f"the alias was not moved: {lost} of the "
                       f"{lost + stats.copied + stats.present} detections had no readable crop "
                       f"in {crops.root}, so the new index would lose most of the history. Point "
                       "paths.crops_dir at the workers' crop store and run the command again "
                       "(the copy is kept), or pass --force to switch anyway")
    if switched:
        # every query goes here once the alias moves: compact and index what was just written
        # first, so the first queries do not scan unindexed rows by brute force and the bulk of
        # the copy's compaction is behind them (Milvus' own later merge of the compacted
        # segments is not waited for: DetectionCollections.settle; BENCHMARKS, "Roll-out")
        _settle(cols, target, settle_s, progress("compacting and indexing the new collection")
                if progress else None)
    gateways: list[GatewayReport] = []
    unstaged: list[str] = []
    if fleet is not None:
        # also without the switch: the workers restart on the new version next, and a gateway
        # that cannot load it is better known now than at the switch
        gateways, behind = wait_for_gateways(fleet, bundle.version, timeout_s=wait_s)
        if behind and switched and not force:
            lines = "\n".join(f"  - {g.describe(bundle.version)}" for g in behind)
            raise NotReady(
                f"the alias was not moved: {len(behind)} of {len(gateways)} reporting gateways "
                f"do not hold model version {bundle.version} after {wait_s:.0f} s, and would "
                f"answer every query FAILED_PRECONDITION:\n{lines}\nMake the bundle readable "
                "there (the same path) and run the command again (the copy is kept), or pass "
                "--force to switch anyway")
    if switched:
        cols.switch_alias(target, expected=previous)
        log.debug("alias %s: %s -> %s", cols.cfg.alias, previous, target)
        if fleet is not None:
            # keep the version just left staged for a roll-back; gateways drop older ones
            keep = {bundle.version, version_of_collection(cols.cfg, previous or "")}
            try:
                unstaged = fleet.keep_staged({v for v in keep if v})
            except redis.RedisError as exc:  # the switch is done: say so, do not fail it
                log.warning("the alias moved, but the older staged bundles could not be "
                            "unstaged (%s); gateways keep holding them", exc)
    return RolloutReport(previous=previous, collection=target, version=bundle.version,
                         stats=stats, switched=switched, gateways=gateways, unstaged=unstaged)


def unstage(fleet: Fleet, cols: DetectionCollections, version: str) -> list[GatewayReport]:
    """Take ``version`` off the staged bundles (an abandoned roll-out); gateways then drop it.

    Returns:
        the gateways reporting now.

    Raises:
        InvalidInput: the alias points at that version, or it is not staged.
    """
    aliased = cols.resolve_alias()
    if aliased is not None and version_of_collection(cols.cfg, aliased) == version:
        raise InvalidInput(f"the alias {cols.cfg.alias!r} points at {version}: move it to "
                           "another version first (pedsearch rollout --no-copy --bundle DIR)")
    if not fleet.unstage(version):
        staged = fleet.staged()
        raise InvalidInput(f"{version} is not staged (staged: {', '.join(staged) or 'none'})")
    return fleet.gateways()



# -- the command line ---------------------------------------------------------------------------
def register(subparsers) -> None:
    p = subparsers.add_parser(
        "rollout", help="move the index to a new model version with no query downtime",
        description="Stage --bundle for the gateways (each loads it within seconds, no "
        "restart), copy the detections of the collection behind the Milvus alias into the "
        "collection of its model version, each embedded again from its stored crop, then move "
        "the alias there in one atomic step once every reporting gateway holds the version and "
        "Milvus has indexed the copy. The "
        "order that fails no query and misses no detection: `rollout --no-switch` (the long "
        "copy); the workers restarted on the new bundle; `rollout` (the rest, and the switch). "
        "See README, Rolling out.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--bundle", metavar="DIR",
                      help="the new model bundle folder (from `pedsearch train --export`); "
                      "gateways load it from the same path, so on several machines it must be "
                      "on a shared volume")
    what.add_argument("--unstage", metavar="VERSION",
                      help="abandon a roll-out: take VERSION off the staged bundles (gateways "
                      "drop it); its collection is left as it is")
    p.add_argument("--wait", type=bounded(float, 0, 3600, unit=" seconds"), default=None,
                   metavar="SECONDS",
                   help="how long to wait for every reporting gateway to hold the new version "
                   f"(0..3600, default {WAIT_S:.0f}); the alias moves only when they all do")
    p.add_argument("--force", action="store_true",
                   help="switch even if some gateway does not hold the new version by then "
                   "(it answers FAILED_PRECONDITION until it does)")
    p.add_argument("--no-copy", dest="copy", action="store_false",
                   help="do not copy the indexed detections: the new version starts with what "
                   "its workers have written")
    p.add_argument("--no-switch", dest="switch", action="store_false",
                   help="fill the new collection but leave the alias where it is")
    p.set_defaults(handler=cmd_rollout, _parser=p)


def cmd_rollout(args) -> int:
    from rich.console import Console

    from pedsearch.config import load_settings
    from pedsearch.schema import connect

    console = Console()  # soft_wrap: names and paths are never broken across lines
    if args.unstage:
        given = [flag for flag, on in (("--wait", args.wait is not None), ("--force", args.force),
                                       ("--no-copy", not args.copy),
                                       ("--no-switch", not args.switch)) if on]
        if given:
            args._parser.error(f"{', '.join(given)} "
                               f"{'does' if len(given) == 1 else 'do'} not apply to --unstage")
    settings = load_settings(args.config)
    if args.wait is None:
        args.wait = WAIT_S
    fleet = Fleet(redis.Redis.from_url(settings.redis.url, socket_timeout=5.0,
                                       socket_connect_timeout=2.0), settings.milvus.alias)
    try:
        fleet.redis.ping()
    except redis.RedisError as exc:
        raise Unavailable(f"cannot reach Redis at {settings.redis.url} ({exc}): the roll-out "
                          "stages the bundle there for the gateways; start Redis (pedsearch "
                          "stack up) or set redis.url") from None
    cols = DetectionCollections(connect(settings.milvus), settings.milvus)
    if args.unstage:
        try:
            reports = unstage(fleet, cols, args.unstage)
        except (redis.RedisError, MilvusException) as exc:
            raise Unavailable(f"cannot unstage {args.unstage} ({exc}): Redis at "
                              f"{settings.redis.url} or Milvus at {settings.milvus.uri} failed; "
                              "nothing was changed unless the message says otherwise; run the "
                              "command again") from None
        console.print(f"unstaged {args.unstage}: {len(reports)} reporting gateways drop it "
                      "unless started with it", highlight=False, soft_wrap=True)
        return 0
    try:
        return _roll_out(args, settings, fleet, cols, console)
    except redis.RedisError as exc:
        raise Unavailable(f"Redis at {settings.redis.url} failed during the roll-out "
                          f"({exc}); the alias was not moved. Run the command again") from None
    except MilvusException as exc:
        raise Unavailable(f"Milvus at {settings.milvus.uri} failed during the roll-out "
                          f"({exc.message}); the alias was not moved. Run the command "
                          "again: it copies only what the new collection lacks or holds "
                          "older") from None


def _roll_out(args, settings, fleet: Fleet, cols: DetectionCollections, console) -> int:
    """``rollout --bundle DIR``: the copy and the switch, with progress and a summary."""
    import pathlib

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.progress import TimeElapsedColumn, TimeRemainingColumn

    from pedsearch.bundle import load_bundle

    with console.status("loading the model bundle..."):
        bundle = load_bundle(args.bundle, parts=("image",))
    # absolute, but symlinks kept: the gateways' machines may mount the folder elsewhere
    path = str(pathlib.Path(args.bundle).absolute())
    console.print(f"staging {bundle.version} ({path}) for the gateways; after the copy, up to "
                  f"{args.wait:.0f} s for each reporting gateway to hold it", highlight=False,
                  soft_wrap=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        def progress(title: str) -> ProgressFn:
            task = bar.add_task(title, total=None)
            return lambda done, total: bar.update(task, completed=done, total=total)

        report = rollout(cols, CropStore(settings.paths.crops_dir), bundle, fleet=fleet,
                         bundle_path=path, copy=args.copy, switch=args.switch,
                         wait_s=args.wait, force=args.force, progress=progress)
    _summary(report, args, settings, console)
    return 0


def _summary(report: RolloutReport, args, settings, console) -> None:
    def say(text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True)

    s = report.stats
    if not args.copy:
        say(f"{report.collection}: nothing copied (--no-copy)")
    elif report.previous not in (None, report.collection):
        say(f"{report.collection}: {s.copied} detections copied from {report.previous}, "
            f"{s.present} there already"
            + (f"; {s.missing_crop + s.bad_crop} without a usable crop in "
               f"{settings.paths.crops_dir} were not copied" if s.missing_crop + s.bad_crop
               else ""))
    behind = lacking(report.gateways, report.version)
    held = (f"{len(report.gateways) - len(behind)} of {len(report.gateways)} reporting gateways "
            f"hold {report.version}" if report.gateways else
            "no gateway reports in Redis (gateways of an older release, or without Redis, are "
            "not waited for; one started later loads the staged bundle when it starts)")
    alias = settings.milvus.alias
    if report.switched:
        say(f"alias {alias}: {report.previous or '(none)'} -> {report.collection}; {held}. "
            "Roll back by restarting the workers on the old bundle, then `pedsearch rollout "
            "--bundle <the old bundle>` (it copies back what was indexed since).")
    elif report.previous == report.collection:
        say(f"alias {alias} points at {report.collection} already: nothing to switch; {held}")
    else:
        where = (f"left on {report.previous}" if report.previous is not None
                 else "not created (no collection had it)")
        say(f"alias {alias} {where} (--no-switch); switch it later with `pedsearch rollout "
            f"--bundle <this bundle>`; rows already copied are skipped; {held}")
    for g in behind:  # with --force or --no-switch
        say(f"warning: {g.describe(report.version)}")
    if report.unstaged:
        say(f"unstaged {', '.join(report.unstaged)}: gateways drop them unless started with "
            "them")
