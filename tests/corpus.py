"""Generate a corpus of every supported format, and every bad case, in a folder.

Nothing binary is committed: PDFs are drawn with fpdf2, DOCX files written with
python-docx, zip bombs streamed with zipfile. The constants below are the text
put into each document, so tests can check where it ends up (page, paragraph,
section) without hard-coding extracted offsets.
"""

from __future__ import annotations

import os
import random
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

# -- PDF ---------------------------------------------------------------------------------

# Page number -> the paragraphs written on it, top to bottom. Page 3 is left blank
# on purpose: page numbers after an empty page must still be right.
PDF_PAGES: dict[int, list[str]] = {
    1: [
        "The quarry report opens with a survey of the northern pit. Granite blocks were cut there until 1951.",
        "Workers at the northern pit were paid by the tonne. The foreman kept ledgers in a locked tin box.",
    ],
    2: [
        "The lighthouse on Skerry Point burned paraffin until 1962, when the lamp was converted to electricity.",
        # An explicit line break after the hyphen: the word is split across two lines.
        "Support for inter-\nnationalisation came late; the harbour board printed notices in four languages.",
        "A third paragraph on page two mentions the copper weathervane on the chapel roof.",
    ],
    3: [],
}
PDF_HYPHENATED = "internationalisation"
# Page 4: two columns side by side, both starting at the same height.
PDF_COLUMNS_PAGE = 4
PDF_LEFT = "Left column text about alpine meadows. The meadows hold marmots and blue gentians in July."
PDF_RIGHT = "Right column text about coastal dunes. The dunes shelter terns among the marram grass."


def make_pdf(path: Path) -> Path:
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_font("Helvetica", size=11)
    # Line height 5 mm for 11 pt text keeps a paragraph's lines in one pdfminer
    # text box; 10 mm of space between paragraphs separates the boxes.
    for number in sorted(PDF_PAGES):
        pdf.add_page()
        for paragraph in PDF_PAGES[number]:
            pdf.multi_cell(170, 5, paragraph, align="L", new_x="LMARGIN", new_y="NEXT")
            pdf.ln(10)
    pdf.add_page()
    pdf.set_xy(15, 30)
    pdf.multi_cell(80, 5, PDF_LEFT, align="L")
    pdf.set_xy(110, 30)
    pdf.multi_cell(80, 5, PDF_RIGHT, align="L")
    pdf.output(str(path))
    return path


# -- DOCX --------------------------------------------------------------------------------

DOCX_TITLE = "Pumping Station Manual"
# (style, text) in document order; the table comes right after "Daily checks" paragraphs.
DOCX_BEFORE_TABLE = [
    ("Heading 1", "Introduction"),
    (None, "The manual describes how to maintain the pumping station on the river Wend."),
    ("Heading 2", "Daily checks"),
    (None, "Inspect the intake screens every morning and remove any debris caught on them."),
    (None, "Record the water level in the logbook before noon."),
]
DOCX_TABLE = [["Pump", "Capacity"], ["Northbank", "450 litres per second"], ["Southbank", "320 litres per second"]]
DOCX_AFTER_TABLE = [
    ("Heading 1", "Winter storage"),
    (None, "Drain the pipes before the first frost and leave the valves open."),
]


def make_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_paragraph(DOCX_TITLE, style="Title")
    for style, text in DOCX_BEFORE_TABLE:
        document.add_paragraph(text, style=style)
    table = document.add_table(rows=len(DOCX_TABLE), cols=len(DOCX_TABLE[0]))
    for r, row in enumerate(DOCX_TABLE):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    for style, text in DOCX_AFTER_TABLE:
        document.add_paragraph(text, style=style)
    document.save(str(path))
    return path


# -- HTML --------------------------------------------------------------------------------

HTML_H1 = "Beekeeping in the Highlands"
HTML_H2 = "Winter care"
HTML_INTRO = (
    "Highland bees forage on heather late in the summer, which gives the honey its dark colour and strong taste."
)
HTML_MOVE = "Beekeepers move their hives up the glens in August so the colonies can reach the flowering moors."
HTML_CLUSTER = (
    "In winter the colonies cluster tightly and live on the stores of honey that the beekeeper leaves in the hive."
)
HTML_GUARDS = "Mouse guards are fitted to the entrances in October to keep rodents away from the combs."
# Words that only occur in boilerplate; none may reach the extracted text.
HTML_BOILERPLATE = ["navlinkword", "menubarword", "scriptleakword", "stylebleedword", "footerleakword", "cookiebannerword"]

HTML = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Highland apiary</title>
<style>.nav {{ color: red }} body {{ font-family: stylebleedword, serif }}</style>
<script>var tracker = "scriptleakword"; function open() {{ return "scriptleakword"; }}</script>
</head>
<body>
<nav><ul><li><a href="/">Home navlinkword</a></li><li><a href="/shop">Shop navlinkword</a></li>
<li><a href="/about">About navlinkword</a></li></ul></nav>
<header><div class="menu">Menu menubarword</div></header>
<article>
<h1>{HTML_H1}</h1>
<p>{HTML_INTRO}</p>
<p>{HTML_MOVE}</p>
<h2>{HTML_H2}</h2>
<p>{HTML_CLUSTER}</p>
<p>{HTML_GUARDS}</p>
</article>
<div id="cookie-banner" class="cookie-consent">We use cookies cookiebannerword.</div>
<footer><p>Copyright footerleakword 2024. All rights reserved.</p></footer>
<script>console.log("scriptleakword")</script>
</body></html>
"""


# -- Markdown ----------------------------------------------------------------------------

# (section the paragraph lies under, paragraph text); None before any heading.
MARKDOWN_PARAGRAPHS = [
    (None, "A preface before any heading says what this guide is for."),
    ("Install", "Download the package from the mirror nearest to you."),
    ("Install", "Run the installer from an account with administrator rights."),
    ("Configuration", "Edit the settings file in your home folder to choose a cache directory."),
    ("Advanced options", "Set the cache size to two gigabytes for large collections."),
    ("Troubleshooting", "Restart the indexing service if it stops responding to requests."),
]
MARKDOWN = """A preface before any heading says what this guide is for.

# Install

Download the package from the mirror nearest to you.

Run the installer from an account with administrator rights.

Configuration
=============

Edit the settings file in your home folder to choose a cache directory.

Advanced options
----------------

Set the cache size to two gigabytes for large collections.

## Troubleshooting ##

Restart the indexing service if it stops responding to requests.
"""

# A fenced code block whose shell comment looks like an ATX heading.
MARKDOWN_FENCED = """# Setup

Clone the repository before anything else.

```bash
# fetch the submodules
git submodule update --init
```

Then build the documentation with the make target.
"""


# -- plain text in several encodings -------------------------------------------------------

ENCODED_TEXTS: dict[str, tuple[str, str]] = {
    # file name: (encoding to write, text)
    "enc_utf8.txt": ("utf-8", "Plain UTF-8 with an emoji 🎉 and accents: résumé, Ångström, naïve.\n\nSecond paragraph in UTF-8.\n"),
    "enc_utf8_bom.txt": ("utf-8-sig", "UTF-8 with a byte order mark: crème brûlée.\n\nAnother paragraph.\n"),
    "enc_utf16.txt": ("utf-16", "UTF-16 text: Ελληνικά, русский, 日本語 and café.\n\nZweiter Absatz mit Umlauten: äöü ß.\n"),
    "enc_cp1252.txt": (
        "cp1252",
        "Le café coûte 3 € à Zürich — c’est « très cher ».\n\n"
        "Une deuxième phrase sur la forêt où l’on cueille des champignons.\n",
    ),
    "enc_latin1.txt": (
        "latin-1",
        "Die Straße führt über die Brücke nach Köln. Der Bäcker verkauft Brötchen.\n\n"
        "Über den Flüssen liegt im März oft Nebel; die Fähre fährt trotzdem.\n",
    ),
}


def write_encoded_texts(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (encoding, text) in ENCODED_TEXTS.items():
        (folder / name).write_bytes(text.encode(encoding))
    return {name: text for name, (_, text) in ENCODED_TEXTS.items()}


# -- bad files ---------------------------------------------------------------------------------


def make_random_pdf(path: Path, seed: int = 7) -> Path:
    path.write_bytes(random.Random(seed).randbytes(4096))
    return path


def make_truncated_pdf(path: Path, good_pdf: Path) -> Path:
    data = good_pdf.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def make_binary_txt(path: Path) -> Path:
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8)
    return path


def make_empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def make_big_txt(path: Path, size: int) -> Path:
    line = b"This line repeats to make a file larger than the size limit.\n"
    path.write_bytes(line * (size // len(line) + 1))
    return path


def make_zip_bomb_docx(path: Path, good_docx: Path, *, mebibytes: int, member: str = "word/media/filler.bin") -> Path:
    """A real DOCX with one extra member of ``mebibytes`` MiB of zeros (compresses ~1000:1)."""
    shutil.copyfile(good_docx, path)
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open(member, "w", force_zip64=True) as handle:
            for _ in range(mebibytes):
                handle.write(chunk)
    return path


def make_zip_not_docx(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("readme.txt", "This archive is a valid zip file but not a Word document.\n")
        archive.writestr("data/numbers.csv", "a,b\n1,2\n")
    return path


# -- whole corpora ---------------------------------------------------------------------------

GOOD_NAMES = ["report.pdf", "manual.docx", "bees.html", "guide.md"] + list(ENCODED_TEXTS)


@dataclass
class Corpus:
    root: Path  # the folder to index; documents are named "<root.name>/<file>"
    good: list[str] = field(default_factory=list)  # file names that must be indexed
    bad: dict[str, str] = field(default_factory=dict)  # file name -> a word its skip reason must contain
    texts: dict[str, str] = field(default_factory=dict)  # plain-text file name -> its exact decoded text

    def doc(self, name: str) -> str:
        return f"{self.root.name}/{name}"


def build_good(root: Path) -> Corpus:
    """Every format, readable: a PDF, a DOCX, an HTML page, Markdown and encoded text files."""
    root.mkdir(parents=True, exist_ok=True)
    make_pdf(root / "report.pdf")
    make_docx(root / "manual.docx")
    (root / "bees.html").write_text(HTML, encoding="utf-8")
    (root / "guide.md").write_text(MARKDOWN, encoding="utf-8")
    texts = write_encoded_texts(root)
    texts["guide.md"] = MARKDOWN
    return Corpus(root=root, good=list(GOOD_NAMES), texts=texts)


# The size limit used with the bad corpus: the big file is over it, everything else under.
BAD_MAX_BYTES = 1024 * 1024


def add_bad(corpus: Corpus, *, big_bomb_mib: int = 300) -> Corpus:
    """Add one file for every way a file can fail to be read; ``bad`` maps it to its reason."""
    root = corpus.root
    make_random_pdf(root / "random.pdf")
    make_truncated_pdf(root / "truncated.pdf", root / "report.pdf")
    make_binary_txt(root / "binary.txt")
    make_empty(root / "empty.txt")
    make_empty(root / "empty.md")
    make_big_txt(root / "big.txt", 2 * BAD_MAX_BYTES)
    # Over the absolute limit (200 MiB unpacked) and over the ratio limit.
    make_zip_bomb_docx(root / "bomb.docx", root / "manual.docx", mebibytes=big_bomb_mib)
    # Only over the ratio limit: 20 MiB from ~20 KiB.
    make_zip_bomb_docx(root / "ratio_bomb.docx", root / "manual.docx", mebibytes=20)
    make_zip_not_docx(root / "not_word.docx")
    (root / "headings_only.md").write_text("# Title\n\n## Nothing below\n", encoding="utf-8")
    corpus.bad.update(
        {
            "random.pdf": "PDF",
            "truncated.pdf": "PDF",
            "binary.txt": "binary",
            "empty.txt": "empty",
            "empty.md": "empty",
            "big.txt": "limit",
            "bomb.docx": "zip bomb",
            "ratio_bomb.docx": "zip bomb",
            "not_word.docx": "DOCX",
            "headings_only.md": "no text",
        }
    )
    return corpus


def make_many_txt(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        name = f"note_{i:04d}.txt"
        (folder / name).write_text(f"Note {i} records observation {i * 7 % 101} about topic {i % 17}.\n", encoding="utf-8")
        names.append(name)
    return names


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def bump_mtime(path: Path, seconds: int = 10) -> None:
    """Change a file's modification time without touching its content."""
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 10**9))
