"""Scanned pages for the OCR tests: text drawn by Pillow in DejaVu Sans, with the box of every word drawn.

A page is an image only (no text layer): saved as PNG, JPEG or TIFF, or as an
image-only PDF, it can be read by OCR alone. The boxes say where each word
really is, to check what the page view marks.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
DPI = 200
SIZE = (1700, 2200)  # US letter at 200 dpi
MARGIN = 150


@dataclass(frozen=True)
class Drawn:
    paragraph: int
    word: str
    box: tuple[int, int, int, int]  # pixels


def draw_page(
    paragraphs: list[str], *, size=SIZE, font_px: int = 34, blank_line: bool = True, indent: int = 0
) -> tuple[Image.Image, list[Drawn]]:
    """A white page with the paragraphs wrapped in its margins, a blank line between them
    (or none, as in a book, where ``indent`` pixels may start each paragraph's first line)."""
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(FONT, font_px)
    space = font.getlength(" ")
    pitch = int(font_px * 1.45)
    drawn: list[Drawn] = []
    y = MARGIN
    for number, paragraph in enumerate(paragraphs):
        x = MARGIN + indent
        for word in paragraph.split():
            width = font.getlength(word)
            if x + width > size[0] - MARGIN:
                x, y = MARGIN, y + pitch
            draw.text((x, y), word, font=font, fill=0)
            left, top, right, bottom = draw.textbbox((x, y), word, font=font)
            drawn.append(Drawn(number, word, (left, top, right, bottom)))
            x += width + space
        y += 2 * pitch if blank_line else pitch
    return image, drawn


def save_pdf(path, pages: list[Image.Image]) -> None:
    """An image-only PDF: each page is the picture, nothing else (a scan)."""
    first, *rest = [p.convert("RGB") for p in pages]
    first.save(path, format="PDF", resolution=DPI, save_all=True, append_images=rest)
