"""Quotas over a whole run, and which image gets which types."""

from __future__ import annotations

from collections import Counter

import pytest

from dataflow.core.errors import InputError
from dataflow.operators.core_vision.generate.instructions.plan import assign_types, parse_quotas, type_counts

TYPES = ["add", "remove", "style", "text"]


def test_without_quotas_the_types_share_the_slots_evenly():
    assert type_counts(10, TYPES, 2) == {"add": 5, "remove": 5, "style": 5, "text": 5}
    assert type_counts(5, TYPES, 3) == {"add": 4, "remove": 4, "style": 4, "text": 3}


def test_quotas_are_exact_and_the_other_types_share_the_rest_up_to_one_per_image():
    assert type_counts(10, TYPES, 2, {"text": 1}) == {"add": 7, "remove": 6, "style": 6, "text": 1}
    assert type_counts(4, TYPES, 3, {"add": 0, "remove": 0}) == {"add": 0, "remove": 0, "style": 4, "text": 4}
    assert type_counts(6, TYPES, 2, {"add": 1, "remove": 1, "style": 1, "text": 1}) == dict.fromkeys(TYPES, 1)


@pytest.mark.parametrize("images, per_image, quotas, message", [
    (4, 5, {}, "--per-image 5 asks for more instructions per image than there are edit types"),
    (4, 1, {"add": 5}, "--quota add=5 asks for more instructions of that type than there are images \\(4\\)"),
    (4, 1, {"add": 3, "text": 3}, "the quotas ask for 6 instructions, but 4 images x --per-image 1 give 4"),
    (4, 1, {"sky": 1}, "--quota names 'sky'"),
])
def test_impossible_plans_are_refused(images, per_image, quotas, message):
    with pytest.raises(InputError, match=message):
        type_counts(images, TYPES, per_image, quotas)


def test_each_image_gets_distinct_types_and_every_count_is_met():
    ids = [f"photo-{i}" for i in range(37)]
    counts = type_counts(len(ids), TYPES, 3, {"text": 5})
    plans = assign_types(ids, counts)
    assert Counter(t for plan in plans for t in plan) == counts
    assert all(len(set(plan)) == len(plan) for plan in plans)
    assert {len(plan) for plan in plans} == {3}


def test_the_plan_follows_identities_not_order_and_the_seed_changes_it():
    ids = [f"photo-{i}" for i in range(20)]
    counts = type_counts(20, TYPES, 1)
    plans = dict(zip(ids, assign_types(ids, counts)))
    shuffled = ids[7:] + ids[:7]
    assert dict(zip(shuffled, assign_types(shuffled, counts))) == plans
    assert dict(zip(ids, assign_types(ids, counts, seed=1))) != plans


def test_quota_flags_are_parsed_with_their_spelling_in_errors():
    assert parse_quotas(["add=3", "style=1,text=0"]) == {"add": 3, "style": 1, "text": 0}
    for bad in ("add", "add=-1", "=3", "add=two"):
        with pytest.raises(InputError, match="--quota takes TYPE=N"):
            parse_quotas([bad])
