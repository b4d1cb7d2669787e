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

A = "seeds/000_1e317d521278b0dc.txt"  # the exile government on Pakistan and China
B = "seeds/001_a6e42268cab0470d.txt"  # the exile government on Azerbaijan and China

# (first question, follow-up, gold document, gold paragraph of the follow-up)
PAIRS = [
    ("Who is the foreign minister of the exile government?", "What did he say about Pakistan?", A, 4),
    ("Who is the president of the exile government?", "What did he call Azerbaijan's agreements?", B, 6),
    ("Which late Azerbaijani president promised never to side with Beijing?", "Whose values did he promote?", B, 2),
    ("Which country does the exile government call hypocritical?", "Whom does it collaborate with?", A, 7),
    ("Which court should investigate Chinese officials?", "For which crimes should they be prosecuted?", A, 9),
    ("How many Uyghur children were separated from their families?", "Where were they placed?", B, 4),
    ("How does the release describe Xi Jinping?", "What has his regime done to Turkic peoples?", B, 5),
    ("Since when has China used counter-terrorism as a pretext?", "What has it carried out under it?", A, 3),
    ("Which bodies are asked to impose sanctions?", "On whom should they impose them?", A, 8),
    ("What does China call East Turkistan?", "What does that name mean?", B, 3),
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
