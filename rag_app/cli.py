"""The ``rag`` command line: a thin face over :class:`rag_app.service.RagService`.

Exit codes: 0 ok, 1 an error (or some file failed to ingest), 2 usage error. User mistakes print one line
(what is wrong — what to do), never a stack trace; ``-v`` shows more.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from rag_app.errors import RagError
from rag_app.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """Turn the application's named errors into one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RagError as exc:
            click.secho(f"Error: {exc.friendly()}", fg="red", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def _quiet_libraries() -> None:
    # Model loading progress bars and library chatter are not for CLI users.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--profile", help="Named settings profile (e.g. chinese-alpaca-2).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML settings file.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where the data lives [RAG_DATA_DIR].")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.pass_context
@friendly_errors
def cli(
    ctx: click.Context, profile: str | None, config_file: str | None, data_dir: str | None, verbose: int
) -> None:
    """Private, local question answering over your documents."""
    from rag_app.service import RagService

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    overrides: dict[str, Any] = {}
    if data_dir:
        overrides["data_dir"] = data_dir
    settings = Settings.load(config_file=config_file, profile=profile, **overrides)
    ctx.obj = RagService(settings)


def _service(ctx: click.Context) -> Any:
    return ctx.obj


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--kb", "knowledge_base", help="Knowledge base to add to (default: 'default').")
@click.option(
    "--password", "passwords", multiple=True, metavar="FILE=PASSWORD", help="Password of an encrypted PDF."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
@friendly_errors
def ingest(
    ctx: click.Context, paths: tuple[str, ...], knowledge_base: str | None, passwords: tuple[str, ...], quiet: bool
) -> None:
    """Add files and folders (recursively) to a knowledge base."""
    from tqdm import tqdm

    from ingest.pipeline import ProgressEvent

    pw: dict[str, str] = {}
    for item in passwords:
        name, sep, secret = item.partition("=")
        if not sep:
            raise click.BadParameter("use FILE=PASSWORD", param_hint="--password")
        pw[name] = secret
    service = _service(ctx)
    bar: tqdm[Any] | None = None

    def progress(event: ProgressEvent) -> None:
        nonlocal bar
        if event.stage == "waiting":
            click.echo(f"Busy: {event.message}", err=True)
        if quiet:
            return
        if event.stage == "start":
            bar = tqdm(total=event.files_total, unit="file", file=sys.stderr, dynamic_ncols=True)
        elif bar is not None and event.stage in ("file", "chunks"):
            bar.n = event.files_done
            bar.set_postfix_str(f"{event.chunks_done} chunks {event.current[-40:]}", refresh=False)
            bar.refresh()
        elif bar is not None and event.stage == "done":
            bar.close()

    report = service.ingest(list(paths), knowledge_base=knowledge_base, progress=progress, passwords=pw)
    for item in report.files:
        if item.status in ("failed", "skipped"):
            click.secho(f"{item.status}: {item.reason}", fg="red" if item.status == "failed" else "yellow")
        elif item.status == "duplicate":
            click.echo(f"duplicate: {item.path}: {item.reason}")
        for warning in item.warnings:
            click.secho(f"warning: {item.path}: {warning}", fg="yellow")
    click.echo(f"Knowledge base '{report.knowledge_base}': {report.summary()}")
    if report.failed:
        sys.exit(1)


def _print_sources(sources: list[dict[str, Any]]) -> None:
    if not sources:
        return
    click.echo("\nSources:")
    for src in sources:
        click.echo(f"  [{src['index']}] {src['label']} — {src['snippet']}")


def _ask_once(chain: Any, question: str, history: list[tuple[str, str]], hide_source: bool) -> str:
    sources: list[dict[str, Any]] = []
    parts: list[str] = []
    stream: Iterator[dict[str, Any]] = chain.stream({"question": question, "chat_history": history})
    for chunk in stream:
        if "sources" in chunk:
            sources = chunk["sources"]
        if "answer" in chunk:
            parts.append(chunk["answer"])
            click.echo(chunk["answer"], nl=False)
    click.echo()
    if not hide_source:
        _print_sources(sources)
    return "".join(parts).strip()


@cli.command()
@click.argument("question", required=False)
@click.option("--kb", "knowledge_base", help="Knowledge base to ask (default: 'default').")
@click.option("--hide-source", is_flag=True, help="Print the answer only, not its sources.")
@click.pass_context
@friendly_errors
def ask(ctx: click.Context, question: str | None, knowledge_base: str | None, hide_source: bool) -> None:
    """Answer QUESTION from the documents; without QUESTION, start an interactive session."""
    service = _service(ctx)
    service.check_answerable(knowledge_base)
    chain = service.chain(knowledge_base)
    if question is not None:
        if not question.strip():
            raise click.BadParameter("the question is empty", param_hint="QUESTION")
        _ask_once(chain, question, [], hide_source)
        return
    click.echo("Ask a question (empty line or Ctrl-D to quit).", err=True)
    history: list[tuple[str, str]] = []
    while True:
        try:
            line = click.prompt("?", prompt_suffix=" ", default="", show_default=False, err=True)
        except (EOFError, click.Abort):
            break
        if not line.strip() or line.strip().lower() in ("exit", "quit", ":q"):
            break
        answer = _ask_once(chain, line.strip(), history, hide_source)
        history.append((line.strip(), answer))


@cli.group()
def kb() -> None:
    """Knowledge bases."""


@kb.command("list")
@click.pass_context
@friendly_errors
def kb_list(ctx: click.Context) -> None:
    """List knowledge bases and their chunk counts."""
    items = _service(ctx).knowledge_bases()
    if not items:
        click.echo("No knowledge bases yet: rag ingest PATH [--kb NAME]")
    for item in items:
        click.echo(f"{item.name}\t{item.chunks} chunks")


def main() -> None:
    cli(prog_name="rag")


if __name__ == "__main__":
    main()
