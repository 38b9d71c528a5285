"""Test-time ensembling over the order of a sorting prompt's items (`eval.order_votes`, `model.eval_order_votes`).

A sorting answer does not depend on the order the numbers are given in, but a model's mistakes do: on the
sorting main job the answers to one array given in different orders are often wrong in different places
(docs/RESULTS.md, "Sorting: a vote over the order of the items"). So each problem is decoded in N orders (its
own first, then N - 1 random ones), each answer's labels are mapped back to the problem's own labels, and the
answers vote pairwise:

    view v      the digits of item j are those of item pi_v(j); the labels stay where they are, so label j of
                view v names the problem's item pi_v(j)
    pairwise    W[x][y] = the answers that name labels x and y once each, x first (an answer that misses a label
                or writes one twice still votes on the pairs of the labels it names once)
    Copeland    x's score = the labels y with W[x][y] > W[y][x]; the answer lists the labels by score, ties in
                the order of the first answer that votes (the problem's own order first)

Equal numbers keep their relative order in every view (they are written in label order, which only the
problem's own order can show), so an answer right in a view is right after mapping back. An answer that does
not end in EOS, or names a token that is not one of the problem's labels, does not vote; with no answer that
names two labels once the problem's own answer stands. Each problem's orders come from a generator seeded by its
own tokens, so an answer does not depend on the batch it was decoded in. Off (N <= 1): plain decoding.

Sub-arrays (`eval.order_view_items` S, `model.eval_order_view_items`): a problem of more than S items is answered
by its own order and views of S of its items, each a smaller sorting problem (the first S item places and their
labels, the rest dropped, left-padded to the row's length), drawn until every pair of items is in N - 1 of them;
so every pair is still ordered by N answers, each read at an array length training saw. Problems of at most S
items vote over whole orders as above.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ItemTokens:
    """The token ids that delimit a sorting prompt's items (`arith.data.tokenizer.Tokenizer`'s)."""

    comma: int
    eq: int
    eos: int
    pad: int
    digits: frozenset[int]
    labels: frozenset[int]

    @classmethod
    def of(cls, tok) -> ItemTokens:
        return cls(
            tok.comma_id,
            tok.eq_id,
            tok.eos_id,
            tok.pad_id,
            frozenset(tok.digit_ids),
            frozenset(tok.label_ids),
        )


def _items(row: Sequence[int], t: ItemTokens) -> list[tuple[int, int, int | None]]:
    """(start, end) of each item's digit run and its label token (None if it has none), the items being the
    tokens between commas up to '=' after the leading PADs."""
    items, start, end, label = [], None, None, None
    for i in range(next((i for i, x in enumerate(row) if x != t.pad), len(row)), len(row)):
        x = row[i]
        if x in t.digits:
            start, end = (i if start is None else start), i + 1
        elif x in t.labels:
            label = x
        elif x in (t.comma, t.eq):
            if start is not None:
                items.append((start, end, label))
            start, end, label = None, None, None
            if x == t.eq:
                break
    return items


def _keep_equal_in_order(pi: list[int], groups: dict[tuple, list[int]]) -> list[int]:
    """pi with each group of equal numbers refilled, in the problem's order, into the places pi gives them."""
    for members in groups.values():
        if len(members) > 1:
            places = [j for j in range(len(pi)) if pi[j] in members]
            chosen = sorted(pi[j] for j in places)
            for place, item in zip(places, chosen):
                pi[place] = item
    return pi


def _sub_arrays(m: int, size: int, cover: int, rng: random.Random) -> list[list[int]]:
    """Sets of `size` of the m items (in a random order each) until every pair of items is in at least `cover`
    of them: each starts from a least-covered pair and adds the item that covers most pairs still short."""
    count = {(x, y): 0 for x in range(m) for y in range(x + 1, m)}
    out: list[list[int]] = []
    while min(count.values()) < cover:
        low = min(count.values())
        view = list(rng.choice([p for p, c in count.items() if c == low]))
        while len(view) < size:
            short = {
                z: sum(count[min(z, v), max(z, v)] < cover for v in view) for z in range(m) if z not in view
            }
            best = max(short.values())
            view.append(rng.choice([z for z, n in short.items() if n == best]))
        for i, x in enumerate(view):
            for y in view[i + 1 :]:
                count[min(x, y), max(x, y)] += 1
        out.append(rng.sample(view, len(view)))
    return out


def orders(row: Sequence[int], views: int, t: ItemTokens, size: int = 0) -> list[list[int]]:
    """The views of the row's items (pi: view position -> the problem's item), the problem's own order first;
    equal numbers keep their relative order in each; seeded by the row's tokens. With size 0 or at least the
    item count: `views` orders of all items. Else (sub-arrays): the problem's own order, then sets of `size`
    items until every pair of items is in `views` - 1 of them, so that each pair is ordered by `views` answers."""
    numbers = [tuple(row[a:b]) for a, b, _ in _items(row, t)]
    m = len(numbers)
    rng = random.Random(zlib.crc32(bytes(str(list(row)), "ascii")))
    groups: dict[tuple, list[int]] = {}
    for i, n in enumerate(numbers):
        groups.setdefault(n, []).append(i)
    if 1 < size < m:
        subs = _sub_arrays(m, size, views - 1, rng)
    else:
        subs = [rng.sample(range(m), m) for _ in range(views - 1)]
    return [list(range(m))] + [_keep_equal_in_order(pi, groups) for pi in subs]


def permuted(
    row: Sequence[int],
    pi: Sequence[int],
    t: ItemTokens,
    items: list[tuple[int, int, int | None]] | None = None,
) -> tuple[list[int], dict[int, int]]:
    """The row with item j's digits replaced by item pi[j]'s for j < len(pi), and the map from the view's label
    tokens to the problem's. With fewer entries in pi than items (a sub-array view), the view keeps the first
    len(pi) item places (their labels: the start of the problem's label run, as in training), drops the rest and
    is left-padded to the row's length; with as many, it has the row's length and layout. items: the row's
    `_items`, when the caller has them (a problem's many views read them once)."""
    items = _items(row, t) if items is None else items
    if not items:
        return list(row), {}
    eq = list(row).index(t.eq) if t.eq in row else len(row)
    out = list(row[: items[0][0]])  # PADs, and the first label where it leads its item
    for j, (_, end, _) in enumerate(items[: len(pi)]):
        src_start, src_end, _ = items[pi[j]]
        if j + 1 < len(pi):
            rest = list(row[end : items[j + 1][0]])  # item j's rest, the comma, the next item's lead
        else:  # item j's rest up to its comma, then '=' and what follows it
            close = next(i for i in range(end, eq + 1) if i == eq or row[i] == t.comma)
            rest = list(row[end:close]) + list(row[eq:])
        out += list(row[src_start:src_end]) + rest
    labels = [label for _, _, label in items]
    back = {labels[j]: labels[pi[j]] for j in range(len(pi)) if labels[j] is not None}
    return [t.pad] * (len(row) - len(out)) + out, back


def _labels(answer: Sequence[int], back: dict[int, int], t: ItemTokens) -> list[int] | None:
    """The labels a decoded answer names once, in its order, mapped to the problem's; None unless it is
    `label, label, ..., EOS` with labels of the problem only (a label may be missing or written twice)."""
    if t.eos not in answer:
        return None
    body = list(answer[: list(answer).index(t.eos)])
    if not body or any(x != t.comma for x in body[1::2]):
        return None
    got = [back.get(x) for x in body[0::2]]
    return None if None in got else [x for x in got if got.count(x) == 1]


def copeland(answers: Sequence[list[int] | None], labels: Sequence[int]) -> list[int] | None:
    """`labels` ordered by pairwise wins: W[x][y] counts the answers (None: not read) that name x and y once
    each, x first; x's score is the labels y with W[x][y] > W[y][x]. Ties in the order of the first answer that
    votes (labels it lacks after it, as `labels` lists them); None when no answer names two labels once."""
    voting = [a for a in answers if a is not None and len(a) >= 2]
    if not voting:
        return None
    pos = [{x: i for i, x in enumerate(a)} for a in voting]
    before = {
        (x, y): sum(x in p and y in p and p[x] < p[y] for p in pos) for x in labels for y in labels if x != y
    }
    score = {x: sum(before[x, y] > before[y, x] for y in labels if y != x) for x in labels}
    first = pos[0]
    return sorted(labels, key=lambda x: (-score[x], first.get(x, len(labels)), list(labels).index(x)))


def settled(answers: Sequence[list[int] | None], labels: Sequence[int], views: int) -> list[int] | None:
    """The answer naming every label once that more than half of all `views` orders gave, when there is one:
    it wins every pair whatever the orders still to decode say, so it is `copeland`'s answer; else None."""
    full = Counter(tuple(a) for a in answers if a is not None and len(a) == len(labels))
    best = full.most_common(1)
    return list(best[0][0]) if best and 2 * best[0][1] > views else None


def _pads(row: Sequence[int], t: ItemTokens) -> int:
    """The row's left PADs."""
    return next((i for i, x in enumerate(row) if x != t.pad), len(row))


# the most sub-array views one decoding call takes (views of several problems and orders at once)
VIEW_ROWS = 1024


def decode(
    inner: Callable[[torch.Tensor, list[int], list[int]], torch.Tensor],
    prompts: torch.Tensor,
    max_new: int,
    views: int,
    t: ItemTokens,
    size: int = 0,
    chunk: int = VIEW_ROWS,
) -> torch.Tensor:
    """Each prompt's views (`orders`; size: the most items a view shows, 0 = all) decoded by `inner(prompts,
    rows, added)` (the offset vote's decoding of those rows of the batch, a row listed once per view of it, whose
    (len(rows), max_new) output it returns; added: the left PADs each view has beyond its row's, 0 but for
    sub-arrays) and combined by `copeland`; the same shape and padding as `inner`'s. The problems' own orders are
    decoded first, in one call. A problem whose views show all its items then decodes one order at a time and
    stops once one answer has more than half of its orders (`settled`): the same answers as decoding every order,
    fewer decodes on the problems the model agrees on. The sub-array views of the other problems, which cannot
    settle early, are decoded together, `chunk` views a call whatever problem and order they come from (a problem
    of 15 items has 211 views of 2: one call per view would decode each with only the batch's other problems)."""
    rows = prompts.tolist()
    pis = [orders(r, views, t, size) for r in rows]
    found = [_items(r, t) for r in rows]  # each row's items, read once for all its views
    labels = [[label for *_, label in items] for items in found]
    pads = [_pads(r, t) for r in rows]  # each row's own left PADs
    got: list[list[list[int] | None]] = [[] for _ in rows]

    def run(jobs: list[tuple[int, int]]) -> torch.Tensor:
        """Decode views (b, v) in one call, each answer appended to got[b] (jobs in v order for each b)."""
        seen = [permuted(rows[b], pis[b][v], t, found[b]) for b, v in jobs]
        ids = torch.as_tensor([view for view, _ in seen], dtype=prompts.dtype, device=prompts.device)
        out = inner(
            ids, [b for b, _ in jobs], [_pads(view, t) - pads[b] for (view, _), (b, _) in zip(seen, jobs)]
        )
        for (b, _), (_, back), answer in zip(jobs, seen, out.tolist()):
            got[b].append(_labels(answer, back, t))
        return out

    result = run([(b, 0) for b in range(len(rows))]).clone()  # the own answers stand where no order votes
    done: dict[int, list[int] | None] = {}
    whole = [all(len(pi) == len(lab) for pi in pi_b) for pi_b, lab in zip(pis, labels)]  # no sub-array view
    jobs = [(b, v) for b in range(len(rows)) if not whole[b] for v in range(1, len(pis[b]))]
    for start in range(0, len(jobs), max(1, chunk)):
        run(jobs[start : start + max(1, chunk)])
    done.update({b: copeland(got[b], labels[b]) for b in range(len(rows)) if not whole[b]})
    todo = [b for b in range(len(rows)) if whole[b]]
    for v in range(1, max((len(pis[b]) for b in todo), default=0) + 1):
        for b in todo:
            win = settled(got[b], labels[b], len(pis[b]))
            if win is not None or v >= len(pis[b]):
                done[b] = win if win is not None else copeland(got[b], labels[b])
        todo = [b for b in todo if b not in done]
        if not todo:
            break
        run([(b, v) for b in todo])
    for b, order in done.items():
        if order is None:
            continue  # no answer named two labels once: the prompt's own stands
        toks = [x for label in order for x in (label, t.comma)][:-1] + [t.eos]
        result[b] = t.pad
        result[b, : min(len(toks), max_new)] = torch.as_tensor(toks[:max_new], dtype=result.dtype)
    return result
