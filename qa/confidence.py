"""How likely the first passage is to answer: a calibrated confidence, and when to say "no good answer".

The figure is a logistic model of a few properties of the question and the
first passage alone, none of which depends on how many documents are indexed
(ranks and z-scores do, so they are left out):

- ``sentence``: cosine of the question with the passage's best sentence;
- ``passage``: cosine with the whole passage;
- ``late``: the token-by-token score (``qa.late``): the mean, over the
  question's content words, of each word's best cosine with a token of the
  passage; it credits paraphrases ("foreign minister" for "Minister for
  Foreign Affairs"), which sharing words does not.

Measured and left out (bench/tune.py, same data): the share of the question's
words in the passage, the weakest-matched question word's best cosine, and
the share of the question's words that no indexed passage contains; each took
a coefficient of the wrong sign beside the three above, or none.

Its coefficients were fitted by ``bench/tune.py`` on the odd-numbered questions
of every benchmark set (SQuAD dev, SciFact, NFCorpus, the seeds' own questions)
as "the first passage is right" against questions from outside each index
(another set's questions, and near-topic questions the seeds cannot answer),
each set weighing the same. It reads as a chance: of the benchmark's answers
shown with 0.8, about eight in ten were right. A model or an index without
token vectors has no ``late``: then the second set of coefficients, fitted the
same way without it, is used.

``answered`` is ``confidence >= ANSWER_CONFIDENCE``, a threshold chosen on the
same half so that nearly every question whose first passage is right is
answered (97% or more on each set); the even-numbered questions checked it
(README, bench/quality.py).
"""

from __future__ import annotations

import math

import numpy as np

FEATURES = ("sentence", "passage", "late")
# (intercept, one coefficient a feature); fitted by bench/tune.py, see the module's text.
COEFFICIENTS = (-7.506, 4.02, 3.071, 7.52)
# Without token vectors ``late`` is not known.
COEFFICIENTS_WITHOUT_LATE = (-4.635, 9.064, 1.818, 0.0)
ANSWER_CONFIDENCE = 0.15
# Without token vectors the same rule (97% of right first passages answered on every set) gives 0.07.
ANSWER_CONFIDENCE_WITHOUT_LATE = 0.07


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
