"""Two API processes deciding for one person at once: the contact log keeps its rules.

Each process reads the contact log, decides, then writes its contact. Another process may
send in between; the write is conditional on the log being as read
(``OnlineStore.add_contact_if_unchanged``), so the late decider decides again and sees the
other message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from features.store import OnlineStore, ProfileRead
from tests.serving.conftest import WORLD_NOW, channel_body


class SendsInBetween:
    """A store whose next contact read lets ``other`` decide after the read, before the write."""

    def __init__(self, store: OnlineStore) -> None:
        self._store = store
        self.other: Callable[[], None] | None = None

    def read_resolved(
        self, identifiers: Sequence[str], contacts_since: datetime | None = None
    ) -> ProfileRead:
        read = self._store.read_resolved(identifiers, contacts_since)
        if contacts_since is not None and self.other is not None:
            other, self.other = self.other, None
            other()
        return read

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_message_decided_while_another_is_sent_is_not_sent_twice(
    filled_store, make_client, customers
):
    racing = SendsInBetween(filled_store)
    late = make_client(racing)  # type: ignore[arg-type]
    early = make_client(filled_store)
    raced = 0
    for customer in customers[:40]:
        body = channel_body(customer, campaign=f"race-{customer}")
        early_answers: list[dict] = []
        racing.other = lambda body=body, into=early_answers: into.append(
            early.post("/v1/channel", json=body).json()
        )
        answer = late.post("/v1/channel", json=body).json()
        if early_answers and early_answers[0]["channel"] != "none":
            raced += 1
            # The late decision read the log before the early one's contact was written;
            # its own write was refused, it decided again and saw the same message sent.
            assert answer["channel"] == "none", answer
            assert answer["suppressed_by"] == "duplicate_message"
        sent = [
            c for c in filled_store.contacts_of(f"customer_id:{customer}")
            if c.campaign == f"race-{customer}"
        ]  # fmt: skip
        assert len(sent) <= 1, sent
        assert sent == [] or sent[0].sent_at >= WORLD_NOW
    assert raced >= 3  # the race did happen, for several customers
