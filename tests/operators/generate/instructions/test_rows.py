"""The instruction job's rows: image identities, planned rows, and their expansion into written rows."""

from __future__ import annotations

from dataflow.operators.core_vision.generate.instructions.rows import (
    DRAFTS_KEY,
    IMAGE_ID_KEY,
    PLAN_KEY,
    Expander,
    JobRows,
    identities,
    image_identity,
)


def test_identities_are_the_rows_id_or_a_hash_of_the_image_and_repeats_are_told_apart():
    rows = [{"id": "cat", "images": "a.png"}, {"images": "b.png"}, {"images": "b.png"}, {"__key__": "s1", "jpg": "x"}]
    ids = identities(rows, "images", PLAN_KEY)
    assert ids[0] == "cat" and ids[3] == "s1"
    assert ids[1].startswith("img-") and len(ids[1]) == 20 and ids[2] == ids[1] + "#1"
    assert identities(rows, "images", PLAN_KEY) == ids  # stable
    assert image_identity("id:a/b") == "a/b"


def test_planned_rows_carry_their_plan_in_their_identity_and_unplanned_ones_are_left_out():
    source = [{"id": "a", "images": "a.png"}, {"id": "b", "images": "b.png"}, {"id": "c", "images": "c.png"}]
    rows = JobRows(source, "images", PLAN_KEY, [("add", "style"), (), ("text",)])
    assert rows.count() == 2
    assert [(r["id"], r[PLAN_KEY], r[IMAGE_ID_KEY]) for r in rows] == [("a [add,style]", "add,style", "a"),
                                                                       ("c [text]", "text", "c")]
    assert JobRows(source, "images", "conversations").count() == 3


def test_expansion_writes_one_row_per_instruction_and_rejects_the_rest(tmp_path):
    rejected = []
    expander = Expander("images", "conversations", "conversations", "edit_type", str(tmp_path / "in"),
                        str(tmp_path / "out"), {"backend": "api"})
    done = [
        {"images": "a.png", "license": "cc0", IMAGE_ID_KEY: "a", PLAN_KEY: "add,text,remove", "id": "a [x]",
         DRAFTS_KEY: [{"type": "add", "instruction": "Add a cat."}, {"type": "text", "declined": "no text"},
                      {"type": "remove", "instruction": "Add a cat!", "duplicate_of": "add"}]},
        {"images": "b.png", IMAGE_ID_KEY: "b", PLAN_KEY: "add", "id": "b [add]", DRAFTS_KEY: [],
         DRAFTS_KEY + "_error": "the answer is empty"},
    ]
    written = list(expander.expand(done, rejected.append))
    assert written == [{"id": "a/add/0", "image_id": "a", "images": "../in/a.png",
                        "conversations": [{"role": "user", "content": "Add a cat."}], "edit_type": "add",
                        "provenance": {"backend": "api"}, "license": "cc0"}]
    assert [(r["id"] if "id" in r else None, r.get("declined"), r.get("duplicate_of"), r.get("instruction_error"))
            for r in rejected] == [("a/text/0", "no text", None, None), ("a/remove/0", None, "add", None),
                                   (None, None, None, "the answer is empty")]
    assert rejected[2]["image_id"] == "b" and PLAN_KEY not in rejected[2]
    tally = expander.tally
    assert (tally.written, tally.declined, tally.duplicates, tally.failed) == ({"add": 1}, {"text": 1}, 1, 1)
