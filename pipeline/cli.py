"""The ``imgrag`` command line.

Every command reaches the index through the one door (``door.py``): ``_through_door`` opens
it, and it decides whether this process or a running daemon answers. This module imports
only what parsing the command line needs; the engines (the store, the model, Pillow) load
when a command that uses them runs, so ``imgrag --help`` starts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from imgrag._errors import ConfigError, ImgragError
from imgrag.pipeline.config import Settings, load_settings
from imgrag.pipeline.names import printable
from rich.console import Console

if TYPE_CHECKING:
    from imgrag.pipeline.core import Core
    from imgrag.pipeline.door import Door
    from imgrag.pipeline.ingest import Indexer, Summary
    from imgrag.pipeline.retrieval import SearchHit
    from imgrag.pipeline.status import StatusReport

T = TypeVar("T")

app = typer.Typer(
    name="imgrag",
    help="Turn a folder of images into a searchable vector index.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _version() -> str:
    try:
        return version("imgrag")
    except PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"imgrag {_version()}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            help="TOML profile (default: $IMGRAG_CONFIG, else the user config file, "
            "else the packaged defaults).",
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="Where the index, journal and daemon record live (default: "
            "$IMGRAG_STATE_DIR, else the per-user data directory).",
            file_okay=False,
        ),
    ] = None,
    version_: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """Turn a folder of images into a searchable vector index."""
    ctx.obj = {"config": config, "state_dir": state_dir}


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear line to stderr and return the exit to raise."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def settings_from(ctx: typer.Context) -> Settings:
    from imgrag.pipeline.config import unknown_environment
    from rich.markup import escape

    for warning in unknown_environment():
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    try:
        obj = ctx.obj or {}
        return load_settings(obj.get("config"), state_dir=obj.get("state_dir"))
    except ConfigError as exc:
        raise fail(str(exc)) from None


def hoist_config(argv: list[str]) -> list[str]:
    """``imgrag status --config x.toml`` as ``imgrag --config x.toml status``: the option
    belongs to the group, and people type it after the command too."""
    out: list[str] = []
    moved: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out += argv[i:]
            break
        if arg in ("--config", "-c") and i + 1 < len(argv) and out:
            moved += [arg, argv[i + 1]]
            i += 2
            continue
        if arg.startswith("--config=") and out:
            moved.append(arg)
        else:
            out.append(arg)
        i += 1
    return moved + out


def run() -> None:
    """The ``imgrag`` console script. A mistyped command line (unknown option, bad value,
    missing argument) is one line naming the fix, not a usage box."""
    import sys

    try:
        code = app(args=hoist_config(sys.argv[1:]), prog_name="imgrag", standalone_mode=False)
    except typer.TyperException as exc:  # click's usage errors, as typer vendors them
        ctx = getattr(exc, "ctx", None)
        exit_code = int(getattr(exc, "exit_code", 1))
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(message)  # plain `imgrag`: the help
            code = 0
        else:
            where = getattr(ctx, "command_path", None) or "imgrag"
            fail(f"{message} (see {where} --help)" if exit_code == 2 else message)
            code = exit_code
    except typer.Abort:
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


@app.command("emulator")
def emulator_command(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default 8088; 0 picks a free one).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="IMGRAG_EMULATOR_API_KEY",
            show_envvar=True,
            help="Key required on 'api-key' or 'Authorization: Bearer'; none = open.",
        ),
    ] = None,
    model: Annotated[
        str, typer.Option(help="Model profile: Cohere-embed-v3-english, embed-v-4-0, ...")
    ] = "Cohere-embed-v3-english",
    backend: Annotated[
        str, typer.Option(help="auto (local model if it loads, else tiny) | local | tiny.")
    ] = "auto",
    latency_ms: Annotated[float, typer.Option(help="Simulated latency per request.")] = 0.0,
    rpm: Annotated[int, typer.Option(help="Requests per minute before 429 (0 = no limit).")] = 0,
    tpm: Annotated[int, typer.Option(help="Tokens per minute before 429 (0 = no limit).")] = 0,
    max_concurrency: Annotated[
        int, typer.Option(help="Concurrent requests before 429 (0 = no limit).")
    ] = 0,
    fail_rate: Annotated[float, typer.Option(help="Share of requests answered 500/503.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed for latency jitter and failures.")] = 0,
    image_only: Annotated[
        bool, typer.Option(help="Answer the text route with 404 (no text modality).")
    ] = False,
) -> None:
    """Serve the Azure AI Foundry Models embeddings API locally (for offline development)."""
    from imgrag.connectors.emulator import EmulatorOptions, EmulatorState, serve
    from pydantic import SecretStr, ValidationError

    values: dict[str, object] = {
        "host": host, "model": model, "backend": backend, "latency_ms": latency_ms, "rpm": rpm,
        "tpm": tpm, "max_concurrency": max_concurrency, "fail_rate": fail_rate, "seed": seed,
        "image_only": image_only, "api_key": SecretStr(api_key) if api_key else None,
        "cache_dir": _model_cache(ctx),
    }  # fmt: skip
    if port is not None:
        values["port"] = port
    try:
        options = EmulatorOptions.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise fail(f"--{'-'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']}") from None

    def ready(endpoint: str, state: EmulatorState) -> None:
        if state.dimension_note:
            err_console.print(f"[yellow]note:[/] {state.dimension_note}", highlight=False)
        if not options.auth_required:
            err_console.print("[yellow]note:[/] no --api-key given; every request is accepted")
        typer.echo(
            f"Foundry emulator ready: endpoint {endpoint} (model {state.profile.name}, "
            f"backend {state.backend_name}, {state.dimension} dimensions)"
        )  # click.echo flushes, so a parent process sees the line at once

    try:
        serve(options, ready)
    except ImgragError as exc:
        raise fail(str(exc)) from None


def _model_cache(ctx: typer.Context) -> Path | None:
    """The state directory's model cache, shared with the daemon; None (the connector's
    default) when the config cannot be read, which the emulator itself does not need."""
    obj = ctx.obj or {}
    try:
        settings = load_settings(obj.get("config"), state_dir=obj.get("state_dir"))
    except ConfigError:
        return None
    return _core(settings).paths.cache


# -- ingestion --------------------------------------------------------------------------------

DirArg = Annotated[
    Path,
    typer.Argument(help="The folder of images (default: ./inbox).", file_okay=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
SourceOpt = Annotated[
    str | None,
    typer.Option(
        "--source",
        help="Name a new folder's source (default: its folder name and a hash of its path).",
    ),
]


VerboseOpt = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="A line for each file: 'indexed PATH', 'failed PATH'."),
]


def _setup_logging(*, daemon: bool = False, verbose: bool = False) -> None:
    """The one log format (``logs.py``); the daemon logs what it does, commands only warnings."""
    import logging

    from imgrag.pipeline.logs import setup

    setup(err_console, level=logging.INFO if daemon else logging.WARNING, verbose=verbose)


def _log(line: str) -> None:
    import logging

    logging.getLogger("imgrag.daemon").info("%s", line)


def _check_dir(directory: Path, command: str = "ingest") -> Path:
    if not directory.is_dir():
        raise fail(
            f"{directory} is not a folder: create it, or name another (imgrag {command} DIR)"
        )
    return directory


def _blob_uri(argument: Path) -> str | None:
    """The az:// address an argument names (typer hands it over as a collapsed Path)."""
    text = str(argument)
    return "az://" + text[4:].lstrip("/") if text.startswith("az:/") else None


def _summary_line(name: str, s: Summary) -> str:
    failed = ", ".join(f"{n} {r}" for r, n in sorted(s.failed_by_reason.items()))
    return (
        f"{name}: {s.indexed} indexed, {s.reused} reused, {s.unchanged} unchanged, "
        f"{s.removed} removed, {s.failed} failed{f' ({failed})' if failed else ''}; "
        f"{s.requests} requests, {s.tokens} tokens in {s.seconds:.1f}s"
        + (f"; stopped early, {s.left} files left for the next run" if s.left else "")
    )


def _core(settings: Settings) -> Core:
    """The composition root for ``settings`` (loads the engines: see the module docstring)."""
    from imgrag.pipeline.core import Core

    return Core.build(settings)


def _say(line: str) -> None:
    err_console.print(line, highlight=False, markup=False, soft_wrap=True)


def _through_door(
    settings: Settings, work: Callable[[Door], Awaitable[T]], *, write: bool = False
) -> T:
    """Open the one door to the index, run ``work`` through it, close it. Known failures
    become one clear line and exit code 1."""
    from imgrag.pipeline.door import open_door

    async def run() -> T:
        door = await open_door(_core(settings), write=write, on_wait=_say)
        async with door:
            return await work(door)

    return _guarded(lambda: asyncio.run(run()))


def _board_track(settings: Settings, progress: bool) -> Any:
    """A progress board on a terminal (unless ``progress`` is off), else periodic lines."""
    from imgrag.pipeline.progress import Board

    return Board(
        err_console,
        interval=settings.ingest.progress_seconds,
        bar=progress and err_console.is_terminal,
    )


async def _ingest_through(
    door: Door,
    settings: Settings,
    target: str,
    *,
    name: str | None = None,
    prune: bool = False,
    retry: bool = False,
    progress: bool = True,
) -> Summary:
    """One pass through ``door``: here with a progress board, or by the daemon, with its
    pending count shown while it runs."""
    from imgrag.pipeline.door import DaemonDoor

    if isinstance(door, DaemonDoor):
        _say(f"the daemon (pid {door.client.info.pid}) owns the index: it runs this pass")
        return await _delegated_ingest(door, target, name, prune, retry, progress)
    board = _board_track(settings, progress)

    def track(ingestor: Indexer, what: str, source: str) -> Any:
        return board.track(ingestor, what, source)

    try:
        return await door.ingest(
            target, name=name, prune=prune, retry=retry, track=track, on_start=_stop_on_signals
        )
    finally:
        board.close()


def _stop_on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM/SIGINT: take no new files, flush, report what is left; a second one kills."""
    import signal

    loop = asyncio.get_running_loop()

    def first() -> None:
        stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)  # back to the default for a second signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, first)


def _warn_unreadable(summary: Summary) -> None:
    if summary.unreadable:
        shown = ", ".join(f"{f} ({why})" for f, why in list(summary.unreadable.items())[:5])
        err_console.print(
            f"[yellow]warning:[/] could not read {len(summary.unreadable)} folders: "
            f"{escape_markup(shown)}; nothing under them was removed (fix their permissions)",
            highlight=False,
            soft_wrap=True,
        )


def escape_markup(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _guarded(work: Callable[[], T]) -> T:
    """Run a command body; every imgrag error becomes one clear line and exit code 1."""
    try:
        return work()
    except ImgragError as exc:
        raise fail(str(exc)) from None


@app.command("ingest")
def ingest_command(
    ctx: typer.Context,
    directory: DirArg = Path("inbox"),
    json_: JsonOpt = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 2 when any file failed.")] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune", help="Confirm removing every indexed file when DIR has none any more."
        ),
    ] = False,
    source: SourceOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Reconcile DIR (its source, or the part of it DIR is) with the index once. DIR may be
    a blob container: az://ACCOUNT/CONTAINER, optionally with /PREFIX."""
    settings = settings_from(ctx)
    _setup_logging(verbose=verbose)
    blob = _blob_uri(directory)
    if blob is None:
        _check_dir(directory)
    target = blob or str(directory)
    summary = _through_door(
        settings,
        lambda door: _ingest_through(
            door, settings, target, name=source, prune=prune, progress=not json_
        ),
        write=True,
    )
    _warn_unreadable(summary)
    if json_:
        typer.echo(summary.model_dump_json(indent=2))
    else:
        typer.echo(_summary_line("ingest", summary))
    if strict and summary.failed:
        raise typer.Exit(2)


async def _delegated_ingest(
    door: Door, target: str, name: str | None, prune: bool, retry: bool, progress: bool
) -> Summary:
    """The daemon runs the pass; meanwhile its status shows how many files are pending."""
    from rich.progress import Progress, SpinnerColumn

    bar = Progress(
        SpinnerColumn(),
        "[progress.description]{task.description}",
        console=err_console,
        transient=True,
        disable=not progress,
    )
    task = bar.add_task("the daemon is indexing", total=None)
    run = asyncio.create_task(door.ingest(target, name=name, prune=prune, retry=retry))
    with bar:
        while not run.done():
            await asyncio.wait({run}, timeout=1.0)
            if run.done() or not progress:
                break
            with contextlib.suppress(Exception):  # progress only: the pass's answer decides
                report = await door.status()
                bar.update(task, description=f"the daemon is indexing: {report.pending} pending")
    return await run


@app.command("retry")
def retry_command(
    ctx: typer.Context, directory: DirArg = Path("inbox"), json_: JsonOpt = False
) -> None:
    """Forget recorded failures and try those files again."""
    settings = settings_from(ctx)
    _setup_logging()
    _check_dir(directory, "retry")
    target = str(directory)
    summary = _through_door(
        settings,
        lambda door: _ingest_through(door, settings, target, retry=True, progress=not json_),
        write=True,
    )
    _warn_unreadable(summary)
    if json_:
        typer.echo(json.dumps({**summary.model_dump()}, indent=2))
    else:
        typer.echo(f"retrying {summary.cleared} failed files")
        typer.echo(_summary_line("retry", summary))


def _announce(name: str, summary: Summary) -> None:
    if (
        name == "reconcile"
        or summary.indexed
        or summary.reused
        or summary.removed
        or summary.failed
    ):
        _log(_summary_line(name, summary))


@app.command("watch")
def watch_command(
    ctx: typer.Context,
    directories: Annotated[
        list[Path] | None,
        typer.Argument(help="The folders of images (default: ./inbox).", file_okay=False),
    ] = None,
    source: SourceOpt = None,
    polling: Annotated[
        bool, typer.Option("--polling", help="Poll instead of OS events (network drives).")
    ] = False,
    no_api: Annotated[
        bool, typer.Option("--no-api", help="Do not serve the local HTTP API.")
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Reconcile each DIR, then index every change until SIGINT/SIGTERM. With a daemon
    already running, it is asked to watch the folders too. A DIR may be a blob container,
    az://ACCOUNT/CONTAINER, optionally with /PREFIX; the config's blob sources are watched too."""
    settings = settings_from(ctx)
    _setup_logging(daemon=True, verbose=verbose)
    blobs = _guarded(lambda: _blob_sources(settings, directories or []))
    folders = [d for d in directories or [] if _blob_uri(d) is None]
    if not directories and not blobs:
        folders = [Path("inbox")]
    for directory in folders:
        _check_dir(directory, "watch")
    if source is not None and len(folders) > 1:
        raise fail("--source names one folder: watch the others without it")
    if _through_door(settings, lambda door: _watch_through(door, folders, source, blobs)):
        return
    _run_daemon(settings, folders, source, blobs, polling=polling, api=not no_api)


async def _watch_through(
    door: Door, folders: list[Path], source: str | None, blobs: list[Any]
) -> bool:
    """With a daemon running, ask it to watch ``folders``; False when this process is to
    become the daemon."""
    from imgrag.pipeline.door import DaemonDoor

    if not isinstance(door, DaemonDoor):
        return False
    pid = door.client.info.pid
    if blobs:
        raise fail(
            f"a daemon (pid {pid}) already owns the index: stop it, then watch "
            "the blob sources and folders together"
        )
    for directory in folders:
        added = await door.watch(directory, source)
        state = "now watches" if added.get("added") else "already watches"
        typer.echo(
            f"the daemon (pid {pid}) {state} {added.get('root')} as source {added.get('name')}"
        )
    return True


def _run_daemon(
    settings: Settings,
    folders: list[Path],
    source: str | None,
    blobs: list[Any],
    *,
    polling: bool,
    api: bool,
) -> None:
    """This process becomes the daemon of the index, until SIGINT/SIGTERM."""
    from imgrag.pipeline.watch import Hooks, run_watch

    core = _core(settings)
    if source is not None:
        _guarded(lambda: core.registry.resolve(folders[0], source))
    board = _board_track(settings, True)
    hooks = Hooks(announce=_log, on_summary=_announce, board=board)
    try:
        _guarded(
            lambda: asyncio.run(
                run_watch(core, folders, polling=polling, api=api, hooks=hooks, blobs=blobs)
            )
        )
    finally:
        board.close()


@app.command("serve")
def serve_command(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default: [api] host).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port (default: [api] port; 0 picks a free one).", min=0, max=65535),
    ] = None,
) -> None:
    """Serve the gallery and search API for the index without ingesting: a collection on a
    Qdrant server, or a stopped daemon's store. A running daemon serves its own."""
    from imgrag.pipeline.api_token import api_token, gallery_link
    from imgrag.pipeline.serve import run_serve

    settings = settings_from(ctx)
    _setup_logging()

    def ready(url: str) -> None:
        token = api_token(settings)
        first = f", opened once as {gallery_link(url, token)}" if token is not None else ""
        typer.echo(f"gallery on {url}/ ({settings.store.kind}:{settings.store.collection})"
                   f"{first}; Ctrl+C stops")  # fmt: skip

    core = _core(settings)
    _guarded(lambda: asyncio.run(run_serve(core, host=host, port=port, ready=ready)))


def _blob_sources(settings: Settings, arguments: list[Path]) -> list[Any]:
    """The blob sources to watch: az:// arguments and the config's [[sources]] entries."""
    uris = [u for a in arguments if (u := _blob_uri(a)) is not None]
    if not uris and not settings.sources:
        return []
    from imgrag.pipeline.blob_source import blob_configs, config_for_uri, location_uri

    configs = blob_configs(settings)
    known = {location_uri(c) for c in configs}
    return configs + [config_for_uri(settings, u) for u in uris if u.rstrip("/") not in known]


# -- retrieval and status -------------------------------------------------------------------


MinScoreOpt = Annotated[
    float | None,
    typer.Option("--min-score", help="Hide hits scoring below this (e.g. the weak ones)."),
]
OpenOpt = Annotated[bool, typer.Option("--open", help="Open the top hit in the default viewer.")]
FilterOpt = Annotated[
    list[str] | None,
    typer.Option("--filter", help="key=value on the payload (folder, tags, camera, ...)."),
]


def _readable_image(image: Path) -> None:
    """Fail with one line unless ``image`` is a file Pillow can read."""
    from PIL import Image, UnidentifiedImageError

    if not image.is_file():
        raise fail(f"--image {image}: no such file")
    try:
        with Image.open(image) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise fail(
            f"{image}: not an image imgrag can read ({type(exc).__name__}); "
            "give a JPEG, PNG, WebP, GIF, BMP, TIFF or HEIC file"
        ) from None


def _run_search(ctx: typer.Context, query_fields: dict[str, object]) -> list[SearchHit]:

    from imgrag.pipeline.query import build_query

    try:
        query = build_query(**query_fields)
    except ImgragError as exc:
        raise fail(str(exc)) from None
    _setup_logging()
    return _through_door(settings_from(ctx), lambda door: door.search(query))


def _show_hits(
    hits: list[SearchHit],
    *,
    json_: bool,
    open_top: bool,
    filtered: bool,
    min_score: float | None,
) -> None:
    """The hits as JSON or a table of clickable absolute paths; a hint when there are none."""
    from rich.table import Table
    from rich.text import Text

    if json_:
        typer.echo(json.dumps([h.model_dump(mode="json") for h in hits], indent=2))
    elif not hits:
        if filtered:
            hint = "no image matches the filters: check --filter (imgrag status lists folders)"
        elif min_score is not None:
            hint = f"nothing scored {min_score} or more: lower --min-score"
        else:
            hint = "the index is empty: run 'imgrag ingest FOLDER' or 'imgrag watch FOLDER'"
        typer.echo(f"no matches ({hint})")
        return
    else:
        if all(h.weak for h in hits):
            typer.echo(
                "nothing relevant found: every hit is below the model's relevance floor "
                "(the closest are marked weak)"
            )
        captions = any(h.payload.get("caption") for h in hits)
        tags = any(h.payload.get("tags") for h in hits)
        weak = any(h.weak for h in hits)
        table = Table("rank", "score", box=None)
        if weak:
            table.add_column("")
        table.add_column("path", overflow="fold")
        if captions:
            table.add_column("caption", overflow="fold")
        if tags:
            table.add_column("tags", overflow="fold")
        for rank, hit in enumerate(hits, 1):
            path = Path(hit.abs_path)
            link = path.as_uri() if path.is_absolute() else None
            row: list[str | Text] = [str(rank), f"{hit.score:.3f}"]
            if weak:
                row.append("weak" if hit.weak else "")
            row.append(Text(hit.abs_path, style=f"link {link}" if link else ""))
            if captions:
                row.append(Text(str(hit.payload.get("caption") or "")))
            if tags:
                row.append(Text(", ".join(str(t) for t in hit.payload.get("tags") or [])))
            table.add_row(*row)
        Console(soft_wrap=True).print(table)
    if open_top and hits and typer.launch(hits[0].abs_path) != 0:
        raise fail(f"could not open {hits[0].abs_path}: no default viewer answered")


@app.command("search")
def search_command(
    ctx: typer.Context,
    text: Annotated[str | None, typer.Argument(help="What to look for, in words.")] = None,
    image: Annotated[
        Path | None, typer.Option("--image", help="Search by this example image.", dir_okay=False)
    ] = None,
    similar_to: Annotated[
        str | None,
        typer.Option("--similar-to", help="Images like this indexed one (path in the folder)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 10,
    filters: FilterOpt = None,
    min_score: MinScoreOpt = None,
    unique: Annotated[bool, typer.Option("--unique", help="Collapse identical images.")] = False,
    open_top: OpenOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Search the index by text, by an example image, by both, or by an indexed image."""
    from imgrag.pipeline.filters import parse_cli_filters

    if text is None and image is None and similar_to is None:
        raise fail(
            "give TEXT, --image PATH, both, or --similar-to PATH (imgrag search 'a red car')"
        )
    if image is not None:
        _readable_image(image)
    try:
        flt = parse_cli_filters(filters or []) or None
    except ImgragError as exc:
        raise fail(str(exc)) from None
    hits = _run_search(
        ctx,
        {
            "text": text,
            "image": image,
            "similar_to": similar_to,
            "limit": limit,
            "filter": flt,
            "min_score": min_score,
            "unique": unique,
        },
    )
    _show_hits(hits, json_=json_, open_top=open_top, filtered=flt is not None, min_score=min_score)


@app.command("similar")
def similar_command(
    ctx: typer.Context,
    path: Annotated[
        str,
        typer.Argument(help="An image file, or an indexed image's path relative to its folder."),
    ],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 10,
    filters: FilterOpt = None,
    min_score: MinScoreOpt = None,
    open_top: OpenOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Images that look like PATH. A file on disk is searched by its pixels (itself left
    out); any other PATH must be an indexed image's path in its folder."""
    from imgrag.pipeline.filters import parse_cli_filters

    try:
        flt = parse_cli_filters(filters or []) or None
    except ImgragError as exc:
        raise fail(str(exc)) from None
    file = Path(path)
    fields: dict[str, object] = {"limit": limit, "filter": flt, "min_score": min_score}
    if file.is_file():
        _readable_image(file)
        fields.update(image=file, limit=limit + 1)
        same = file.resolve()
        hits = [h for h in _run_search(ctx, fields) if Path(h.abs_path).resolve() != same][:limit]
    elif file.exists():
        raise fail(f"{path}: not a file; give an image file or an indexed image's path")
    else:
        fields["similar_to"] = path
        hits = _run_search(ctx, fields)
    _show_hits(hits, json_=json_, open_top=open_top, filtered=flt is not None, min_score=min_score)


@app.command("status")
def status_command(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Argument(help="One source: its name, or a folder (default: every source)."),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """What is indexed, pending and failed, per source, and why. Never calls the embedder."""
    from imgrag.pipeline.status import deployment_lines, pending_words

    settings = settings_from(ctx)
    report, where = _through_door(settings, lambda door: _status(door, target))
    if json_:
        typer.echo(report.model_dump_json(indent=2))
        return
    typer.echo(
        f"{report.indexed} indexed, {report.pending_words()}, {report.failed} failed ({where})"
    )
    for src in report.sources:
        pending = pending_words(src.pending, src.pending_live, src.pending_as_of)
        typer.echo(
            f"  {printable(src.name)}: {src.indexed} indexed, {pending}, "
            f"{src.failed} failed; {printable(src.root)}"
            + ("" if src.reachable else " (not reachable)")
        )
    for root, count in report.legacy.items():
        typer.echo(
            f"  {count} files from before sources, recorded for {printable(root)}: "
            f"`imgrag ingest {printable(root)}` adopts them"
        )
    graph_line = _graph_line(report.store.get("graph"))
    if graph_line:
        typer.echo(graph_line)
    if report.health == "degraded":
        typer.echo("degraded: " + "; ".join(printable(p) for p in report.problems))
    elif report.health == "stopping":
        typer.echo("stopping: the daemon is flushing its work")
    if report.waiting_for:
        typer.echo(f"waiting: {printable(report.waiting_for)}")
    for reason, count in report.failed_by_reason.items():
        typer.echo(f"  {count} {printable(reason)}")
    for failure in report.failures:  # names and messages escaped: one line per failure
        typer.echo(
            f"  {printable(failure.path)}: {printable(failure.reason)}: "
            f"{printable(failure.message)}"
        )
    if report.usage.requests:
        u = report.usage
        typer.echo(
            f"usage: {u.requests} requests, {u.images} images, {u.tokens} tokens, "
            f"{u.retries} retries, {u.throttled} throttled"
        )
        for line in deployment_lines(u):
            typer.echo(printable(line))


def _graph_line(graph: Any) -> str | None:
    """One line on the search graph, only when part of the index is outside it."""
    if not isinstance(graph, dict) or not (graph.get("outside") or graph.get("building")):
        return None
    line = (
        f"search graph: {graph.get('in_graph', 0)} of {graph.get('points', 0)} points; "
        f"{graph.get('outside', 0)} are searched one by one"
    )
    if graph.get("building"):
        took, expected = graph.get("build_seconds"), graph.get("build_expected_seconds")
        line += f"; a build has run {took or 0:.0f} s"
        line += f" of about {expected:.0f} s" if expected else ""
    return line


async def _status(door: Door, target: str | None) -> tuple[StatusReport, str]:
    report = await door.status(target)
    daemon = report.daemon or {}
    if daemon.get("pid"):  # the sources it watches now, not the one it started with
        roots = ", ".join(printable(str(r)) for r in daemon.get("roots") or []) or "nothing"
        return report, f"daemon pid {daemon['pid']} watching {roots}"
    return report, door.where


@app.command("failures")
def failures_command(
    ctx: typer.Context,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many, newest first.")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many to show.")] = 50,
    json_: JsonOpt = False,
) -> None:
    """Every file that failed and why, a page at a time (status shows the newest ten)."""
    settings = settings_from(ctx)
    page = _through_door(settings, lambda door: door.failures(offset, limit))
    if json_:
        typer.echo(page.model_dump_json(indent=2))
        return
    shown = len(page.failures)
    first = page.offset + 1 if shown else page.offset
    typer.echo(f"{page.total} failed; showing {first}-{page.offset + shown}, newest first")
    for failure in page.failures:  # names and messages escaped: one line per failure
        typer.echo(
            f"  {printable(failure.path)}: {printable(failure.reason)}: "
            f"{printable(failure.message)}"
        )
    if page.offset + shown < page.total:
        typer.echo(f"more: imgrag failures --offset {page.offset + shown}")


@app.command("doctor")
def doctor_command(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """Ask the embedder what it serves (one small request) and check it against the index.
    Searches never ask: they trust what the collection recorded when it was made."""
    from imgrag.pipeline.doctor import checkup

    settings = settings_from(ctx)
    _setup_logging()
    found = _guarded(lambda: asyncio.run(checkup(_core(settings))))
    if json_:
        typer.echo(found.model_dump_json(indent=2))
    else:
        e, c = found.embedder, found.collection
        typer.echo(f"embedder: {e['provider']} {e['model']} ({e['dimension']} dims) answers")
        typer.echo(
            f"index: {c['model']} ({c['dimension']} dims), {found.answered_by}"
            if c.get("model")
            else f"index: no collection yet ({found.answered_by})"
        )
        for problem in found.problems:
            typer.echo(f"problem: {problem}")
        typer.echo("ok" if found.ok else "not ok")
    if not found.ok:
        raise typer.Exit(1)


@app.command("sources")
def sources_command(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """The sources of the index: name, root, counts, and whether the root is reachable."""
    from imgrag.pipeline.status import pending_words

    settings = settings_from(ctx)
    report, _ = _through_door(settings, lambda door: _status(door, None))
    if json_:
        typer.echo(json.dumps([s.model_dump() for s in report.sources], indent=2))
        return
    if not report.sources:
        typer.echo("no sources yet: imgrag ingest DIR adds one")
    for src in report.sources:
        typer.echo(
            f"{printable(src.name)}\t{printable(src.root)}\t{src.indexed} indexed, "
            f"{pending_words(src.pending, src.pending_live, src.pending_as_of)}, "
            f"{src.failed} failed"
            + ("\twatched" if src.watched else "")
            + ("" if src.reachable else "\tnot reachable")
        )


@app.command("forget")
def forget_command(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(help="The source (name or root folder) whose points to remove.")
    ],
    json_: JsonOpt = False,
) -> None:
    """Remove one source's points, failures and registration; other sources are untouched."""
    settings = settings_from(ctx)
    _setup_logging()
    result = _through_door(settings, lambda door: door.forget(source), write=True)
    if json_:
        typer.echo(result.model_dump_json(indent=2))
    else:
        typer.echo(f"forgot {result.source}: {result.removed} points removed")


if __name__ == "__main__":
    run()
