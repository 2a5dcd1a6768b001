"""`mdpeer sim serve` (the reference MigratoryData server) and `mdpeer sim publish`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

app = typer.Typer(
    help="The reference MigratoryData server (documented REST interface) and a publisher.",
    no_args_is_help=True,
)


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(1)


def _token(value: str | None, path: Path | None, option: str) -> str | None:
    """A token from its value or its file; never echoed (it is a secret)."""
    if value is not None and path is not None:
        _fail(f"give either {option} or {option}-file, not both")
    if path is None:
        return value
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        _fail(f"{option}-file={str(path)!r}: cannot read: {exc.strerror or exc}")
    if not text:
        _fail(f"{option}-file={str(path)!r}: the file is empty")
    return text


def _env(name: str) -> str:
    return f"MDPEER_SIM_{name}"


def _opt(name: str, help_text: str, *flags: str) -> Any:
    """An option that falls back to ``MDPEER_SIM_<NAME>``."""
    return typer.Option(*flags, envvar=_env(name), help=help_text)


@app.command()
def serve(  # noqa: PLR0917 - typer maps parameters to options
    host: Annotated[str, typer.Option(envvar=_env("HOST"), help="Interface to listen on.")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int, typer.Option(envvar=_env("PORT"), help="Port (0 = a free one; it is printed).")
    ] = 8800,
    token_sub: Annotated[
        str | None,
        typer.Option(envvar=_env("TOKEN_SUB"), help="Token consume requires (none = open)."),
    ] = None,
    token_sub_file: Annotated[
        Path | None,
        typer.Option(envvar=_env("TOKEN_SUB_FILE"), help="Read --token-sub from a file."),
    ] = None,
    token_pub: Annotated[
        str | None,
        typer.Option(envvar=_env("TOKEN_PUB"), help="Token produce requires (none = open)."),
    ] = None,
    token_pub_file: Annotated[
        Path | None,
        typer.Option(envvar=_env("TOKEN_PUB_FILE"), help="Read --token-pub from a file."),
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(envvar=_env("ADMIN_TOKEN"), help="Token /admin/ requires (none = open)."),
    ] = None,
    max_message_size: Annotated[
        int, typer.Option(envvar=_env("MAX_MESSAGE_SIZE"), help="Largest content, bytes.")
    ] = 65536,
    cache_size: Annotated[
        int, typer.Option(envvar=_env("CACHE_SIZE"), help="Messages cached per subject.")
    ] = 1000,
    cache_expire: Annotated[
        float, typer.Option(envvar=_env("CACHE_EXPIRE"), help="Seconds a message stays cached.")
    ] = 180.0,
    seq_inclusive: Annotated[
        bool,
        typer.Option(
            "--seq-inclusive/--seq-exclusive",
            envvar=_env("SEQ_INCLUSIVE"),
            help="consume epoch=E&seq=Q returns seq >= Q (inclusive) or seq > Q (exclusive).",
        ),
    ] = True,
    max_per_response: Annotated[
        int,
        typer.Option(
            envvar=_env("MAX_PER_RESPONSE"), help="Messages per consume response (0 = no limit)."
        ),
    ] = 0,
    latency_ms: Annotated[
        int, typer.Option(envvar=_env("LATENCY_MS"), help="Injected delay per REST request.")
    ] = 0,
    fail_rate: Annotated[
        float,
        typer.Option(envvar=_env("FAIL_RATE"), help="Fraction of REST requests answered 503."),
    ] = 0.0,
    drop_rate: Annotated[
        float,
        typer.Option(
            envvar=_env("DROP_RATE"), help="Fraction of REST connections closed unanswered."
        ),
    ] = 0.0,
    seed: Annotated[
        int | None, typer.Option(envvar=_env("SEED"), help="Seed of the fault randomness.")
    ] = None,
    notify: Annotated[
        bool,
        _opt(
            "NOTIFY", "Serve /x-mdpeer/notify (ours, not MigratoryData's).", "--notify/--no-notify"
        ),
    ] = True,
    notify_drop_rate: Annotated[
        float, _opt("NOTIFY_DROP_RATE", "Fraction of doorbells never sent.")
    ] = 0.0,
    notify_delay_ms: Annotated[
        int, _opt("NOTIFY_DELAY_MS", "Hold each doorbell back 0..N ms.")
    ] = 0,
    first_epoch: Annotated[
        int, _opt("FIRST_EPOCH", "Epoch of every new subject (a restart: a new one).")
    ] = 1,
    generate_prefix: Annotated[
        str | None,
        typer.Option(
            envvar=_env("GENERATE_PREFIX"),
            help="Run the built-in generator on PREFIX/1..PREFIX/N (no HTTP per message).",
        ),
    ] = None,
    generate_count: Annotated[
        int, typer.Option(envvar=_env("GENERATE_COUNT"), help="Generator: subjects.")
    ] = 100,
    generate_rate: Annotated[
        float,
        typer.Option(
            envvar=_env("GENERATE_RATE"), help="Generator: msgs/s in total (0 = flat out)."
        ),
    ] = 1000.0,
    generate_size: Annotated[
        int, typer.Option(envvar=_env("GENERATE_SIZE"), help="Generator: content bytes.")
    ] = 100,
    generate_total: Annotated[
        int | None,
        typer.Option(envvar=_env("GENERATE_TOTAL"), help="Generator: stop after this many."),
    ] = None,
) -> None:
    """Run the reference server until SIGTERM/SIGINT; prints `listening on http://HOST:PORT`."""
    import asyncio

    from peer.dev.sim.server import GeneratorSpec, SimConfig
    from peer.dev.sim.server import serve as run_server

    try:
        config = SimConfig(
            host=host,
            port=port,
            token_sub=_token(token_sub, token_sub_file, "--token-sub"),
            token_pub=_token(token_pub, token_pub_file, "--token-pub"),
            admin_token=admin_token,
            max_message_size=max_message_size,
            cache_size=cache_size,
            cache_expire_s=cache_expire,
            seq_inclusive=seq_inclusive,
            max_per_response=max_per_response,
            latency_ms=latency_ms,
            fail_rate=fail_rate,
            drop_rate=drop_rate,
            seed=seed,
            notify=notify,
            notify_drop_rate=notify_drop_rate,
            notify_delay_ms=notify_delay_ms,
            first_epoch=first_epoch,
        )
        spec = None
        if generate_prefix is not None:
            spec = GeneratorSpec(
                prefix=generate_prefix,
                count=generate_count,
                rate=generate_rate,
                size=generate_size,
                total=generate_total,
            )
    except ValueError as exc:
        _fail(str(exc))

    def announce(url: str) -> None:
        typer.echo(f"listening on {url}")
        sys.stdout.flush()
        entitlement = ", ".join(
            f"{name} {'token' if on else 'open'}"
            for name, on in (("consume", config.token_sub), ("produce", config.token_pub))
        )
        typer.echo(
            f"reference server: {entitlement}; cache {config.cache_size} msgs / "
            f"{config.cache_expire_s:g} s per subject; seq "
            f"{'inclusive' if config.seq_inclusive else 'exclusive'}"
            + ("; notification channel on" if config.notify else "")
            + (f"; generator on {generate_prefix}/1..{generate_count}" if spec else ""),
            err=True,
        )

    try:
        asyncio.run(run_server(config, generator=spec, announce=announce))
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


@app.command()
def publish(  # noqa: PLR0917 - typer maps parameters to options
    server: Annotated[
        str,
        typer.Option(
            envvar=_env("SERVER"),
            help="HOST:PORT or http(s)://HOST[:PORT], as one entry of `mdpeer run --servers`.",
        ),
    ] = "http://127.0.0.1:8800",
    subjects: Annotated[
        str, typer.Option(help="Comma-separated subjects, e.g. /a/1,/a/2.")
    ] = "/mdpeer/demo",
    token: Annotated[
        str | None,
        typer.Option(envvar=_env("TOKEN"), help="Entitlement token (sent as token=...)."),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(envvar=_env("TOKEN_FILE"), help="Read --token from a file.")
    ] = None,
    count: Annotated[int, typer.Option(help="Messages per subject.")] = 10,
    rate: Annotated[
        float, typer.Option(help="Messages/s, all subjects together (0 = flat out).")
    ] = (0.0),
    size: Annotated[int, typer.Option(help="Content bytes per message.")] = 100,
    concurrency: Annotated[int, typer.Option(help="Subjects published in parallel.")] = 16,
    timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 10.0,
    retained: Annotated[bool, typer.Option("--retained/--not-retained")] = True,
    qos: Annotated[str, typer.Option(help="standard or guaranteed.")] = "guaranteed",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Publish through REST produce and report per subject what was published.

    Exit 1 when publishing was denied (DENY), the server is unreachable or refused a subject;
    other non-OK statuses and HTTP errors are counted in the report (exit 0).
    """
    from peer.dev.sim.publish import publish as run_publish

    names = [s.strip() for s in subjects.split(",") if s.strip()]
    try:
        report = run_publish(
            server,
            names,
            token=_token(token, token_file, "--token"),
            count=count,
            rate=rate,
            size=size,
            concurrency=concurrency,
            timeout_s=timeout,
            retained=retained,
            qos=qos,
        )
    except ValueError as exc:
        _fail(str(exc))
    answered = any(rep.statuses for rep in report.subjects.values())
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    elif answered or report.failure is None:
        data = report.as_dict()
        typer.echo(
            f"published to {report.server} in {data['elapsed_s']} s"
            + (f" ({data['rate']} msg/s)" if data["rate"] is not None else "")
        )
        width = max(len(s) for s in report.subjects)
        for subject, rep in report.subjects.items():
            statuses = " ".join(f"{k} {v}" for k, v in sorted(rep.statuses.items()))
            last = "-" if rep.last is None else f"{rep.last[0]}:{rep.last[1]}"
            typer.echo(
                f"  {subject:<{width}}  sent {rep.sent}  {statuses or 'no answer'}"
                f"  errors {rep.errors}  last {last}"
            )
        totals = report.totals()
        typer.echo("total: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
        for sample in report.error_samples:
            typer.echo(f"  error sample: {sample}", err=True)
    if report.failure is not None:
        _fail(report.failure)
