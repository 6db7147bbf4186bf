"""The ``imgrag`` command line."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer
from rich.console import Console

from pipeline.config import ConfigError, load_settings

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
            "--config", "-c", help="TOML profile (default: $IMGRAG_CONFIG or configs/default.toml)."
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
    ctx.obj = {"config": config}


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear line to stderr and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def settings_from(ctx: typer.Context):  # type: ignore[no-untyped-def]
    try:
        return load_settings(ctx.obj.get("config") if ctx.obj else None)
    except ConfigError as exc:
        raise fail(str(exc)) from None


@app.command("emulator")
def emulator_command(
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
    from pydantic import SecretStr, ValidationError

    from connectors.emulator import EmulatorOptions, EmulatorState, serve
    from connectors.errors import ConnectorError

    values: dict[str, object] = {
        "host": host, "model": model, "backend": backend, "latency_ms": latency_ms, "rpm": rpm,
        "tpm": tpm, "max_concurrency": max_concurrency, "fail_rate": fail_rate, "seed": seed,
        "image_only": image_only, "api_key": SecretStr(api_key) if api_key else None,
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
    except ConnectorError as exc:
        raise fail(str(exc)) from None
