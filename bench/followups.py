"""Follow-up questions on the seed articles: is the right paragraph first?

    python bench/followups.py

Each pair is a question and a follow-up that leans on it ("he", "she", "it").
The follow-up is asked alone, and with the context the chat page adds
(qa.followup.contextualize: names from the previous answer's highlight).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa import QA  # noqa: E402

K = "seeds/000_kestrel_bay_tidal_barrier.txt"
M = "seeds/001_morvan_exile_government.txt"

# (first question, follow-up, gold document, gold paragraph of the follow-up)
PAIRS = [
    ("Who is the president of the exile government?", "What did he say about Aldan?", M, 5),
    ("Who is the president of the exile government?", "What will be his first priority?", M, 7),
    ("Who resigned as president in August?", "What did she write in her letter?", M, 11),
    ("Who is Kostal's deputy?", "What case will she file?", M, 10),
    ("Which country controls Morvan since the offensive?", "What did its foreign ministry call the exile government?", M, 8),
    ("How many people fled Morvan?", "Where do they live now?", M, 6),
    ("Who proposed the motion to build the barrier?", "How many times has she seen the harbour wall rebuilt?", K, 4),
    ("Who voted against the barrier?", "What does she propose instead?", K, 7),
    ("Which firm designed the steel gates?", "Where did it build similar gates before?", K, 6),
    ("Who is the harbour master?", "What did he say about the cargo trade?", K, 6),
    ("Who runs a bakery on Quay Street?", "How often was her shop flooded?", K, 10),
    ("Which group worries about the wading birds?", "When does it want the building work to happen?", K, 8),
]


def rank_of(answer, doc: str, paragraph: int) -> int | None:
    for hit in answer.hits:
        if hit.passage.doc == doc and hit.passage.paragraph == paragraph:
            return hit.rank
    return None


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--distractors", type=Path, default=None,
        help="also index this folder (e.g. ../shared/bench/squad-dev/docs) so a follow-up alone has rivals",
    )
    args = parser.parse_args()
    qa = QA(Path(tempfile.mkdtemp(prefix="qa-followups-")))
    qa.index([ROOT / "seeds", *([args.distractors] if args.distractors else [])])
    alone = with_context = 0
    print("| follow-up | alone | with context | searched for |")
    print("|---|---|---|---|")
    for first, follow_up, doc, paragraph in PAIRS:
        previous = qa.ask(first, k=5)
        plain = qa.ask(follow_up, k=5)
        contextual = qa.ask(follow_up, k=5, previous=previous)
        r_plain, r_context = rank_of(plain, doc, paragraph), rank_of(contextual, doc, paragraph)
        alone += r_plain == 1
        with_context += r_context == 1
        print(f"| {follow_up} | {r_plain or '-'} | {r_context or '-'} | {contextual.searched or ''} |")
    n = len(PAIRS)
    print(f"\nright paragraph first: alone {alone}/{n}, with context {with_context}/{n}")


if __name__ == "__main__":
    main()
