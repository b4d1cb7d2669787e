"""Choose the fused retrievers' weights on every set at once, on half the questions, and check them on the rest.

    python bench/tune.py [--work DIR] [--sets squad,scifact,nfcorpus,seeds] [--values 0,0.5,1,2,3]

Uses the indexes ``bench/quality.py`` builds in ``--work``. Every question's
candidates and signals (``qa.search.gather_signals``) are computed once; each
weighting is then a re-ranking of those arrays, so hundreds of weightings cost
seconds. Coordinate ascent over ``--values`` maximises the mean, over the sets,
of each set's figure (recall@1 of the gold paragraph, nDCG@10 for BEIR) on the
odd-numbered questions of every set, taking a step only when no set's figure
falls by more than ``--tolerance``; the even-numbered ones only check the
choice. Prints the path taken, and the current weights, the best and the best
without each of its signals, on both halves.

Then the confidence (``qa.confidence``): a logistic regression of the first
passage's features, "right" (the gold paragraph, or a relevant document)
against questions from outside the index (``quality.outside_questions``),
fitted on the odd halves with every set and kind weighing the same, once with
the token-by-token features and once without (``LATE_FEATURES``); the threshold is the highest
that still answers 97% of the right first passages on every set's odd half.
Prints the coefficients to copy into ``qa/confidence.py`` and both halves'
figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa import QA  # noqa: E402
from qa.evaluate import Gold, document_scores, ranked_documents, read_labeled  # noqa: E402
from qa.confidence import FEATURES, LATE_FEATURES  # noqa: E402
from qa.search import WEIGHTS, confidence_features, fuse  # noqa: E402

from quality import SETS, half, open_index, outside_questions  # noqa: E402


class Question:
    """One question's signals and what counts as right among its candidates."""

    def __init__(self, signals, labeled, resolve):
        self.signals = signals
        keys = [(signals.passages[c.passage_id].doc, signals.passages[c.passage_id].paragraph) for c in signals.candidates]
        self.keys = keys
        self.names = [(signals.passages[c.passage_id].doc, *signals.passages[c.passage_id].also) for c in signals.candidates]
        self.grades, self.gold = None, None
        if labeled.qrels:
            self.grades = {resolve(name) or name: grade for name, grade in labeled.qrels}
        elif labeled.answerable:
            doc = resolve(labeled.doc)
            self.gold = np.array([d == doc and p == labeled.paragraph for d, p in keys])

    def top(self, weights) -> int:
        return int(np.argsort(-fuse(self.signals, "hybrid", weights), kind="stable")[0])

    def right_at_top(self, weights) -> bool:
        """Whether the first passage is right: the gold paragraph, or a relevant document."""
        if not self.signals.candidates or (self.grades is None and self.gold is None):
            return False
        i = self.top(weights)
        if self.grades is not None:
            return any(self.grades.get(name, 0) > 0 for name in self.names[i])
        return bool(self.gold[i])

    def features(self, weights) -> tuple[float, ...] | None:
        """The confidence model's inputs for the first passage (``qa.confidence``)."""
        if not self.signals.candidates:
            return None
        return confidence_features(self.signals, self.top(weights))[0]

    def score(self, weights) -> float:
        if not self.signals.candidates:
            return 0.0
        order = np.argsort(-fuse(self.signals, "hybrid", weights), kind="stable")
        if self.grades is not None:
            ranked = ranked_documents((self.names[i] for i in order), limit=10)
            return document_scores(ranked, self.grades)[1]["ndcg@10"]
        return float(self.gold[order[0]])


def load(
    work: Path, names: list[str], limit: int, every: int = 1
) -> tuple[dict[str, list[Question]], dict[str, list[Question]]]:
    """Each set's own questions, and the questions from outside its index, with their signals."""
    out, outside = {}, {}
    for name in names:
        docs, questions_file, _, _ = SETS[name]
        qa, _ = open_index(work, name, docs)
        labeled = read_labeled(questions_file)[: limit or None]
        if len(labeled) > 1000:  # SQuAD: every n-th question, for quicker rounds
            labeled = labeled[::every]
        gold = Gold(d.path for d in qa.documents())
        resolve = lambda ref: gold.resolve(ref, name)  # noqa: E731
        started = time.perf_counter()
        signals = list(qa.signals_many([q.question for q in labeled]))
        out[name] = [Question(s, q, resolve) for s, q in zip(signals, labeled)]
        others = [q for q, _ in outside_questions(name, limit)]
        outside[name] = [Question(s, q, resolve) for s, q in zip(qa.signals_many([q.question for q in others]), others)]
        print(f"{name}: {len(labeled)} questions' signals and {len(others)} from outside in "
              f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    return out, outside


def fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1e-3) -> np.ndarray:
    """Weighted logistic regression by Newton's method; ``[intercept, coefficients...]``."""
    x1 = np.hstack([np.ones((len(x), 1)), x])
    beta = np.zeros(x1.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-np.clip(x1 @ beta, -50, 50)))
        gradient = x1.T @ (w * (p - y)) + l2 * beta
        hessian = (x1 * (w * p * (1 - p))[:, None]).T @ x1 + l2 * np.eye(len(beta))
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return beta


def calibrate(sets, outside, weights, use_late: bool) -> dict:
    """Fit the confidence model on the odd halves, choose the threshold there, report both halves."""
    def rows(which):
        out = []  # (set, features, label: 1 right at top, 0 from outside)
        for name in sets:
            for q in half(sets[name], which):
                f = q.features(weights)
                if f is not None and q.right_at_top(weights):
                    out.append((name, "own", f, 1.0))
            for q in half(outside[name], which):
                f = q.features(weights)
                if f is not None:
                    out.append((name, "outside", f, 0.0))
        return out

    keep = [i for i, f in enumerate(FEATURES) if use_late or f not in LATE_FEATURES]
    train = rows("odd")
    groups = {}
    for name, kind, _, _ in train:
        groups[(name, kind)] = groups.get((name, kind), 0) + 1
    x = np.array([[r[2][i] for i in keep] for r in train])
    y = np.array([r[3] for r in train])
    w = np.array([1.0 / groups[(r[0], r[1])] for r in train]) * len(groups)
    beta = fit_logistic(x, y, w)

    def probabilities(rs):
        xs = np.array([[r[2][i] for i in keep] for r in rs])
        return 1 / (1 + np.exp(-(beta[0] + xs @ beta[1:])))

    def shares(rs, t):
        p = probabilities(rs)
        out = {}
        for name in sets:
            own = [pi >= t for pi, r in zip(p, rs) if r[0] == name and r[1] == "own"]
            out_ = [pi < t for pi, r in zip(p, rs) if r[0] == name and r[1] == "outside"]
            out[name] = (round(float(np.mean(own)), 4) if own else None, round(float(np.mean(out_)), 4) if out_ else None)
        return out

    # The highest threshold that still answers 97% of the right first passages on every set's odd half.
    threshold = 0.5
    for t in np.arange(0.95, 0.0, -0.01):
        if all(a is None or a >= 0.97 for a, _ in shares(train, t).values()):
            threshold = round(float(t), 2)
            break
    test = rows("even")
    coefficients = [round(float(beta[0]), 3)]
    named = dict(zip([FEATURES[i] for i in keep], beta[1:]))
    coefficients += [round(float(named.get(f, 0.0)), 3) for f in FEATURES]
    return {"coefficients": coefficients, "threshold": threshold,
            "odd": shares(train, threshold), "even": shares(test, threshold)}


def figures(sets: dict[str, list[Question]], weights: dict, which: str) -> dict[str, float]:
    out = {name: round(float(np.mean([q.score(weights) for q in half(qs, which)])), 4) for name, qs in sets.items()}
    out["mean"] = round(float(np.mean(list(out.values()))), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "qa" / "bench")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--values", default="0,0.5,1,2,3")
    parser.add_argument(
        "--signals",
        default="lexical,passage,sentence,coverage,lead,late_whole,late_sentence,doc_lexical",
    )
    parser.add_argument(
        "--tolerance", type=float, default=0.003,
        help="a step is taken only if no set's figure falls by more than this (on the odd half)",
    )
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--every", type=int, default=1, help="of a set of over 1,000 questions, ask every n-th")
    args = parser.parse_args()
    sets, outside = load(args.work, [s for s in args.sets.split(",") if s], args.limit, args.every)
    values = [float(v) for v in args.values.split(",")]
    signal_names = args.signals.split(",")

    start = {name: WEIGHTS["hybrid"].get(name, 0.0) for name in signal_names}
    best, best_figures = dict(start), figures(sets, start, "odd")
    print(f"start {json.dumps(start)}: odd {best_figures}")
    for _ in range(args.passes):
        moved = False
        for name in signal_names:
            for value in values:
                if value == best[name]:
                    continue
                trial = {**best, name: value}
                f = figures(sets, trial, "odd")
                if f["mean"] > best_figures["mean"] + 1e-4 and all(
                    f[s] >= best_figures[s] - args.tolerance for s in sets
                ):
                    best, best_figures, moved = trial, f, True
                    print(f"  {name} = {value}: odd {f}")
        if not moved:
            break

    fused = {name: WEIGHTS["fused"].get(name, 0.0) for name in signal_names}
    rows = [("fused (the current weights)", fused), ("start: hybrid (the current weights)", start),
            ("best on the odd half", best)]
    rows += [(f"best without {name}", {**best, name: 0.0}) for name in signal_names if best[name]]
    header = [*sets, "mean"]
    for which in ("odd", "even"):
        print(f"\n{which}-numbered questions: " + ", ".join(header))
        print("| weights | " + " | ".join(header) + " |")
        print("|---|" + "---|" * len(header))
        for label, weights in rows:
            f = figures(sets, weights, which)
            print(f"| {label} | " + " | ".join(str(f[h]) for h in header) + " |")
    result = {"start": start, "best": best}
    for use_late, label in ((True, "confidence"), (False, "confidence_without_late")):
        fitted = calibrate(sets, outside, best, use_late)
        result[label] = fitted
        print(f"\n{label}: coefficients (intercept, {', '.join(FEATURES)}) {fitted['coefficients']}, "
              f"threshold {fitted['threshold']}")
        print("| set | answered when right (odd / even) | abstained outside (odd / even) |")
        print("|---|---|---|")
        for name in sets:
            (a1, o1), (a2, o2) = fitted["odd"][name], fitted["even"][name]
            print(f"| {name} | {a1} / {a2} | {o1} / {o2} |")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
