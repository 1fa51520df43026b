import random

import pytest

from features.events import Identifiers, PageView, encode_event
from features.validation import Rejection, validate
from simulator.noise import (
    EXPECTED_REASON,
    MALFORMED_KINDS,
    duplicate_delay_seconds,
    late_delay_seconds,
    malformed,
)
from simulator.world import DEFAULT_START

VALID = encode_event(
    PageView(
        event_id="ev-1",
        event_time=DEFAULT_START,
        source="web",
        ids=Identifiers(anonymous_id="an-1"),
        page="home",
    )
)


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_every_malformed_variant_is_rejected_with_its_reason(kind):
    assert not isinstance(validate(VALID, key=b"k"), Rejection)
    line = malformed(VALID, kind)
    assert b"\n" not in line
    result = validate(line, key=b"k")
    assert isinstance(result, Rejection)
    assert result.reason.code == EXPECTED_REASON[kind]


def test_unknown_malformed_kind_is_named():
    with pytest.raises(ValueError, match="unknown malformed kind 'gibberish'"):
        malformed(VALID, "gibberish")


def test_delays_stay_in_their_bounds():
    rng = random.Random(0)
    late = [late_delay_seconds(rng, 6.0) for _ in range(2000)]
    assert min(late) >= 60 and max(late) <= 6 * 3600
    dup = [duplicate_delay_seconds(rng) for _ in range(2000)]
    assert min(dup) >= 1 and max(dup) <= 600
