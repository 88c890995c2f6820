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
from typing import TYPE_CHECKING, Any, TypeVar

import click

from rag_app.errors import KnowledgeBaseNameError, RagError, as_disk_full
from rag_app.settings import Settings

if TYPE_CHECKING:
    from ingest.pipeline import ProgressEvent  # a type only: the face reaches ingestion through RagService

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """Turn the application's named errors into one line on stderr and exit code 1 (2 for a name that breaks
    the knowledge-base name rule: a usage error); a full disk, however it was raised, says so the same way."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RagError as exc:
            click.secho(f"Error: {exc.friendly()}", fg="red", err=True)
            sys.exit(2 if isinstance(exc, KnowledgeBaseNameError) else 1)
        except Exception as exc:  # e.g. sqlite3's "database or disk is full" from a deletion
            full = as_disk_full(exc)
            if full is None:
                raise
            click.secho(f"Error: {full.friendly()}", fg="red", err=True)
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
    from rag_app.service import open_service

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    overrides: dict[str, Any] = {}
    if data_dir:
        overrides["data_dir"] = data_dir
    settings = Settings.load(config_file=config_file, profile=profile, **overrides)
    ctx.obj = open_service(settings)  # a RemoteRagService when settings.server_url is set


def _service(ctx: click.Context) -> Any:
    return ctx.obj


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--kb", "knowledge_base", help="Knowledge base to add to (default: 'default').")
@click.option(
    "--password", "passwords", multiple=True, metavar="FILE=PASSWORD", help="Password of an encrypted PDF."
)
@click.option("--prune", is_flag=True, help="Also remove documents whose files under PATHS are gone.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option(
    "--follow-symlinks", is_flag=True, default=None,
    help="Follow symlinks that lead out of the folders given (off by default) [ingest.follow_symlinks].",
)
@click.pass_context
@friendly_errors
def ingest(
    ctx: click.Context,
    paths: tuple[str, ...],
    knowledge_base: str | None,
    passwords: tuple[str, ...],
    prune: bool,
    quiet: bool,
    follow_symlinks: bool | None,
) -> None:
    """Add files and folders (recursively) to a knowledge base.

    Unchanged files are skipped, changed ones replaced. Exit code 1 when some file failed.
    """
    from tqdm import tqdm

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
            eta = f" ETA {event.eta_seconds:.0f} s" if event.eta_seconds is not None else ""
            bar.set_postfix_str(f"{event.chunks_done} chunks{eta} {event.current[-40:]}", refresh=False)
            bar.refresh()
        elif bar is not None and event.stage == "done":
            bar.close()

    report = service.ingest(
        list(paths), knowledge_base=knowledge_base, progress=progress, passwords=pw, prune=prune,
        follow_symlinks=follow_symlinks,
    )
    for source in report.recovered:
        click.secho(f"recovered: {source}: an interrupted ingestion had left it incomplete; cleaned up", fg="yellow")
    for source in report.pruned:
        click.echo(f"pruned: {source} (file gone)")
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
    """The sources the answer cites first, then the ones only retrieved (numbers as in the answer)."""
    from rag_app.support import split_sources

    if not sources:
        return
    cited, others = split_sources(sources)
    for heading, group in (("\nSources:", cited), ("Also retrieved (not cited in the answer):", others)):
        if group:
            click.echo(heading)
        for src in group:
            click.echo(f"  [{src['index']}] {src['label']} — {src['snippet']}")


def _ask_once(chain: Any, question: str, history: list[tuple[str, str]], hide_source: bool) -> str:
    """Stream one answer; then the support check's notice (on stderr, so that stdout stays the answer) and
    the sources."""
    from rag_app.support import mark_cited

    sources: list[dict[str, Any]] = []
    parts: list[str] = []
    grounding: dict[str, Any] | None = None
    stream: Iterator[dict[str, Any]] = chain.stream({"question": question, "chat_history": history})
    for chunk in stream:
        if "sources" in chunk:
            sources = chunk["sources"]
        if "answer" in chunk:
            parts.append(chunk["answer"])
            click.echo(chunk["answer"], nl=False)
        if "grounding" in chunk:
            grounding = chunk["grounding"]
    click.echo()
    if grounding is not None and grounding["notice"]:
        click.secho(grounding["notice"], fg="yellow", err=True)
    if not hide_source:
        _print_sources(mark_cited(sources, grounding["cited"] if grounding else []))
    return "".join(parts).strip()


@cli.command()
@click.argument("question", required=False)
@click.option("--kb", "knowledge_base", help="Knowledge base to ask (default: 'default').")
@click.option("--hide-source", is_flag=True, help="Print the answer only, not its sources.")
@click.option(
    "--local", is_flag=True,
    help="Load the models here even when a `rag serve` runs on this data dir [use_running_server].",
)
@click.pass_context
@friendly_errors
def ask(
    ctx: click.Context, question: str | None, knowledge_base: str | None, hide_source: bool, local: bool
) -> None:
    """Answer QUESTION from the documents; without QUESTION, start an interactive session.

    A `rag serve` running on the same data dir answers instead (its models are already loaded), unless --local."""
    service = _service(ctx)
    if not local and service.settings.use_running_server and not service.settings.server_url:
        service = _running_server(service)
    service.check_answerable(knowledge_base)
    chain = service.chain(knowledge_base)
    if question is not None:
        if not question.strip():
            raise click.BadParameter("the question is empty", param_hint="QUESTION")
        _ask_once(chain, question, [], hide_source)
        ctx.call_on_close(_end_process_now)
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


def _running_server(service: Any) -> Any:
    """The warm ``rag serve`` announced in the data dir, said so on stderr; else ``service`` (why not, too,
    when a server was announced but cannot be used)."""
    from rag_app.discovery import connect

    found = connect(service.settings)
    if found.note:
        click.echo(f"note: {found.note}", err=True)
    if found.service is None:
        return service
    state = "already loaded" if found.ready else "still loading its models"
    click.echo(f"using the server at {found.info.url} ({state}; --local to load the models here)", err=True)
    return found.service


@cli.group()
def kb() -> None:
    """Knowledge bases."""


@kb.command("list")
@click.pass_context
@friendly_errors
def kb_list(ctx: click.Context) -> None:
    """List knowledge bases, their chunk counts and the embedder that built each."""
    items = _service(ctx).knowledge_bases()
    if not items:
        click.echo("No knowledge bases yet: rag ingest PATH [--kb NAME]")
    for item in items:
        click.echo(f"{item.name}\t{item.chunks} chunks\t{item.embedder or 'embedder not recorded'}")


@kb.command("create")
@click.argument("name")
@click.pass_context
@friendly_errors
def kb_create(ctx: click.Context, name: str) -> None:
    """Create an empty knowledge base NAME: 1-64 letters (any script, Chinese included), digits, spaces, '-', '_'
    or '.', not starting with '.'."""
    from rag_app.names import check_knowledge_base_name

    name = check_knowledge_base_name(name)  # here too when the service is a server's (server_url)
    _service(ctx).create_knowledge_base(name)
    click.echo(f"Created knowledge base '{name}'.")


@kb.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
@friendly_errors
def kb_delete(ctx: click.Context, name: str, yes: bool) -> None:
    """Delete knowledge base NAME with all its chunks (the files themselves are not touched)."""
    if not yes:
        click.confirm(f"Delete knowledge base '{name}' and everything ingested into it?", abort=True, err=True)
    chunks = _service(ctx).delete_knowledge_base(name)
    click.echo(f"Deleted knowledge base '{name}' ({chunks} chunks).")


@cli.group()
def docs() -> None:
    """Documents stored in a knowledge base."""


@docs.command("list")
@click.option("--kb", "knowledge_base", help="Knowledge base (default: 'default').")
@click.pass_context
@friendly_errors
def docs_list(ctx: click.Context, knowledge_base: str | None) -> None:
    """List documents: file, chunks, pages, content hash, ingestion date."""
    records = _service(ctx).documents(knowledge_base)
    if not records:
        click.echo("No documents yet: rag ingest PATH [--kb NAME]")
        return
    click.echo("file\tchunks\tpages\tsha256\tingested")
    for rec in records:
        chunks = f"= {rec.alias_of}" if rec.alias_of else str(rec.chunks)
        click.echo(f"{rec.source}\t{chunks}\t{rec.pages or '-'}\t{rec.sha256[:12]}\t{rec.ingested_at}")
    total = sum(r.chunks for r in records)
    click.echo(f"{len(records)} document(s), {total} chunks", err=True)


@docs.command("delete")
@click.argument("files", nargs=-1, required=True)
@click.option("--kb", "knowledge_base", help="Knowledge base (default: 'default').")
@click.pass_context
@friendly_errors
def docs_delete(ctx: click.Context, files: tuple[str, ...], knowledge_base: str | None) -> None:
    """Delete documents (FILES as 'rag docs list' shows them, or their file names) from a knowledge base."""
    removal = _service(ctx).delete_documents(list(files), knowledge_base)
    click.echo(f"Deleted {len(removal.sources)} document(s), {removal.chunks_removed} chunks: {', '.join(removal.sources)}")
    if removal.dropped_aliases:
        click.echo(
            f"Copies of them no longer indexed (ingest them again to index them): {', '.join(removal.dropped_aliases)}"
        )


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--method", type=click.Choice(["map_reduce", "refine"]), default="map_reduce", show_default=True,
    help="map_reduce: summarise pieces, then merge; refine: extend one summary piece by piece.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
@friendly_errors
def summarize(ctx: click.Context, file: str, method: str, quiet: bool) -> None:
    """Summarise FILE, however long (it need not be ingested)."""
    from tqdm import tqdm

    bar = None if quiet else tqdm(total=0, unit="step", file=sys.stderr, dynamic_ncols=True, desc="summarising")

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total, bar.n = total, done
            bar.refresh()

    try:
        summary = _service(ctx).summarize(file, method=method, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    click.echo(summary.text)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f}"


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@click.pass_context
@friendly_errors
def models(ctx: click.Context, as_json: bool) -> None:
    """The Chinese-LLaMA/Alpaca models and the small ones shipped on PyPI, the memory each needs at its trained
    context, and whether it fits.

    Each name is also a profile: rag --profile NAME ... (then set llm.model_path to the downloaded GGUF).
    """
    import json

    rows = _service(ctx).model_catalog()
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    click.echo(f"{'profile':<27}{'context':>8} {'rope':<10}{'format':<12}"
               f"{'Q4_K':>6}{'Q8_0':>6}{'F16':>6}{'KV f16':>8}{'KV q8':>7}  fits (weights+KV)")
    for r in rows:
        w, kv = r["weights"], r["kv_cache"]
        fits = [k for k, ok in r["fits"].items() if ok]
        click.echo(
            f"{r['name']:<27}{r['trained_context']:>8} {r['rope_scaling']:<10}{r['prompt_format']:<12}"
            f"{_gib(w['Q4_K']):>6}{_gib(w['Q8_0']):>6}{_gib(w['F16']):>6}{_gib(kv['f16']):>8}{_gib(kv['q8_0']):>7}"
            f"  {', '.join(fits) if fits else 'none at full context'}"
            + (" (base model)" if r["base_model"] else "")
            + (f" [packaged: {'installed' if r['installed'] else 'not installed'}]" if r.get("packaged") else "")
        )
    click.echo("Sizes in GiB. Weights at Q4_K/Q8_0/F16, KV cache at the trained context; "
               "n_ctx = \"auto\" (the profiles' default) picks the largest window that fits.")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
@friendly_errors
def doctor(ctx: click.Context, as_json: bool) -> None:
    """What the current settings will do on this machine; exit 1 with the reasons when they cannot run."""
    import json

    report = _service(ctx).doctor()
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, default=str))
    else:
        _print_doctor(report)
    if not report["ok"]:
        sys.exit(1)


def _print_doctor(report: dict[str, Any]) -> None:
    m = report["machine"]
    gpus = ", ".join(f"{g['name']} ({_gib(g['free'])}/{_gib(g['total'])} GiB free)" for g in m["gpus"]) or "none"
    click.echo(f"machine     {m['cpus']} CPUs, RAM {_gib(m['ram_available'])} of {_gib(m['ram_total'])} GiB "
               f"available, GPU {gpus}")
    llm = report["llm"]
    click.echo(f"llm         backend {llm['backend']}" + (f", catalogue {llm['catalog_model']}" if llm["catalog_model"] else ""))
    if "model" in llm:
        info = llm["model"]
        rope = info["rope_scaling"]
        scaling = "none" if rope["type"] == "none" else (
            f"{rope['type']} ×{rope['factor']:g}" + (f" over {rope['original_context']}" if rope["original_context"] else ""))
        click.echo(f"  file      {llm['model_file']} ({info['source']}: {info['name']}, {info['architecture']}"
                   + (f", {info['quantization']}" if info["quantization"] else "") + ")")
        click.echo(f"  trained   {info['trained_context']} tokens; rope base {info['rope_freq_base']:g}, scaling {scaling}")
    if "n_ctx" in llm:
        extra = [f"{k} {llm[k]}" for k in ("kv_cache_type", "flash_attn", "dtype", "device") if k in llm]
        click.echo(f"  window    n_ctx {llm['n_ctx']} (setting: {llm['n_ctx_setting']}); " + ", ".join(extra))
    if "memory" in llm:
        mem = llm["memory"]
        verdict = "fits" if mem["fits"] else "DOES NOT FIT"
        click.echo(f"  memory    weights {_gib(mem['weights'])} + KV {_gib(mem['kv_cache'])} + buffers "
                   f"{_gib(mem['compute'])} = {_gib(mem['ram_needed'] + mem['vram_needed'])} GiB: {verdict}")
    emb = report["embedding"]
    click.echo(f"embedding   {emb['backend']} {emb.get('model', '')} on {emb['device']}")
    click.echo(f"data dir    {report['data_dir']}")
    kbs = ", ".join(f"{kb['name']} ({kb['chunks']} chunks)" for kb in report["knowledge_bases"]) or "none"
    click.echo(f"knowledge   {kbs}")
    for note in report["notes"]:
        click.echo(f"note: {note}")
    for problem in report["problems"]:
        click.secho(f"problem: {problem}", fg="red", err=True)
    click.echo("OK: the settings can run here." if report["ok"] else "The settings cannot run as they are.")


@cli.command("eval")
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False))
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N questions.")
@click.option("--answers", is_flag=True, help="Also generate answers and score them (slow).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--long", "long_window", is_flag=True,
    help="Articles as long documents: is the answer in the context assembled within each token budget?",
)
@click.option(
    "--budgets", callback=lambda c, p, v: _budgets(v), metavar="N,N,…",
    help="Token budgets for --long [1024,4096,16384].",
)
@click.option(
    "--unanswerable", is_flag=True,
    help="Ingest half the articles: are questions on the other half refused, and only those?",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Which half --unanswerable ingests.")
@click.pass_context
@friendly_errors
def eval_command(
    ctx: click.Context, dataset: str, limit: int | None, answers: bool, as_json: bool, long_window: bool,
    budgets: list[int] | None, unanswerable: bool, seed: int,
) -> None:
    """Evaluate retrieval (and answers) on a SQuAD-format DATASET.json."""
    import json

    def progress(stage: str, done: int, total: int) -> None:
        click.echo(f"{stage}: {done}/{total}", err=True)

    if budgets and not long_window:
        raise click.UsageError("--budgets goes with --long")
    if long_window and answers:
        raise click.UsageError("--long generates no answers: leave out --answers")
    if unanswerable and long_window:
        raise click.UsageError("--unanswerable goes without --long")
    result = _service(ctx).evaluate(
        dataset, limit=limit, answers=answers, progress=progress, long=long_window, budgets=budgets,
        unanswerable=unanswerable, seed=seed,
    )
    if long_window:
        _print_long(result, as_json)
        return
    if unanswerable:
        _print_unanswerable(result, as_json)
        return
    if as_json:
        click.echo(json.dumps({"retrieval": result["retrieval"], "answers": result["answers"]}, ensure_ascii=False))
        return
    info = result["dataset"]
    click.echo(f"{info['file']}: {info['questions']} questions over {info['passages']} passages")
    click.echo(f"{'mode':<10}{'hit@1':>8}{'hit@4':>8}{'hit@10':>8}{'mrr':>8}{'refused':>9}")
    for mode, m in result["retrieval"].items():
        click.echo(f"{mode:<10}{m['hit@1']:>8.3f}{m['hit@4']:>8.3f}{m['hit@10']:>8.3f}{m['mrr']:>8.3f}{m['refused']:>9.3f}")
    if result["answers"]:
        a = result["answers"]
        click.echo(
            f"answers ({a['questions']}): exact match {a['exact_match']:.3f}, F1 {a['f1']:.3f}, "
            f"contained {a['contained']:.3f}, refused {a['refused']:.3f}, cited {a['cited']:.3f}"
        )


def _budgets(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        budgets = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a list of token counts such as 1024,4096") from None
    if not budgets or min(budgets) < 1:
        raise click.BadParameter(f"'{value}' is not a list of token counts such as 1024,4096")
    return budgets


def _print_unanswerable(result: dict[str, Any], as_json: bool) -> None:
    import json

    if as_json:
        keys = ("retrieval", "answers", "unanswerable", "dataset")
        click.echo(json.dumps({key: result[key] for key in keys}, ensure_ascii=False))
        return
    info = result["dataset"]
    click.echo(
        f"{info['file']}: {info['ingested_passages']} of {info['passages']} passages ingested (seed {info['seed']}), "
        f"{info['questions']} questions ({info['seconds']} s)"
    )
    click.echo(f"{'mode':<10}{'refused unanswerable':>22}{'refused answerable':>20}{'hit@4':>8}")
    for mode, m in result["unanswerable"].items():
        click.echo(
            f"{mode:<10}{m['refused_unanswerable']:>22.3f}{m['refused_answerable']:>20.3f}"
            f"{result['retrieval'][mode]['hit@4']:>8.3f}"
        )
    for name, dist in result["answers"].items():
        if dist.get("checked"):
            click.echo(
                f"support of answers, {name.replace('_', ' ')} ({dist['checked']}): median {dist['median']:.2f}, "
                f"{100 * dist['flagged']:.0f} % below {dist['threshold']}"
            )


def _print_long(result: dict[str, Any], as_json: bool) -> None:
    import json

    if as_json:
        click.echo(json.dumps({"long": result["long"], "dataset": result["dataset"]}, ensure_ascii=False))
        return
    info, long = result["dataset"], result["long"]
    click.echo(
        f"{info['file']}: {info['questions']} questions over {info['documents']} documents of "
        f"~{info['document_tokens']} tokens ({info['seconds']} s)"
    )
    click.echo(f"{'context':<14}{'recall':>8}{'in place':>10}{'context tok':>13}{'prompt tok':>12}{'refused':>9}")
    rows = [(f"k={long['baseline']['k']} chunks", long["baseline"])]
    rows += [(f"budget {name}", m) for name, m in long["budgets"].items()]
    for name, m in rows:
        click.echo(
            f"{name:<14}{m['recall']:>8.3f}{m['recall_in_place']:>10.3f}{m['context_tokens']:>13.0f}"
            f"{m['prompt_tokens']:>12.0f}{m['refused']:>9.3f}"
        )


@cli.command()
@click.option("--host", help="Address to listen on [server.host: 127.0.0.1]; any other than loopback needs API keys.")
@click.option("--port", type=click.IntRange(0, 65535), help="Port [server.port: 8000].")
@click.option("--api-key", "api_keys", multiple=True, help="Accepted Bearer key (repeatable) [server.api_keys].")
@click.pass_context
@friendly_errors
def serve(ctx: click.Context, host: str | None, port: int | None, api_keys: tuple[str, ...]) -> None:
    """Serve the OpenAI-compatible API (chat answers with sources, knowledge bases, uploads) over HTTP.

    Refuses to start (exit 2) with settings that would let others in: a public address without API keys, or an
    empty or short key (under 16 characters), whether from --api-key, the TOML file or RAG_SERVER__API_KEYS."""
    from rag_app.errors import InsecureServerError
    from rag_app.server import create_app
    from rag_app.server.app import check_bind
    from rag_app.service import RagService

    settings: Settings = _service(ctx).settings
    update: dict[str, Any] = {}
    if host is not None:
        update["host"] = host
    if port is not None:
        update["port"] = port
    if api_keys:
        update["api_keys"] = list(api_keys)
    settings = settings.model_copy(update={"server": settings.server.model_copy(update=update), "server_url": None})
    try:
        check_bind(settings)
    except InsecureServerError as exc:  # a usage error: one line, exit 2, nothing served
        click.secho(f"Error: {exc.friendly()}", fg="red", err=True)
        sys.exit(2)
    try:
        import uvicorn
    except ImportError:
        from rag_app.errors import MissingDependencyError

        raise MissingDependencyError("`rag serve` needs uvicorn: pip install 'rag-app[server]'") from None
    app = create_app(RagService(settings), settings, announce=True)  # data_dir/server.json for `rag ask`
    conf = settings.server
    click.echo(f"Serving on http://{conf.host}:{conf.port} (OpenAI API under /v1; Ctrl-C stops)", err=True)
    uvicorn.run(app, host=conf.host, port=conf.port, log_level="warning", timeout_graceful_shutdown=5)


class _Process:
    """What only the real ``rag`` process may do (never click's test runner, which runs commands in-process)."""

    exit_at_once = False


def _end_process_now() -> None:
    """Called as a read-only command's context closes. With a model loaded, the interpreter's teardown
    (llama.cpp's context, torch, Chroma's clients) takes ~1.7 s after the last line; nothing is left to write by
    then (every store commits before a command returns), so the process ends here instead (issue 20)."""
    if _Process.exit_at_once:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def main() -> None:
    _Process.exit_at_once = True
    cli(prog_name="rag")


if __name__ == "__main__":
    main()
