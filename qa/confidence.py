"""How likely the first passage is to answer: a calibrated confidence, and when to say "no good answer".

The figure is a logistic model of properties of the question, of the passage
and of the question's candidates as a crowd. No rank or z-score enters it, and
nothing counted over the whole index:

- ``sentence``: cosine of the question with the passage's best sentence;
- ``passage``: cosine with the whole passage;
- ``late``: the token-by-token score (``qa.late``): the mean, over the
  question's content words, of each word's best cosine with a token of the
  passage; it credits paraphrases ("foreign minister" for "Minister for
  Foreign Affairs"), which sharing words does not;
- ``late_sentence``: the same over the passage's best sentence alone;
- ``coverage``: the idf-weighted share of the question's words found in one
  sentence of the passage (``qa.search``);
- ``median_sentence`` and ``median_late``: the median, over all the question's
  candidates (some 100 to 300 passages), of the best-sentence cosine and of
  the token-by-token score. They say whether the documents speak of what the
  question speaks of at all: a question from another field finds candidates
  that match none of its words' meanings, while one about the documents' own
  subject finds many passages that match some of them. ``median_late`` takes
  a positive coefficient, ``median_sentence`` a small negative one beside it.
  Being medians over the nearest passages, they rise a little as an index
  grows; they were fitted on indexes of 40 to 15,000 passages.

The two medians raised the share of questions from outside an index that are
not answered, on the check half (even-numbered questions), from 0.63 to 0.79
on SQuAD, 0.50 to 0.59 on SciFact and 0.55 to 0.71 on NFCorpus (the seeds
0.95 to 0.97), with the right first passages still answered at 97% or more
but on the seeds (one question more of 21 went unanswered there).

Measured and left out (bench/tune.py, same data): the weakest-matched question
word's best cosine and the share of the question's words that no indexed
passage contains (each took a coefficient of the wrong sign, or none); the
median passage cosine of the candidates, which beside the others lowered
every set's figure; means, quartiles and the top ten's means instead of the
medians, which did no better.

Its coefficients were fitted by ``bench/tune.py`` on the odd-numbered questions
of every benchmark set (SQuAD dev, SciFact, NFCorpus, the seeds' own questions)
as "the first passage is right" against questions from outside each index
(another set's questions, and near-topic questions the seeds cannot answer),
each set weighing the same. It reads as a chance: of the benchmark's answers
shown with 0.8, about eight in ten were right. A model or an index without
token vectors has none of ``LATE_FEATURES``: then the second set of
coefficients, fitted the same way without them, is used.

``answered`` is ``confidence >= ANSWER_CONFIDENCE``, a threshold chosen on the
same half so that nearly every question whose first passage is right is
answered (97% or more on each set); the even-numbered questions checked it
(README, bench/quality.py).
"""

from __future__ import annotations

import math

import numpy as np

FEATURES = ("sentence", "passage", "late", "late_sentence", "coverage", "median_sentence", "median_late")
# The features only token vectors give.
LATE_FEATURES = ("late", "late_sentence", "median_late")
# (intercept, one coefficient a feature); fitted by bench/tune.py, see the module's text.
COEFFICIENTS = (-8.299, 5.356, 1.7, 4.27, 2.63, 0.18, -3.18, 5.643)
# Without token vectors ``LATE_FEATURES`` are not known (their coefficients are 0).
COEFFICIENTS_WITHOUT_LATE = (-5.131, 6.451, 2.015, 0.0, 0.0, 2.477, 2.311, 0.0)
ANSWER_CONFIDENCE = 0.24
# Without token vectors the same rule (97% of right first passages answered on every set) gives 0.08.
ANSWER_CONFIDENCE_WITHOUT_LATE = 0.08


def confidence(features: tuple[float, ...], *, late: bool = True) -> float:
    """The calibrated chance that the passage answers the question, from its ``FEATURES``
    (``late=False`` when the token-by-token ones are not known)."""
    intercept, *weights = COEFFICIENTS if late else COEFFICIENTS_WITHOUT_LATE
    z = intercept + float(np.dot(weights, features))
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


def threshold(*, late: bool = True) -> float:
    """The confidence from which the first passage counts as an answer."""
    return ANSWER_CONFIDENCE if late else ANSWER_CONFIDENCE_WITHOUT_LATE


def in_words(value: float) -> str:
    """The confidence as a reader takes it."""
    if value >= 0.8:
        return "likely answers"
    if value >= 0.5:
        return "may answer"
    if value >= ANSWER_CONFIDENCE:
        return "might answer"
    return "unlikely to answer"
