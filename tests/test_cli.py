"""The ``qa`` command through click's CliRunner, on the seed index built with the real model.

Loading the model takes seconds, so commands that need it get the session's
already-loaded real model (``embeddings.load_embedder`` is patched to hand it
out); tests that write to an index work on a copy of the seed index.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from qa.cli import cli
from qa.export import CSV_COLUMNS

SEEDS = Path(__file__).resolve().parent / "articles"
KESTREL = "000_kestrel_bay_tidal_barrier.txt"
MORVAN = "001_morvan_exile_government.txt"
ALDAN = "What did Kostal say about President Aldan?"
FLOODED = "How many homes were flooded in January?"
DEPUTY = "Who is Kostal's deputy?"
RESULT_KEYS = {"rank", "score", "doc", "paragraph", "page", "start", "end", "text", "highlight", "citation"}


def seed_text(name: str) -> str:
    return (SEEDS / name).read_bytes().decode("utf-8")


pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def index_copy(article_index, tmp_path) -> Path:
    copy = tmp_path / "index"
    shutil.copytree(article_index, copy)
    return copy


def invoke(*args, input: str | None = None, env: dict | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, env=env)


def ok(result):
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    return result


def assert_one_line_error(result, code: int = 1) -> str:
    """A handled user error: the exit code, one ``Error:`` line on stderr, no traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), f"crashed with {result.exception!r}"
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def check_answer(answer: dict, k: int) -> None:
    """The shape of one answer (a batch line), and that every result quotes its source."""
    assert {"id", "question", "answered", "confidence", "results"} <= set(answer)
    assert isinstance(answer["answered"], bool)
    assert len(answer["results"]) == k
    for rank, r in enumerate(answer["results"], start=1):
        assert RESULT_KEYS <= set(r)
        assert r["rank"] == rank
        name = Path(r["doc"]).name
        assert seed_text(name)[r["start"] : r["end"]] == r["text"]
        assert r["citation"].startswith(f"{name} ¶{r['paragraph']}")
        assert r["highlight"] in r["text"]


# -- index ------------------------------------------------------------------------------


@pytest.mark.model
def test_index_prints_summary_and_new_document_is_searchable(model, index_copy, tmp_path):
    doc = tmp_path / "lighthouse.txt"
    doc.write_text(
        "Notes from a coastal walk\n\nThe keeper of the lighthouse at Grey Point is Ada Quill, "
        "who has lit its lamp every night since 1998.\n",
        encoding="utf-8",
    )
    result = ok(invoke("index", doc, "--index", index_copy))
    assert re.fullmatch(
        rf"{re.escape(str(index_copy))}: 1 added, 0 updated, 0 unchanged, 0 removed, 0 skipped; 2 passages embedded\n",
        result.stdout,
    ), result.stdout

    answer = json.loads(ok(invoke("ask", "Who keeps the lighthouse at Grey Point?", "--index", index_copy, "--json")).stdout)
    top = answer["results"][0]
    assert (top["doc"], top["paragraph"]) == ("lighthouse.txt", 2)
    assert top["citation"] == "lighthouse.txt ¶2"


@pytest.mark.model
def test_index_json_report_parses(model, index_copy):
    result = ok(invoke("index", SEEDS, "--index", index_copy, "--json"))
    report = json.loads(result.stdout)
    assert report["index"] == str(index_copy)
    assert report["unchanged"] == [f"articles/{KESTREL}", f"articles/{MORVAN}"]
    assert report["added"] == report["updated"] == report["removed"] == report["skipped"] == []
    assert report["passages_embedded"] == 0


@pytest.mark.model
def test_index_names_skipped_files_and_exits_3(model, tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("Otters eat fish and crabs.\n", encoding="utf-8")
    missing = tmp_path / "missing.txt"
    result = invoke("index", good, missing, "--index", tmp_path / "idx", "--json")
    assert result.exit_code == 3, result.output
    assert f"skipped {missing}: no such file or folder" in result.stderr
    report = json.loads(result.stdout)
    assert report["added"] == ["good.txt"]
    assert report["skipped"] == [{"path": str(missing), "reason": "no such file or folder"}]


# -- ask --------------------------------------------------------------------------------


@pytest.mark.model
def test_ask_json_is_one_object_with_cited_results(model, article_index):
    result = ok(invoke("ask", ALDAN, "--index", article_index, "-k", "3", "--json"))
    assert len(result.stdout.strip().splitlines()) == 1
    answer = json.loads(result.stdout)
    assert answer["id"] == "1"
    assert answer["question"] == ALDAN
    assert answer["answered"] is True
    check_answer(answer, k=3)
    top = answer["results"][0]
    assert top["doc"] == f"articles/{MORVAN}" and top["paragraph"] == 5 and top["page"] is None
    assert top["citation"] == f"{MORVAN} ¶5"
    assert "Aldan" in top["highlight"]


@pytest.mark.model
def test_ask_readable_output_shows_citation_and_best_sentence(model, article_index):
    result = ok(invoke("ask", ALDAN, "--index", article_index, "-k", "2"))
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"1. {MORVAN} ¶5   [1034, 1461)")
    assert "2. " in result.stdout
    # What Kostal said about him, in his words.
    assert 'best sentence: "President Aldan says he has brought peace to Morvan.' in result.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)


@pytest.mark.model
@pytest.mark.parametrize("retriever", ["hybrid", "fused", "lexical", "dense"])
def test_ask_each_retriever_finds_the_passage(model, article_index, retriever):
    result = ok(invoke("ask", ALDAN, "--index", article_index, "-k", "1", "--retriever", retriever, "--json"))
    top = json.loads(result.stdout)["results"][0]
    assert (Path(top["doc"]).name, top["paragraph"]) == (MORVAN, 5)


@pytest.mark.model
def test_ask_uses_index_from_environment(model, article_index):
    result = ok(invoke("ask", FLOODED, "-k", "1", "--json", env={"QA_INDEX": str(article_index)}))
    top = json.loads(result.stdout)["results"][0]
    assert (Path(top["doc"]).name, top["paragraph"]) == (KESTREL, 5)


# -- batch ------------------------------------------------------------------------------


def expected_top(answer: dict) -> tuple[str, int]:
    top = answer["results"][0]
    return Path(top["doc"]).name, top["paragraph"]


@pytest.mark.model
def test_batch_txt_ids_are_line_numbers(model, article_index, tmp_path):
    questions = tmp_path / "q.txt"
    questions.write_text(f"{ALDAN}\n{FLOODED}\n\n{DEPUTY}\n", encoding="utf-8")
    result = ok(invoke("batch", questions, "--index", article_index, "-k", "2"))
    answers = json_lines(result.stdout)
    assert [a["id"] for a in answers] == ["1", "2", "4"]
    assert [a["question"] for a in answers] == [ALDAN, FLOODED, DEPUTY]
    for a in answers:
        check_answer(a, k=2)
    assert [expected_top(a) for a in answers] == [(MORVAN, 5), (KESTREL, 5), (MORVAN, 10)]


@pytest.mark.model
def test_batch_jsonl_with_and_without_id(model, article_index, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps({"id": "aldan", "question": ALDAN}) + "\n"
        + json.dumps({"question": FLOODED}) + "\n"
        + json.dumps({"id": 7, "question": DEPUTY}) + "\n",
        encoding="utf-8",
    )
    answers = json_lines(ok(invoke("batch", questions, "--index", article_index, "-k", "1")).stdout)
    assert [a["id"] for a in answers] == ["aldan", "2", "7"]
    assert [expected_top(a) for a in answers] == [(MORVAN, 5), (KESTREL, 5), (MORVAN, 10)]


@pytest.mark.model
def test_batch_csv_with_question_and_id_columns(model, article_index, tmp_path):
    with_id = tmp_path / "with_id.csv"
    with_id.write_text(f'question,id\n"{ALDAN}",q-a\n"{FLOODED}",q-b\n', encoding="utf-8")
    answers = json_lines(ok(invoke("batch", with_id, "--index", article_index, "-k", "1")).stdout)
    assert [a["id"] for a in answers] == ["q-a", "q-b"]
    assert [expected_top(a) for a in answers] == [(MORVAN, 5), (KESTREL, 5)]

    without_id = tmp_path / "without_id.csv"
    without_id.write_text(f'question\n"{ALDAN}"\n"{DEPUTY}"\n', encoding="utf-8")
    answers = json_lines(ok(invoke("batch", without_id, "--index", article_index, "-k", "1")).stdout)
    assert [a["id"] for a in answers] == ["1", "2"]
    assert [expected_top(a) for a in answers] == [(MORVAN, 5), (MORVAN, 10)]


@pytest.mark.model
def test_batch_reads_stdin(model, article_index):
    result = ok(invoke("batch", "-", "--index", article_index, "-k", "1", input=f"{FLOODED}\n{DEPUTY}\n"))
    answers = json_lines(result.stdout)
    assert [a["id"] for a in answers] == ["1", "2"]
    assert [expected_top(a) for a in answers] == [(KESTREL, 5), (MORVAN, 10)]


@pytest.mark.model
def test_batch_writes_output_file(model, article_index, tmp_path):
    out = tmp_path / "out.jsonl"
    result = ok(invoke("batch", "-", "--index", article_index, "-k", "3", "-o", out, input=f"{ALDAN}\n{FLOODED}\n"))
    assert result.stdout == ""
    answers = json_lines(out.read_text(encoding="utf-8"))
    assert len(answers) == 2
    for a in answers:
        check_answer(a, k=3)


@pytest.mark.model
def test_batch_csv_format_is_one_row_per_result(model, article_index):
    result = ok(invoke("batch", "-", "--index", article_index, "-k", "2", "--format", "csv", input=f"{ALDAN}\n{FLOODED}\n"))
    reader = csv.DictReader(io.StringIO(result.stdout))
    rows = list(reader)
    assert reader.fieldnames == CSV_COLUMNS
    assert [(row["id"], row["rank"]) for row in rows] == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]
    for row in rows:
        name = Path(row["doc"]).name
        assert seed_text(name)[int(row["start"]) : int(row["end"])] == row["text"]
        assert row["citation"].startswith(f"{name} ¶{row['paragraph']}")
        assert row["answered"] in ("True", "False")
    assert (Path(rows[0]["doc"]).name, rows[0]["paragraph"]) == (MORVAN, "5")
    assert (Path(rows[2]["doc"]).name, rows[2]["paragraph"]) == (KESTREL, "5")


@pytest.mark.model
def test_batch_empty_question_gets_an_error_entry(model, article_index, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "  "}) + "\n" + json.dumps({"question": DEPUTY}) + "\n")
    answers = json_lines(ok(invoke("batch", questions, "--index", article_index, "-k", "1")).stdout)
    assert answers[0]["id"] == "1" and answers[0]["results"] == [] and answers[0]["answered"] is False
    assert answers[0]["error"] == "the question is empty"
    assert expected_top(answers[1]) == (MORVAN, 10)


# -- show, list, remove (no model needed) -------------------------------------------------


def paragraph(name: str, number: int) -> str:
    return [line for line in seed_text(name).splitlines() if line.strip()][number - 1]


@pytest.mark.model
@pytest.mark.parametrize("citation", [f"{MORVAN} ¶5", f"{MORVAN}#5", f"articles/{MORVAN} ¶ 5"])
def test_show_prints_passage_and_neighbours(article_index, citation):
    out = ok(invoke("show", citation, "--index", article_index)).stdout
    assert f"» {MORVAN} ¶5   articles/{MORVAN} [1034, 1461)" in out
    flat = re.sub(r"\s+", " ", out)
    for number in (4, 5, 6):
        assert paragraph(MORVAN, number) in flat
    assert paragraph(MORVAN, 3) not in flat and paragraph(MORVAN, 7) not in flat
    assert out.index("¶4") < out.index("» ") < out.index("¶6")


@pytest.mark.model
def test_show_json(article_index):
    shown = json.loads(ok(invoke("show", f"{MORVAN} ¶5", "--index", article_index, "--json", "-C", "2")).stdout)
    assert shown["citation"] == f"{MORVAN} ¶5"
    assert (shown["doc"], shown["paragraph"], shown["page"]) == (f"articles/{MORVAN}", 5, None)
    assert seed_text(MORVAN)[shown["start"] : shown["end"]] == shown["text"] == paragraph(MORVAN, 5)
    assert [p["paragraph"] for p in shown["before"]] == [3, 4]
    assert [p["paragraph"] for p in shown["after"]] == [6, 7]
    for p in shown["before"] + shown["after"]:
        assert seed_text(MORVAN)[p["start"] : p["end"]] == p["text"] == paragraph(MORVAN, p["paragraph"])


@pytest.mark.model
def test_show_long_paragraph_joins_its_windows(article_index):
    shown = json.loads(ok(invoke("show", f"{KESTREL} ¶6", "--index", article_index, "--json", "-C", "0")).stdout)
    assert shown["text"] == paragraph(KESTREL, 6)
    assert shown["before"] == [] and shown["after"] == []


@pytest.mark.model
def test_show_title_and_last_paragraph_have_one_sided_context(article_index):
    first = json.loads(ok(invoke("show", f"{KESTREL}#1", "--index", article_index, "--json")).stdout)
    assert first["before"] == [] and [p["paragraph"] for p in first["after"]] == [2]
    last = json.loads(ok(invoke("show", f"{KESTREL}#11", "--index", article_index, "--json")).stdout)
    assert [p["paragraph"] for p in last["before"]] == [10] and last["after"] == []


@pytest.mark.model
def test_list_shows_seed_documents_with_passage_counts(article_index):
    result = ok(invoke("list", "--index", article_index))
    # Kestrel: 11 paragraphs, the long ¶6 in two windows; Morvan: 11 paragraphs.
    assert result.stdout.splitlines() == [f"    12  articles/{KESTREL}", f"    11  articles/{MORVAN}"]
    assert result.stderr.strip() == "2 documents, 23 passages"
    rows = json_lines(ok(invoke("list", "--index", article_index, "--json")).stdout)
    assert [(r["doc"], r["passages"]) for r in rows] == [(f"articles/{KESTREL}", 12), (f"articles/{MORVAN}", 11)]
    assert all(re.fullmatch(r"[0-9a-f]{64}", r["sha256"]) for r in rows)


@pytest.mark.model
def test_remove_drops_document(model, index_copy):
    result = ok(invoke("remove", KESTREL, "--index", index_copy))
    assert result.stdout == f"removed articles/{KESTREL}\n"
    assert ok(invoke("list", "--index", index_copy)).stdout.splitlines() == [f"    11  articles/{MORVAN}"]
    answer = json.loads(ok(invoke("ask", FLOODED, "--index", index_copy, "-k", "5", "--json")).stdout)
    assert {r["doc"] for r in answer["results"]} == {f"articles/{MORVAN}"}
    assert_one_line_error(invoke("show", f"{KESTREL} ¶2", "--index", index_copy))
    assert_one_line_error(invoke("remove", KESTREL, "--index", index_copy))


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["ask", "anything"],
        ["batch", "-"],
        ["show", f"{KESTREL} ¶2"],
        ["list"],
        ["remove", KESTREL],
        ["serve"],
    ],
    ids=lambda a: a[0],
)
def test_missing_index_is_one_line_error(tmp_path, args):
    result = invoke(*args, "--index", tmp_path / "nowhere", input="a question\n")
    line = assert_one_line_error(result)
    assert f"no index at {tmp_path / 'nowhere'}" in line
    assert not (tmp_path / "nowhere").exists()


def test_missing_index_in_a_real_process_prints_no_traceback(tmp_path):
    """What a user sees in a terminal: one line on stderr, exit status 1."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    proc = subprocess.run(
        [sys.executable, "-m", "qa.cli", "ask", "When?", "--index", str(tmp_path / "nowhere")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"Error: no index at {tmp_path / 'nowhere'} (create one with: qa index PATH --index {tmp_path / 'nowhere'})"
    ]


@pytest.mark.model
@pytest.mark.parametrize(
    "citation",
    ["nonsense", "", f"{MORVAN}", "unknown.txt ¶1", f"{MORVAN} ¶99", f"{MORVAN} ¶0", f"{KESTREL} ¶6, chars 1-2"],
)
def test_bad_citation_is_one_line_error(article_index, citation):
    assert_one_line_error(invoke("show", citation, "--index", article_index))


@pytest.mark.model
def test_empty_question_is_one_line_error(model, article_index):
    line = assert_one_line_error(invoke("ask", "   ", "--index", article_index))
    assert line == "Error: the question is empty"


@pytest.mark.model
@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.txt", None, "cannot read questions file"),
        ("folder.txt", "DIR", "cannot read questions file"),
        ("latin1.txt", b"caf\xe9 au lait?\n", "cannot read questions file"),
        ("bad.jsonl", '{"question": "ok?"}\n{not json\n', "bad.jsonl:2: expected a JSON object"),
        ("no_question.jsonl", '{"q": "ok?"}\n', "no_question.jsonl:1: expected a JSON object"),
        ("list.jsonl", '["a question"]\n', "list.jsonl:1: expected a JSON object"),
        ("number.jsonl", '{"question": 12}\n', 'number.jsonl:1: "question" must be a string'),
        ("no_column.csv", "query,id\nWhen?,1\n", "the CSV needs a 'question' column"),
        ("empty.csv", "", "the CSV needs a 'question' column"),
    ],
)
def test_bad_questions_file_is_one_line_error(article_index, tmp_path, name, content, message):
    path = tmp_path / name
    if content == "DIR":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    line = assert_one_line_error(invoke("batch", path, "--index", article_index))
    assert message in line


@pytest.mark.parametrize(
    "args",
    [
        ["ask", "When?", "-k", "0"],
        ["ask", "When?", "-k", "101"],
        ["ask", "When?", "-k", "three"],
        ["ask", "When?", "--retriever", "magic"],
        ["ask", "When?", "--bogus"],
        ["ask"],
        ["batch", "-", "--format", "xml"],
        ["show", "a.txt ¶1", "-C", "99"],
        ["index"],
        ["remove"],
        ["serve", "--port", "0"],
        ["frobnicate"],
    ],
    ids=" ".join,
)
def test_bad_usage_exits_2(args, tmp_path):
    result = invoke(*args, "--index", tmp_path / "idx") if args != ["frobnicate"] else invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "Error:" in result.stderr and "Usage:" in result.stderr
    assert not (tmp_path / "idx").exists()


@pytest.mark.model
@pytest.mark.parametrize(
    "args",
    [
        ["ask", "When?"],
        ["batch", "-"],
        ["index", SEEDS],
    ],
    ids=lambda a: a[0],
)
def test_model_mismatch_is_one_line_error(model, index_copy, args):
    before = sorted(p.name for p in index_copy.iterdir())
    result = invoke(*args, "--index", index_copy, "--model", "some-other-name", input="When?\n")
    line = assert_one_line_error(result)
    assert "built with model 'all-MiniLM-L6-v2', not 'some-other-name'" in line
    assert sorted(p.name for p in index_copy.iterdir()) == before


@pytest.mark.model
def test_model_mismatch_from_environment(model, article_index):
    result = invoke("ask", "When?", "--index", article_index, env={"QA_MODEL": "some-other-name"})
    assert "not 'some-other-name'" in assert_one_line_error(result)


@pytest.mark.model
def test_full_hub_name_of_default_model_is_accepted(model, article_index):
    ok(invoke("ask", ALDAN, "--index", article_index, "-k", "1", "--model", "sentence-transformers/all-MiniLM-L6-v2"))


@pytest.mark.model
def test_batch_output_into_missing_folder_is_one_line_error(model, article_index, tmp_path):
    result = invoke("batch", "-", "--index", article_index, "-o", tmp_path / "no" / "such" / "out.jsonl", input="When?\n")
    assert_one_line_error(result)


# -- help ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["index"], ["ask"], ["batch"], ["show"], ["list"], ["remove"], ["serve"]], ids=str)
def test_help_has_an_example(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert "Usage:" in result.stdout
