"""Where simulated messages go: the file event log or a Kafka cluster.

Both sinks take ``(topic, key, value)`` in log order. The simulator writes its ground
truth to ``ground_truth_path`` when the sink has one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

from features.eventlog import EventLogWriter

GROUND_TRUTH_FILE = "ground_truth.jsonl"


class EventSink(Protocol):
    """A destination for messages: ``write`` them in order, then ``close`` (idempotent)."""

    ground_truth_path: Path | None

    def write(self, topic: str, key: str, value: bytes) -> None:
        """Send one message value to ``topic`` under ``key``."""
        ...

    def close(self) -> None:
        """Deliver everything written so far and release resources."""
        ...


class FileSink:
    r"""Write one JSONL file per topic (``events.*.jsonl``, ``decisions.jsonl``) to ``out_dir``.

    Existing topic files are truncated; keys are not stored (the file log has none).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     sink = FileSink(d)
    ...     sink.write("events.consent", "cu-1", b'{"a":1}')
    ...     sink.close()
    ...     (Path(d) / "events.consent.jsonl").read_bytes()
    b'{"a":1}\n'
    """

    def __init__(self, out_dir: Path | str) -> None:
        self.directory = Path(out_dir)
        self.ground_truth_path: Path | None = self.directory / GROUND_TRUTH_FILE
        self._log = EventLogWriter(self.directory, truncate=True)

    @property
    def counts(self) -> dict[str, int]:
        """Messages written per topic."""
        return dict(self._log.counts)

    def write(self, topic: str, key: str, value: bytes) -> None:
        """Append ``value`` to the topic's file."""
        self._log.append(topic, value)

    def close(self) -> None:
        """Flush and close every file."""
        self._log.close()


class KafkaSink:
    """Produce to Kafka (idempotent producer), at most ``rate`` messages per second.

    ``rate`` 0 means as fast as the producer takes them. :meth:`close` flushes and raises
    :class:`RuntimeError` if any message could not be delivered.
    """

    def __init__(
        self,
        bootstrap: str,
        rate: float = 0.0,
        *,
        ground_truth_path: Path | str | None = None,
        flush_timeout: float = 60.0,
        config: dict[str, object] | None = None,
    ) -> None:
        from confluent_kafka import Producer

        if rate < 0:
            message = f"rate must be >= 0 messages per second; got {rate!r}"
            raise ValueError(message)
        settings: dict[str, object] = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 20,
            "compression.type": "lz4",
        }
        settings.update(config or {})
        self._producer = Producer(settings)
        self.rate = rate
        self.flush_timeout = flush_timeout
        self.ground_truth_path = Path(ground_truth_path) if ground_truth_path else None
        self.sent = 0
        self.failed = 0
        self.errors: list[str] = []
        self._started = time.monotonic()
        self._closed = False

    def _delivered(self, error: object, _message: object) -> None:
        if error is not None:
            self.failed += 1
            if len(self.errors) < 10:
                self.errors.append(str(error))

    def _pace(self) -> None:
        # Keep the average rate since the start at or below ``rate``.
        due = self._started + self.sent / self.rate
        wait = due - time.monotonic()
        if wait > 0:
            self._producer.poll(0)
            time.sleep(wait)

    def write(self, topic: str, key: str, value: bytes) -> None:
        """Queue one message; waits when the local queue is full or the rate is reached."""
        if self.rate:
            self._pace()
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self._delivered)
                break
            except BufferError:
                self._producer.poll(0.1)
        self.sent += 1
        if self.sent % 10_000 == 0:
            self._producer.poll(0)

    def close(self) -> None:
        """Wait until every message is acknowledged; fail loudly if some were not."""
        if self._closed:
            return
        self._closed = True
        remaining = self._producer.flush(self.flush_timeout)
        if remaining or self.failed:
            message = (
                f"kafka sink: {remaining} message(s) still queued after {self.flush_timeout:g} s "
                f"and {self.failed} failed; first errors: {self.errors}"
            )
            raise RuntimeError(message)
