"""Properties of CLEVR-style balancing and grader-style sampling."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from stk_vqa.data.balancing import clevr_balance, clevr_reject, grader_style_sample

rows_strategy = st.lists(
    st.tuples(st.sampled_from(["count", "side", "name"]), st.sampled_from(["0", "1", "2", "3", "left", "right", "a"])),
    min_size=1,
    max_size=400,
).map(lambda pairs: [{"family": f, "answer": a, "id": i} for i, (f, a) in enumerate(pairs)])


def test_clevr_reject_follows_clevr():
    assert not clevr_reject({"a": 0, "b": 0}, "a")
    assert clevr_reject({"a": 1, "b": 0}, "a")  # 1 > 1.1 * 0
    assert not clevr_reject({"a": 11, "b": 10}, "a")  # 11 <= 11
    assert clevr_reject({"a": 12, "b": 10}, "a")
    # median rule: 5x the median (floored at 5)
    counts = {"a": 26, "b": 26, "c": 0, "d": 0, "e": 0}
    assert clevr_reject(counts, "a")  # 26 > 5 * max(0, 5)


@settings(max_examples=200, deadline=None)
@given(rows_strategy, st.integers(0, 5))
def test_clevr_balance_properties(rows, seed):
    kept = clevr_balance(rows, seed)
    ids = [r["id"] for r in kept]
    assert ids == sorted(ids) and set(ids) <= {r["id"] for r in rows}  # a subset, original order
    assert clevr_balance(rows, seed) == kept  # reproducible
    for family in {r["family"] for r in rows}:
        pool = Counter(r["answer"] for r in rows if r["family"] == family)
        counts = Counter({a: 0 for a in pool}) + Counter(r["answer"] for r in kept if r["family"] == family)
        counts = {a: counts.get(a, 0) for a in pool}
        ordered = sorted(counts.values())
        if len(pool) < 2:
            assert ordered[-1] == pool.most_common(1)[0][1]  # untouched
            continue
        # no answer dominates: the top one was at most 1.1x the runner-up when it was last accepted
        assert ordered[-1] - 1 <= 1.1 * ordered[-2]
        assert ordered[-1] - 1 <= 5 * max(ordered[len(ordered) // 2], 5)
        # every answer of the pool keeps at least one row
        assert all(counts[a] >= 1 for a in pool)


@settings(max_examples=100, deadline=None)
@given(rows_strategy, st.integers(1, 30), st.integers(0, 3))
def test_grader_style_sample_properties(rows, n, seed):
    for row in rows:
        if row["family"] == "count":
            row["family"] = "directional_count"
    kept = grader_style_sample(rows, n, seed)
    per_family = Counter(r["family"] for r in kept)
    for family in {r["family"] for r in rows}:
        eligible = [
            r for r in rows if r["family"] == family and not (family == "directional_count" and r["answer"] == "0")
        ]
        assert per_family[family] == min(n, len(eligible))
    assert all(r["answer"] != "0" for r in kept if r["family"] == "directional_count")
    assert grader_style_sample(rows, n, seed) == kept
