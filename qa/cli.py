"""The ``qa`` command: a thin click layer over :class:`qa.QA`.

Library errors become one-line messages with exit status 1; bad options exit 2
(click's usage errors). Nothing here decides what a good answer is.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import click

from qa.cite import CitationError
from qa.export import AnswerWriter
from qa.pageview import PageViewError
from qa.config import ENV_INDEX, ENV_MODEL, ENV_RAY_ADDRESS, default_index_dir
from qa.read import MAX_FILE_BYTES, PARSE_TIMEOUT
from qa.search import RETRIEVERS, QueryError
from qa.storage import StoreError

_USER_ERRORS = (StoreError, CitationError, QueryError, PageViewError)


def _open(index: str | None, model: str | None):
    from qa.library import QA

    return QA(index, model=model)


def _fail(exc: Exception) -> click.ClickException:
    from embeddings import ModelError

    if isinstance(exc, (*_USER_ERRORS, ModelError)) or type(exc).__name__ == "ClusterError":
        return click.ClickException(str(exc))
    raise exc


index_option = click.option(
    "--index", "index", type=click.Path(file_okay=False), default=None,
    help=f"Index folder. Default: ${ENV_INDEX}, else {default_index_dir()}.",
)
model_option = click.option(
    "--model", default=None, envvar=ENV_MODEL, show_envvar=True,
    help="Sentence-transformers model name or path. Default: the index's own model, else all-MiniLM-L6-v2.",
)
k_option = click.option("-k", "k", type=click.IntRange(1, 100), default=5, show_default=True, help="Passages per question.")
retriever_option = click.option(
    "--retriever", type=click.Choice(RETRIEVERS), default="hybrid", show_default=True,
    help="How passages are ranked: hybrid (fused plus word-by-word scores), fused, lexical or dense."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what the library does to stderr.")
@click.version_option(package_name="qa-cite")
def cli(verbose: bool) -> None:
    """Ask questions of your own documents and get cited passages, nothing generated.

    \b
    Example:
        qa index ~/reports
        qa ask "Who is the foreign minister of the exile government?"
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@index_option
@model_option
@click.option("--max-size", type=click.FloatRange(min=0.001), default=MAX_FILE_BYTES / 2**20, show_default=True,
              help="Skip files larger than this many MiB.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=PARSE_TIMEOUT, show_default=True,
              help="Seconds a parser may spend on one file before it is skipped.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None, envvar=ENV_RAY_ADDRESS,
              show_envvar=True, metavar="[ADDRESS]",
              help="Read, split and embed on a Ray cluster: HOST:PORT of its head, auto (the cluster this machine "
                   "is in) or local (Ray on this machine). Give it after the paths.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="With --ray: how many model workers (default one a node, each with the node's CPUs; one a GPU).")
def index(
    paths: tuple[str, ...], index: str | None, model: str | None, max_size: float, timeout: float, as_json: bool,
    ray_address: str | None, workers: int | None,
) -> None:
    """Index .txt, .md, .pdf, .docx and .html files; folders are read recursively.

    Only new or changed files are embedded again (by content hash); files gone
    from an indexed folder are dropped; one content under two paths is stored
    once. An index written by an earlier version is first brought up to date
    from the texts it stores. Unreadable files are skipped and named; the exit status is 0 when
    all went in, 3 when some files were skipped, 1 when nothing could be indexed.

    \b
    Examples:
        qa index seeds/ notes.md --index ./my-index
        qa index /shared/archive --ray 10.0.0.5:6379
    """
    if workers and not ray_address:
        raise click.UsageError("--workers goes with --ray")
    qa = _open(index, model)
    try:
        if qa.outdated():  # written by an earlier version: brought up to date first
            upgraded = qa.upgrade()
            click.echo(
                f"{qa.index_dir}: brought up to date, {len(upgraded.updated)} documents and "
                f"{upgraded.passages_embedded} passages embedded again",
                err=True,
            )
        report = qa.index(
            list(paths),
            progress=sys.stderr.isatty() and not as_json,
            max_bytes=int(max_size * 2**20),
            timeout=timeout,
            ray=ray_address or None,
            workers=workers,
        )
    except Exception as exc:
        raise _fail(exc) from exc
    for skipped in report.skipped:
        click.echo(str(skipped), err=True)
    if as_json:
        click.echo(json.dumps({"index": str(qa.index_dir), **report.to_json()}, ensure_ascii=False))
    else:
        click.echo(
            f"{qa.index_dir}: {len(report.added)} added, {len(report.updated)} updated, "
            f"{len(report.unchanged)} unchanged, {len(report.removed)} removed, {len(report.skipped)} skipped; "
            f"{report.passages_embedded} passages embedded"
        )
    indexed = report.added or report.updated or report.unchanged
    if report.skipped:
        sys.exit(3 if indexed else 1)


def _emit(obj: dict, as_json: bool, printer) -> None:
    """One JSON object with ``--json``, else ``printer``'s text for people."""
    if as_json:
        click.echo(json.dumps(obj, ensure_ascii=False))
    else:
        printer(obj)


def _ocr_note(passage: dict) -> str:
    """Said of OCR'd words: they were recognised in an image, so a reader checks them against it."""
    if not passage.get("ocr"):
        return ""
    return f"  read by OCR (word confidence {passage['ocr_confidence']:.2f})"


def _print_answer(answer: dict) -> None:
    from qa.confidence import in_words

    if not answer["results"]:
        click.echo("No passage matches this question.")
        return
    if not answer["answered"]:
        click.echo("No passage looks like a good answer; the closest ones are:\n")
    for r in answer["results"]:
        click.echo(
            click.style(f"{r['rank']}. {r['citation']}", bold=True)
            + f"   [{r['start']}, {r['end']})  {in_words(r['confidence'])} ({r['confidence']:.2f})"
            + _ocr_note(r)
        )
        text, hl_start = r["text"], r["highlight_start"] - r["start"]
        hl_end = hl_start + len(r["highlight"])
        marked = text[:hl_start] + click.style(text[hl_start:hl_end], underline=True, bold=True) + text[hl_end:]
        click.echo(textwrap.indent(marked, "   "))
        click.echo(f"   best sentence: {r['highlight']}\n")


@cli.command()
@click.argument("question")
@index_option
@model_option
@k_option
@retriever_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def ask(question: str, index: str | None, model: str | None, k: int, retriever: str, as_json: bool) -> None:
    """Print the passages that best answer QUESTION, with citations.

    \b
    Example:
        qa ask "Who is the president of the exile government?" -k 3 --json
    """
    qa = _open(index, model)
    try:
        answer = qa.ask(question, k=k, retriever=retriever).to_json()
    except Exception as exc:
        raise _fail(exc) from exc
    answer["id"] = answer["id"] or "1"
    _emit(answer, as_json, _print_answer)


def _read_questions(file: str) -> list[tuple[str, str]]:
    """``(id, question)`` pairs from .txt, .jsonl or .csv (or stdin, as text lines)."""
    try:
        if file == "-":
            raw, suffix = sys.stdin.read(), ".txt"
        else:
            raw, suffix = Path(file).read_text(encoding="utf-8-sig"), Path(file).suffix.lower()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read questions file {file}: {getattr(exc, 'strerror', None) or exc}")
    pairs: list[tuple[str, str]] = []
    if suffix == ".jsonl":
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                question = item["question"]
            except (ValueError, KeyError, TypeError):
                raise click.ClickException(f"{file}:{number}: expected a JSON object with a \"question\"")
            if not isinstance(question, str):
                raise click.ClickException(f"{file}:{number}: \"question\" must be a string")
            pairs.append((str(item.get("id", number)), question))
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(raw))
        if not reader.fieldnames or "question" not in reader.fieldnames:
            raise click.ClickException(f"{file}: the CSV needs a 'question' column")
        for number, row in enumerate(reader, start=1):
            pairs.append((row.get("id") or str(number), row["question"] or ""))
    else:
        for number, line in enumerate(raw.splitlines(), start=1):
            if line.strip():
                pairs.append((str(number), line.strip()))
    return pairs


def _answers(qa, pairs, k: int, retriever: str) -> Iterator[dict]:
    """Answers in order; a question that cannot be asked gets an error entry, not a crash."""
    good = [(qid, q) for qid, q in pairs if q.strip()]
    answers = qa.ask_many(good, k=k, retriever=retriever)
    for qid, question in pairs:
        if not question.strip():
            yield {"id": qid, "question": question, "answered": False, "error": "the question is empty", "results": []}
        else:
            yield next(answers).to_json()


@cli.command()
@click.argument("file")
@index_option
@model_option
@k_option
@retriever_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None, help="Write here instead of stdout.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
def batch(file: str, index: str | None, model: str | None, k: int, retriever: str, output: str | None, fmt: str) -> None:
    """Answer every question in FILE (.txt, .jsonl, .csv, or - for stdin).

    A .txt file has one question a line; .jsonl lines are objects with
    "question" and an optional "id"; a .csv has a "question" column and an
    optional "id" column. The id defaults to the line (or row) number. JSON
    lines give one object a question; CSV gives one row a result.

    \b
    Example:
        qa batch questions.txt -k 3 -o answers.jsonl
    """
    pairs = _read_questions(file)
    qa = _open(index, model)
    try:
        out = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from exc
    try:
        writer = AnswerWriter(out, fmt)
        for answer in _answers(qa, pairs, k, retriever):
            writer.write(answer)
    except Exception as exc:
        raise _fail(exc) from exc
    finally:
        if output:
            out.close()


@cli.command()
@click.argument("citation")
@index_option
@click.option("-C", "--context", type=click.IntRange(0, 20), default=1, show_default=True, help="Paragraphs shown on each side.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--page-image", type=click.Path(dir_okay=False), default=None,
              help="Also write the cited PDF page or scanned image as a PNG, the passage's region marked.")
def show(citation: str, index: str | None, context: int, as_json: bool, page_image: str | None) -> None:
    """Print the passage a CITATION points to, with its neighbours.

    \b
    Examples:
        qa show "000_1e317d521278b0dc.txt ¶4"
        qa show 000_1e317d521278b0dc.txt#4 -C 0
        qa show "report.pdf, p. 2, ¶1" --page-image page.png
    """
    qa = _open(index, None)
    try:
        shown = qa.show(citation, context=context)
        if page_image:
            image, _ = qa.page_image(citation)
            image.save(page_image)
    except Exception as exc:
        raise _fail(exc) from exc
    if as_json:
        click.echo(json.dumps(shown.to_json(), ensure_ascii=False))
        return
    for p in shown.before:
        click.echo(click.style(f"¶{p.paragraph}", dim=True) + "\n" + textwrap.indent(p.text, "  ") + "\n")
    c = shown.cited
    click.echo(click.style(f"» {shown.citation}   {c.doc} [{c.start}, {c.end})", bold=True) + _ocr_note(shown.to_json()))
    click.echo(textwrap.indent(c.text, "» ") + "\n")
    for p in shown.after:
        click.echo(click.style(f"¶{p.paragraph}", dim=True) + "\n" + textwrap.indent(p.text, "  ") + "\n")


@cli.command(name="list")
@index_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
def list_documents(index: str | None, as_json: bool) -> None:
    """List the indexed documents with their passage counts.

    \b
    Example:
        qa list --index ./my-index
    """
    qa = _open(index, None)
    try:
        documents = qa.documents()
    except Exception as exc:
        raise _fail(exc) from exc
    for d in documents:
        if as_json:
            record = {"doc": d.path, "format": d.format, "passages": d.passages, "sha256": d.sha256,
                      "same_as": list(d.same_as)}
            click.echo(json.dumps(record, ensure_ascii=False))
        else:
            same = f"   (same content as {', '.join(d.same_as)})" if d.same_as else ""
            click.echo(f"{d.passages:6d}  {d.path}{same}")
    if not as_json:
        passages = sum({d.sha256: d.passages for d in documents}.values())
        click.echo(f"{len(documents)} documents, {passages} passages", err=True)


def _print_model_report(report: dict) -> None:
    decision = report["decision"]
    how = "forced by QA_PRECISION" if report["requested"] != "auto" else "measured for this CPU"
    if report["backend"] != "openvino":
        how = "the only precision of this back end"
    click.echo(f"model      {report['model']} on {report['backend']}, {report['precision']} ({how})")
    if not decision:
        if report["backend"] == "openvino":
            click.echo("decision   none recorded for this CPU")
    else:
        figures, cpu = decision["figures"], decision["cpu"]
        limit = ", ".join(f"{k}={v}" for k, v in cpu["isa_limit"].items()) or "no ISA limit"
        click.echo(f"decision   {decision['precision']}: {decision['reason']}")
        click.echo(f"measured   {decision['measured_at']} on {cpu['model']} ({' '.join(cpu['flags'])}; {limit})")
        if figures.get("int8_available"):
            click.echo(f"speed      int8 {figures['int8_tokens_per_s']:,} tokens/s, fp32 {figures['fp32_tokens_per_s']:,}"
                       f" tokens/s ({figures['timed_tokens']:,} tokens, fastest of {figures['rounds']} passes each)")
            click.echo(f"fidelity   int8 vs fp32: cosine min {figures['cosine_min']:.4f}, mean {figures['cosine_mean']:.4f};"
                       f" same nearest neighbour {100 * figures['neighbour_agreement']:.1f}% of {figures['texts']} texts")
    if report["export"]:
        click.echo(f"export     {report['export']}")


@cli.command()
@index_option
@model_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def info(index: str | None, model: str | None, as_json: bool) -> None:
    """Show how the model runs here: back end, int8 or fp32, and the measurement behind the choice.

    The precision is measured once per CPU, the first time the model runs
    there; QA_PRECISION=int8 or fp32 forces one.

    \b
    Example:
        qa info --json
    """
    try:
        report = _open(index, model).model_report()
    except Exception as exc:
        raise _fail(exc) from exc
    _emit(report, as_json, _print_model_report)


@cli.command()
@index_option
def compact(index: str | None) -> None:
    """Merge the index's segments into one and reclaim what removed documents took.

    Each commit writes only what it changed, as a new segment, and merges
    small segments as it goes; this rewrites the index once, as a full
    re-index's commit would, without embedding anything.

    \b
    Example:
        qa compact --index ./my-index
    """
    qa = _open(index, None)
    try:
        report = qa.compact()
    except Exception as exc:
        raise _fail(exc) from exc
    click.echo(f"{qa.index_dir}: {report['segments_before']} segments -> {report['segments_after']}, "
               f"{report['passages']} passages")


@cli.command()
@click.argument("docs", nargs=-1, required=True)
@index_option
def remove(docs: tuple[str, ...], index: str | None) -> None:
    """Remove documents (by path or file name) from the index.

    \b
    Example:
        qa remove seeds/000_1e317d521278b0dc.txt
    """
    qa = _open(index, None)
    try:
        removed = qa.remove(list(docs))
    except Exception as exc:
        raise _fail(exc) from exc
    for name in removed:
        click.echo(f"removed {name}")


@cli.command()
@index_option
@model_option
@click.option("--port", type=click.IntRange(1, 65535), envvar="GRADIO_SERVER_PORT", default=7860, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for everyone).")
@click.option(
    "--auth", "auth_file", type=click.Path(dir_okay=False), envvar="QA_AUTH_FILE", show_envvar=True, default=None,
    help="Password file (qa passwd or htpasswd -B): the page, its API and files need a login.",
)
@click.option(
    "--read-only", is_flag=True, envvar="QA_READ_ONLY", show_envvar=True,
    help="No uploads: the page has no upload controls and the server refuses uploads.",
)
def serve(index: str | None, model: str | None, port: int, host: str, auth_file: str | None, read_only: bool) -> None:
    """Serve the chat page (and its /ask API) for an index.

    \b
    Example:
        qa passwd users.htpasswd alice
        qa serve --index ./my-index --auth users.htpasswd --read-only
    """
    from qa.auth import AuthError, Logins, read_users
    from qa.ui import build_app, launch

    logins = None
    if auth_file:
        try:
            logins = Logins(read_users(auth_file))
        except AuthError as exc:
            raise click.ClickException(str(exc)) from exc
    qa = _open(index, model)
    try:
        qa.snapshot()
    except Exception as exc:
        raise _fail(exc) from exc
    launch(build_app(qa, read_only=read_only), logins=logins, read_only=read_only, server_name=host, server_port=port)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("user")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from the first line of standard input.")
def passwd(file: str, user: str, from_stdin: bool) -> None:
    """Add USER to the password FILE for `qa serve --auth`, or change their password.

    The password is asked for twice (or read from stdin with --stdin) and
    stored as a bcrypt hash; the file is the same as `htpasswd -B` writes.

    \b
    Example:
        qa passwd users.htpasswd alice
        printf '%s\\n' "$PASSWORD" | qa passwd users.htpasswd bot --stdin
    """
    from qa.auth import AuthError, set_password

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        new = set_password(file, user, password)
    except AuthError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{'added' if new else 'changed the password of'} {user} in {file}")


_VERDICT_LINES = {
    "exact": "exact: the quote is at {citation}",
    "near-exact": "near-exact: the quote is at {citation} up to whitespace, case, quotes or dashes",
    "similar": "similar ({score:.2f}): {citation} has a close but different text",
    "not-found": "not-found: the quote is not at {citation} (best similarity {score:.2f})",
}


def _print_verdict(verdict: dict) -> None:
    click.echo(click.style(_VERDICT_LINES[verdict["status"]].format(**verdict), bold=True))
    if verdict["match"]:
        m = verdict["match"]
        click.echo(f"   {m['doc']} [{m['start']}, {m['end']})")
        click.echo(textwrap.indent(m["text"], "   "))
    found = verdict["found"]
    if verdict["status"] in ("exact", "near-exact"):
        return
    if not found:
        click.echo("\nIt is not in the indexed documents.")
        return
    kinds = {f["match"] for f in found}
    if kinds & {"exact", "near-exact"}:
        click.echo("\nIt is at:")
    elif "similar" in kinds:
        click.echo("\nIt is in no indexed document as quoted; similar text is at:")
    else:
        click.echo("\nIt is not in the indexed documents; the closest passages are:")
    for number, f in enumerate(found, start=1):
        click.echo(
            click.style(f"{number}. {f['citation']}", bold=True)
            + f"   {f['doc']} [{f['start']}, {f['end']})  {f['match']} {f['score']:.2f}"
        )
        click.echo(textwrap.indent(f["text"], "   "))


@cli.command()
@click.argument("quote")
@click.argument("citation")
@index_option
@model_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def verify(quote: str, citation: str, index: str | None, model: str | None, as_json: bool) -> None:
    """Check that QUOTE is at CITATION, and say where it is if not.

    The verdict is exact (verbatim), near-exact (equal up to whitespace, case,
    typographic quotes and dashes), similar (a run of words at least 0.8
    similar, difflib's ratio), or not-found. Unless the quote is at the cited
    place, the indexed documents are searched for it and the places found are
    listed with exact character ranges; when it is nowhere, the closest
    passages are.

    \b
    Example:
        qa verify "The international community must take action now" "000_1e317d521278b0dc.txt ¶4"
    """
    qa = _open(index, model)
    try:
        verdict = qa.verify(quote, citation).to_json()
    except Exception as exc:
        raise _fail(exc) from exc
    _emit(verdict, as_json, _print_verdict)


@cli.command(name="eval")
@click.argument("file")
@index_option
@model_option
@retriever_option
@click.option(
    "-k", "k", type=click.IntRange(1, 100), default=None,
    help="Passages retrieved per question. Default: 10, or 100 when the file has qrels.",
)
def evaluate(file: str, index: str | None, model: str | None, retriever: str, k: int | None) -> None:
    """Score retrieval on the labeled questions in FILE (JSON lines); print one JSON object.

    Each line has a "question" and its gold: a passage, by "doc" (stored path
    or file name) and "paragraph" ("page" too for paged formats) or by "text"
    (a result is a hit when its text contains the gold text or is contained in
    it); or documents, by "qrels" ({"doc": grade, ...}, as BEIR gives them:
    scored at document level with nDCG@10, recall@10, recall@100 and MRR@10);
    or "answerable": false, for a question the documents cannot answer.
    Optional "answers" (strings) score whether the top hit's highlighted
    sentence holds one. Prints recall@1, recall@5, MRR@10, the share answered,
    that share of highlights, the share answered of the questions whose first
    result is right, the share not answered of those from outside the index,
    and counts.

    \b
    Examples:
        qa eval questions.jsonl --retriever lexical -k 10
        qa eval tests/seed_questions/unanswerable.jsonl
    """
    from qa.evaluate import EvalError, evaluate as run_eval, read_labeled

    try:
        questions = read_labeled(file)
        if k is None:
            k = 100 if any(q.qrels for q in questions) else 10
        qa = _open(index, model)
        summary = run_eval(qa, questions, retriever=retriever, k=k)
    except EvalError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:
        raise _fail(exc) from exc
    click.echo(json.dumps(summary, ensure_ascii=False))


def main() -> None:
    cli(prog_name="qa")


if __name__ == "__main__":
    main()
