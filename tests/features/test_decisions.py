"""A person's erasure takes exactly their decisions, read from the owner fields alone."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from features.decisions import (
    Choice,
    Decision,
    DecisionContext,
    decode_owner,
    encode_decision,
    person_erasure,
)
from features.events import Identifiers

values = st.one_of(st.from_regex(r"[a-z0-9-]{1,8}", fullmatch=True),
                  st.text(min_size=1, max_size=8))  # fmt: skip
# The opaque identifiers (hashes have a format of their own, checked on decoding).
OPAQUE = ["customer_id", "anonymous_id", "device_id", "card_id"]
identifiers = st.dictionaries(st.sampled_from(OPAQUE), values, max_size=3)


def _decision(ids: dict[str, str], profile_id: str | None, page: str = "home") -> Decision:
    return Decision(
        decision_id="d-1", decided_at=datetime(2026, 3, 1, tzinfo=UTC), surface="offers",
        ids=Identifiers(**ids), profile_id=profile_id, policy="p",
        context=DecisionContext(channel="web", page=page),
        chosen=[Choice(offer_id="of-1", channel="web", propensity=1.0)],
        candidates=[Choice(offer_id=f"of-{i}", channel="web", propensity=0.5) for i in range(2)],
    )  # fmt: skip


@given(ids=identifiers, profile=st.one_of(st.none(), values), page=values,
       person=identifiers, person_profile=values)  # fmt: skip
def test_the_owner_fields_decide_as_the_whole_record_does(ids, profile, page, person,
                                                          person_profile):  # fmt: skip
    targets = {person_profile, *(f"{k}:{v}" for k, v in person.items())}
    erasure = person_erasure(targets)
    decision = _decision(ids, profile, page)
    assert erasure.match(decode_owner(encode_decision(decision))) == erasure.match(decision)


def test_a_person_is_matched_by_profile_or_any_identifier_and_no_one_else():
    erasure = person_erasure({"customer_id:cu-1", "card_id:k-9"})
    assert erasure.by_owner
    assert erasure.match(_decision({"card_id": "k-9"}, None))
    assert erasure.match(_decision({}, "customer_id:cu-1"))
    assert not erasure.match(_decision({"card_id": "k-1"}, "customer_id:cu-2"))
    # The same value under another identifier, or elsewhere in the record, is not theirs.
    assert not erasure.match(_decision({"device_id": "k-9"}, None, page="k-9"))
