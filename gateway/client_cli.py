"""``pedsearch search``, ``pedsearch watch`` and ``pedsearch cameras``: the gateway from a shell.

Examples::

    pedsearch search "a man in a grey hoodie with a red backpack" -k 20 --since 2h
    pedsearch search --attr upper_color=red --attr backpack=yes --hard --camera gate-3
    pedsearch search --image crop.jpg --since 2026-12-01T08:00:00Z --until 2026-12-01T09:00
    pedsearch watch "a woman in a long red coat" --threshold 0.6
    pedsearch watch --like 1131817532143570622 --threshold 0.8 --camera gate-3
    pedsearch cameras

``search`` prints a table of the hits and writes ``<out>/contact_sheet.html`` and
``<out>/contact_sheet.png`` of the top crops (fetched from the gateway) with score, camera and
time. ``watch`` prints each new match as it is indexed until Ctrl-C, ``--max-matches`` or the
end of its duration (``--duration``: 600 s unless given, at most 3600 s, with the gateway's
default settings), and says which ended it.

Exit status: 0 on success, 2 for a bad argument or a request the gateway rejects (the message
says which), 1 when the gateway or a service behind it cannot be reached.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import os
import pathlib
import re
import time

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gateway.address import listen_address, local_host
from pedsearch.argtypes import bounded
from pedsearch.errors import InvalidInput, PedsearchError, ResourceExhausted, Unavailable

console = Console()
err_console = Console(stderr=True)

MAX_K = 1000
#: scores are similarities of about -1..1 (plus a small soft-attribute bonus)
_SCORE = bounded(float, -10.0, 10.0, unit=" (a similarity score, about -1..1)")
TOKEN_ENV = "PEDSEARCH_TOKEN"
#: crops fetched for the contact sheet at most (one GetDetection each)
MAX_SHEET = 50
#: terminal width from which the hits table also shows each hit's top attributes
WIDE_TABLE_COLUMNS = 110
#: the largest value of the request's uint32 fields
UINT32_MAX = 2**32 - 1
#: longest rate-limit wait (s) the contact sheet sits out before leaving a crop out
MAX_RATE_WAIT_S = 5.0
#: a watch's duration when --duration is 0, and the longest one, unless the gateway's settings
#: (gateway.watch_default_s / watch_max_s) say otherwise: for --help, which cannot ask the
#: gateway (a unit test keeps them equal to the settings' defaults)
WATCH_DEFAULT_S, WATCH_MAX_S = 600, 3600
#: what a watch runs past its --until (gateway.convert.WATCH_UNTIL_GRACE_S; a unit test keeps
#: them equal; this module does not load the gateway's)
WATCH_UNTIL_GRACE_S = 60
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*(?:ago)?\s*$", re.I)


# -- argument types (argparse turns their errors into `error: ...`, exit 2) --------------------
def parse_time(text: str, *, now: float | None = None) -> int:
    """A time as unix epoch microseconds: ISO-8601 (naive = UTC), ``now``, or an age such as
    ``10m`` / ``2h`` / ``1.5d`` / ``30s ago`` (that long before ``now``)."""
    now = time.time() if now is None else now
    s = text.strip()
    if s.lower() == "now":
        return int(now * 1e6)
    if m := _RELATIVE.match(s):
        seconds = float(m.group(1)) * _UNITS[m.group(2).lower()]
        if not math.isfinite(seconds):
            raise argparse.ArgumentTypeError(f"{text!r} is too far from now to be a capture time")
        return _in_range(int((now - seconds) * 1e6), text)
    try:
        t = dt.datetime.fromisoformat(s)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: give ISO-8601 (2026-12-01T08:00:00Z, 2026-12-01 08:00) "
            "or an age like 30s, 10m, 2h, 1d") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return _in_range(int(t.timestamp() * 1e6), text)


def _in_range(us: int, text: str) -> int:
    # the request's fields are int64 microseconds: about 292,000 years either side of 1970
    if not -(2**63) <= us < 2**63:
        raise argparse.ArgumentTypeError(f"{text!r} is too far from now to be a capture time")
    return us




def _attr(text: str):
    from gateway.client import parse_constraint

    try:
        return parse_constraint(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.message) from None




# -- registration ------------------------------------------------------------------------------
def _connection_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("gateway")
    g.add_argument("--gateway", metavar="HOST:PORT", default=None,
                   help="gateway address (default: gateway.address of the configuration, "
                        "127.0.0.1:50051)")
    g.add_argument("--token", default=os.environ.get(TOKEN_ENV) or None,
                   help=f"bearer token, when the gateway requires one (default: ${TOKEN_ENV}; "
                        "the environment keeps it out of the process list)")
    g.add_argument("--tls-ca", metavar="PEM", default=None,
                   help="CA certificate to trust; connects with TLS")
    g.add_argument("--timeout", type=bounded(float, 0, 3600, open_low=True, unit=" seconds"),
                   default=30.0, metavar="S",
                   help="deadline of each call in seconds (default 30; a watch's stream has "
                        "none: --duration bounds it)")


#: ``--attr``'s help, then what the attributes do in a search or a watch
ATTR_HELP = ("attribute, e.g. upper_color=red, backpack=yes (repeatable; several accepted "
             "values: footwear=boots,sneakers). ")
SEARCH_ATTR_HELP = ATTR_HELP + "Alone: an attribute query; with a text or image: re-ranks its hits"
# cmd_watch refuses --attr beside a text or an example: a watch is one query
WATCH_ATTR_HELP = ATTR_HELP + ("The watch's query (not together with a text, --image or --like: "
                               "a watch is one kind of query)")


def _query_args(p: argparse.ArgumentParser, attr_help: str) -> None:
    p.add_argument("text", nargs="?", default=None, help="what the person looks like, in words")
    p.add_argument("--attr", action="append", type=_attr, default=[], metavar="FAMILY=VALUE",
                   help=attr_help)
    p.add_argument("--hard", action="store_true",
                   help="the attributes filter the hits (probability >= 0.5) instead of "
                        "re-ranking them")
    p.add_argument("--camera", action="append", default=[], metavar="ID",
                   help="only this camera (repeatable)")
    p.add_argument("--since", type=parse_time, default=None, metavar="TIME",
                   help="captured at or after: ISO-8601 (naive = UTC) or an age (10m, 2h, 1d)")
    p.add_argument("--until", type=parse_time, default=None, metavar="TIME",
                   help="captured at or before (same forms as --since)")


def _example_args(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument("--image", metavar="FILE", default=None,
                   help=f"{verb} an example crop (JPEG or PNG of one person)")
    p.add_argument("--like", type=bounded(int, 1, 2**63 - 1), default=None, metavar="ID",
                   help=f"{verb} a stored detection's crop (an id from a search or a watch)")


#: ``search --help``'s epilog: the examples of this module's docstring
EXAMPLES = "examples:\n" + __doc__.split("Examples::\n\n", 1)[1].split("\n\n", 1)[0]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "search", help="search the stored pedestrians by text, attributes or an example crop",
        description="Search the live index through the gateway; prints a table and writes a "
                    "contact sheet (HTML and PNG) of the top crops.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _query_args(p, SEARCH_ATTR_HELP)
    _example_args(p, "query by")
    p.add_argument("-k", "--top-k", dest="k", type=bounded(int, 1, MAX_K), default=10,
                   help=f"hits to return, 1..{MAX_K} (default 10)")
    p.add_argument("--min-score", type=_SCORE, default=None, help="drop hits scoring below this")
    p.add_argument("--out", default="search-out", metavar="DIR",
                   help="folder for contact_sheet.html / .png (default: search-out)")
    p.add_argument("--sheet", type=int, default=20, metavar="N",
                   help=f"crops on the contact sheet, 0..{MAX_SHEET} (0: none; default 20)")
    _connection_args(p)
    p.set_defaults(handler=cmd_search, _parser=p)

    w = subparsers.add_parser(
        "watch", help="print matches of a standing query as new detections are indexed",
        description="A standing query: prints each newly indexed detection that scores at least "
                    "the threshold, until Ctrl-C, --max-matches or the end of its duration "
                    f"(--duration: {WATCH_DEFAULT_S} s unless given, at most {WATCH_MAX_S} s, "
                    "as the gateway's settings say). With --image or --like: tells when that "
                    "person appears again. --until, if given, must be in the future.")
    _query_args(w, WATCH_ATTR_HELP)
    _example_args(w, "watch for the person of")
    w.add_argument("--threshold", type=_SCORE, required=True,
                   help="a new detection matches when its score >= this")
    w.add_argument("--max-matches", type=bounded(int, 0, UINT32_MAX), default=0,
                   help="stop after this many matches (0: no limit)")
    w.add_argument("--duration", type=bounded(int, 0, UINT32_MAX), default=0, metavar="S",
                   help="stop after S seconds (default 0: the gateway's default, "
                        f"gateway.watch_default_s, {WATCH_DEFAULT_S} s unless configured; the "
                        f"gateway cuts S to its gateway.watch_max_s, {WATCH_MAX_S} s unless "
                        "configured)")
    _connection_args(w)
    w.set_defaults(handler=cmd_watch, _parser=w)

    c = subparsers.add_parser("cameras", help="the cameras with stored detections")
    _connection_args(c)
    c.set_defaults(handler=cmd_cameras, _parser=c)


# -- handlers ----------------------------------------------------------------------------------
def gateway_address(args) -> str:
    """``--gateway``, else the configured listen address (a wildcard host becomes loopback)."""
    if args.gateway:
        return args.gateway
    from pedsearch.config import load_settings

    address = load_settings(args.config).gateway.address
    host, port = listen_address(address)
    if not port:  # a gateway told to take a free port says which one it took
        raise InvalidInput(f"gateway.address {address} has port 0 (a free one, chosen when the "
                           "gateway starts): give the port it printed with --gateway HOST:PORT")
    return f"{local_host(host)}:{port}"


def _connect(args):
    from gateway.client import CONNECT_TIMEOUT_S, connect

    return connect(gateway_address(args), token=args.token, tls_ca=args.tls_ca,
                   timeout_s=args.timeout,
                   connect_timeout_s=min(args.timeout, CONNECT_TIMEOUT_S))


def _check_query(args) -> None:
    parser = args._parser
    if args.since is not None and args.until is not None and args.since > args.until:
        parser.error("--since is after --until: the time range is inverted")
    if args.text is not None and not args.text.strip():
        parser.error("the query text is empty")
    if sum((args.text is not None, args.image is not None, args.like is not None)) > 1:
        parser.error("give one of a text, --image and --like")
    if args.text is None and not args.attr and args.image is None and args.like is None:
        parser.error("nothing to search for: give a text, --attr, --image or --like")
    if args.hard and not args.attr:
        parser.error("--hard needs at least one --attr")
    if args.image is not None and not pathlib.Path(args.image).is_file():
        parser.error(f"--image {args.image}: " + ("a folder, not an image file; give a JPEG or "
                     "PNG crop" if pathlib.Path(args.image).is_dir() else "no such file"))


@dataclasses.dataclass
class Example:
    """The query image of ``--image`` or ``--like``.

    Attributes:
        image: JPEG/PNG bytes or a file's path; ``None`` without either option.
        name: how the query is named in tables and messages.
        track: ``(camera_id, track_id)`` of the ``--like`` detection: a watch skips that track,
            whose later crops (the person still in view) would match its own example.
    """

    image: bytes | str | None = None
    name: str = ""
    track: tuple[str, int] | None = None


def _example(gw, args) -> Example:
    if args.image is not None:
        return Example(args.image, f"image {pathlib.Path(args.image).name}")
    if args.like is not None:  # its crop and its track, from the gateway (GetDetection)
        got = _fetch_detection(gw, args.like)
        return Example(got.crop_jpeg, f"like detection {args.like}",
                       (got.detection.camera_id, got.detection.track_id))
    return Example()


def _unavailable(exc: Unavailable) -> int:
    err_console.print(f"[bold red]error:[/] {escape(exc.message)}", soft_wrap=True)
    return 1


def _apply_mode(args) -> None:
    """``--hard`` makes every ``--attr`` constraint a filter (they are parsed as soft ones)."""
    mode = "hard" if args.hard else "soft"
    args.attr = [dataclasses.replace(c, mode=mode) for c in args.attr]


def cmd_search(args) -> int:
    _check_query(args)
    if not 0 <= args.sheet <= MAX_SHEET:
        args._parser.error(f"--sheet must be 0..{MAX_SHEET}")
    out = pathlib.Path(args.out)
    if args.sheet:  # before the search: a bad --out should not cost the query and its crops
        existing = next(p for p in (out, *out.absolute().parents) if p.exists())
        if not existing.is_dir():
            args._parser.error(f"--out {out}: {existing} is a file, not a folder; give a folder "
                               "for the contact sheet")
    _apply_mode(args)
    common = dict(k=args.k, cameras=args.camera, since_us=args.since, until_us=args.until,
                  min_score=args.min_score)
    try:
        with _connect(args) as gw:
            example = _example(gw, args)
            query = example.name
            if example.image is not None:
                result = _patiently(lambda: gw.search_image(example.image, attributes=args.attr,
                                                            **common))
            elif args.text is not None:
                query = args.text
                result = _patiently(lambda: gw.search_text(args.text, attributes=args.attr,
                                                           **common))
            else:
                query = " ".join(f"{c.family}={','.join(c.values)}" for c in args.attr)
                result = _patiently(lambda: gw.search_attributes(args.attr, **common))
            # a narrow terminal has no room for the attributes beside an uncut id
            wide = console.width >= WIDE_TABLE_COLUMNS
            console.print(hits_table(result, title=query, attributes=wide))
            if not wide and result.hits:
                console.print(f"[dim](top attributes shown from {WIDE_TABLE_COLUMNS} columns "
                              "on, e.g. COLUMNS=140; the contact sheet has them too)[/]")
            if result.hits and args.sheet:
                html, png = write_sheets(gw, result, out, query, args.sheet)
                # paths are the user's text: "[/x]" in one is not rich markup
                console.print(f"contact sheet: {escape(str(html))}  {escape(str(png))}",
                              soft_wrap=True)
            elif args.sheet:
                old = [p for p in (out / "contact_sheet.html", out / "contact_sheet.png")
                       if p.exists()]
                console.print("no hits, so no contact sheet" + (
                    f" (the one in {escape(str(out))} is from an earlier search)" if old else ""),
                    soft_wrap=True)
    except Unavailable as exc:
        return _unavailable(exc)
    return 0


def hits_table(result, *, title: str, attributes: bool = True) -> Table:
    """Rank, score, camera, time (UTC), track, top attributes (if ``attributes``) and id of
    each hit. No column is cut: the id is what GetDetection takes."""
    # light rules, no outer border: the columns fit 80 characters
    table = Table(box=box.MINIMAL, show_edge=False, pad_edge=False,
                  title=f"{escape(title)}  [dim]({len(result.hits)} hits, model "
                        f"{result.model_version}, encode {result.encode_ms:.0f} ms, "
                        f"search {result.search_ms:.0f} ms)[/]")
    columns = [("rank", "right"), ("score", "right"), ("camera", "left"), ("time (UTC)", "left"),
               ("track", "right"), ("top attributes", "left"), ("id", "right")]
    id_width = max((len(str(h.detection.id)) for h in result.hits), default=2)
    for name, just in columns:
        if name != "top attributes" or attributes:
            # camera ids and attributes fold onto more lines when the width runs short;
            # the rest keep one line, and the id its full width
            table.add_column(name, justify=just, no_wrap=name not in ("camera", "top attributes"),
                             overflow="fold", min_width=id_width if name == "id" else None)
    for rank, hit in enumerate(result.hits, 1):
        d = hit.detection
        cells = [str(rank), f"{hit.score:.3f}", d.camera_id, format_ts(d.ts_us)[:19],
                 str(d.track_id)]
        if attributes:
            cells.append(", ".join(f"{k} {p:.2f}" for k, p in d.top_attributes(3)))
        table.add_row(*cells, str(d.id))
    return table


def format_ts(ts_us: int) -> str:
    return dt.datetime.fromtimestamp(ts_us / 1e6, tz=dt.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S.%f")[:-3]


def write_sheets(gw, result, out: pathlib.Path, query: str, n: int) -> tuple[pathlib.Path, ...]:
    """Fetch the top ``n`` crops (GetDetection with the crop) and write the HTML and PNG sheets."""
    import cv2
    import numpy as np
    from rich.progress import Progress

    from pedsearch.contact_sheet import contact_sheet, contact_sheet_html

    items = []
    missing: list[str] = []
    hits = result.hits[:n]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("fetching crops", total=len(hits))
        for rank, hit in enumerate(hits, 1):
            d = hit.detection
            try:
                jpeg = _fetch_crop(gw, d.id)
            except PedsearchError as exc:
                if isinstance(exc, Unavailable) and not isinstance(exc, ResourceExhausted):
                    raise  # the gateway or a service behind it is down: so is every later crop
                # one crop the gateway cannot or will not give (gone, unreadable in its store,
                # refused, rate-limited): a placeholder, not a lost search and sheet
                missing.append(f"#{rank} (id {d.id}): {exc.message}")
                jpeg = b""
            img = (cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                   if jpeg else None)
            if jpeg and img is None:
                missing.append(f"#{rank} (id {d.id}): the stored crop is not a readable image")
            items.append({"image": img, "title": f"#{rank} {hit.score:.3f}",
                          "subtitle": f"{d.camera_id} {format_ts(d.ts_us)[11:19]}",
                          "score": hit.score, "camera": d.camera_id, "time": d.ts_us / 1e6})
            progress.advance(task)
    html = contact_sheet_html(items, out / "contact_sheet.html", title=query)
    png = contact_sheet(items, out / "contact_sheet.png", cols=min(10, len(items)),
                        title=query)
    if missing:
        err_console.print(f"[yellow]warning:[/] {len(missing)} of {len(hits)} crops could not "
                          "be fetched or read and show as 'no image' on the sheet:",
                          soft_wrap=True)
        for line in missing[:5]:
            err_console.print(f"  {escape(line)}", soft_wrap=True)
    return html, png


def _patiently(call, *, tries: int = 3):
    """``call()``, waiting out the rate limit as the gateway asks, up to
    :data:`MAX_RATE_WAIT_S` a time (a sheet costs one GetDetection per crop, on top of the
    search, so back-to-back searches meet the limit)."""
    for _ in range(tries - 1):
        try:
            return call()
        except ResourceExhausted as exc:
            if exc.retry_after_s is None or exc.retry_after_s > MAX_RATE_WAIT_S:
                raise
            time.sleep(exc.retry_after_s)
    return call()


def _fetch_detection(gw, detection_id: int):
    """A detection with its crop JPEG."""
    return _patiently(lambda: gw.get_detection(detection_id, include_crop=True))


def _fetch_crop(gw, detection_id: int) -> bytes:
    return _fetch_detection(gw, detection_id).crop_jpeg


def cmd_watch(args) -> int:
    from gateway.client import Heartbeat

    _check_query(args)
    if args.attr and (args.text is not None or args.image is not None or args.like is not None):
        args._parser.error("a watch is one query: a text, --attr, --image or --like")
    if args.until is not None and args.until <= time.time() * 1e6:
        # it would run its whole duration and never match: that reads as "nobody came"
        args._parser.error(f"--until {format_ts(args.until)[:19]} UTC is not in the future: a "
                           "watch sees only new detections; its time range must end in the "
                           "future")
    _apply_mode(args)
    matches, tracks = 0, TrackLog()
    try:
        with _connect(args) as gw:
            example = _example(gw, args)
            until_s = _until_s(args)  # what --until leaves the watch, asked for now
            stream = gw.watch(args.text, attributes=args.attr, image=example.image,
                              threshold=args.threshold, cameras=args.camera,
                              since_us=args.since, until_us=args.until,
                              max_matches=args.max_matches, max_duration_s=args.duration,
                              skip_tracks=[example.track] if example.track else [])
            what = example.name or (args.text if args.text is not None else " ".join(
                f"{c.family}={','.join(c.values)}" for c in args.attr))
            if example.track:
                what += f" (its own track {example.track[1]} on {example.track[0]} skipped)"
            established = False
            try:
                with console.status("starting the watch...") as status:
                    for event in stream:
                        if not established:
                            # the gateway's first event: every detection indexed from now on
                            # is checked
                            established = True
                            console.print(f"watching for [bold]{escape(what)}[/] (score >= "
                                          f"{args.threshold}) at {escape(gw.address)}"
                                          f"{_watch_span(stream, args, until_s)}; "
                                          "Ctrl-C to stop", soft_wrap=True)
                        if isinstance(event, Heartbeat):
                            status.update(f"waiting for new detections... {event.scanned} "
                                          "checked so far")
                            continue
                        matches += 1
                        line = tracks.add(event)
                        if line:
                            console.print(line, soft_wrap=True)
                        else:
                            d = event.detection
                            status.update(f"track {d.track_id} on {d.camera_id} still in "
                                          f"view ({tracks.windows[tracks.key(d)]} matches)")
            except KeyboardInterrupt:
                stream.cancel()
                console.print(f"stopped after {matches} match(es){tracks.summary()}")
                return 0
            finally:
                stream.cancel()
    except Unavailable as exc:
        return _unavailable(exc)
    if args.max_matches and matches >= args.max_matches:
        console.print(f"the watch ended after {matches} match(es){tracks.summary()} "
                      "(--max-matches)")
    else:  # the gateway ends a stream by itself only then, or at the end of its duration
        console.print(f"the watch ended after {_watch_end(stream, args, until_s)}, with "
                      f"{matches} match(es){tracks.summary()}", soft_wrap=True)
    return 0


def _watch_span(stream, args, until_s: int | None) -> str:
    """`` for 600 s`` (what the gateway granted; a longer --duration it cut is said so), or ""
    from a gateway that does not say."""
    granted, cap = stream.duration_s, stream.max_duration_s
    if granted is None:
        return ""
    if _cut_by_until(granted, args, until_s):
        return f" for {granted} s (until --until, and a minute for its last detections)"
    if args.duration > granted:
        return (f" for {granted} s (--duration {args.duration} is beyond this gateway's limit "
                f"of {cap if cap is not None else granted} s)")
    return f" for {granted} s"


def _until_s(args) -> int | None:
    """Seconds a watch asked for now runs at most because of --until (the gateway's rule,
    :func:`gateway.convert.watch_duration`); None without --until."""
    if args.until is None:
        return None
    return math.ceil(args.until / 1e6 - time.time()) + WATCH_UNTIL_GRACE_S


def _cut_by_until(granted: int, args, until_s: int | None) -> bool:
    """Whether the gateway shortened the watch because nothing after --until can match
    (``until_s``: :func:`_until_s` when the watch was asked for)."""
    return (until_s is not None and granted < (args.duration or WATCH_DEFAULT_S)
            and abs(granted - until_s) <= 2)


def _watch_end(stream, args, until_s: int | None) -> str:
    """Why a stream the gateway ended itself ended: its duration ran out."""
    granted, cap = stream.duration_s, stream.max_duration_s
    if granted is None:  # a gateway that does not say what it granted
        return ("its duration (--duration, or the gateway's default: "
                f"{WATCH_DEFAULT_S} s unless configured)")
    if _cut_by_until(granted, args, until_s):
        return f"its {granted} s (its time range ended at --until)"
    limit = f"the gateway allows at most {cap} s" if cap is not None else "the gateway's limit"
    if not args.duration:
        return f"its {granted} s (the gateway's default; --duration sets another, {limit})"
    return f"its {granted} s (--duration; {limit})"


class TrackLog:
    """What ``pedsearch watch`` prints of its matches: one line per person's track.

    The indexer stores a track window (a few seconds) as one detection, so a person who stays
    in view matches again and again. The first match of a track is a numbered line; a later
    one only when it scores above the track's best so far (a better view), else it is only
    counted.
    """

    def __init__(self) -> None:
        self.best: dict[tuple[str, int], float] = {}
        self.windows: dict[tuple[str, int], int] = {}

    @staticmethod
    def key(d) -> tuple[str, int]:
        return d.camera_id, int(d.track_id)

    def add(self, event) -> str | None:
        """The line to print for a match, or None when its track shows nothing new."""
        d = event.detection
        key = self.key(d)
        self.windows[key] = self.windows.get(key, 0) + 1
        best = self.best.get(key)
        if best is not None and event.score <= best:
            return None
        self.best[key] = event.score
        head = (f"[green]match {len(self.best)}[/]" if best is None else
                "  [dim]better view[/]")
        attrs = ", ".join(f"{k} {p:.2f}" for k, p in d.top_attributes(3))
        return (f"{head} score {event.score:.3f}  {d.camera_id}  {format_ts(d.ts_us)}  "
                f"track {d.track_id}  id {d.id}  {attrs}")

    def summary(self) -> str:
        return f" in {len(self.best)} track(s)" if self.best else ""


def cmd_cameras(args) -> int:
    try:
        with _connect(args) as gw:
            cams, version = gw.list_cameras()
    except Unavailable as exc:
        return _unavailable(exc)
    table = Table(title=f"cameras with stored detections (model {version})")
    for name in ("camera", "detections", "first (UTC)", "last (UTC)"):
        table.add_column(name, justify="right" if name == "detections" else "left")
    for c in cams:
        table.add_row(c.camera_id, str(c.detections), format_ts(c.first_ts_us),
                      format_ts(c.last_ts_us))
    console.print(table)
    return 0
