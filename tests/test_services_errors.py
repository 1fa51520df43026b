"""Failures of the local-service harness give a ServiceError with the reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from omnioffer.services import KafkaBroker, RedisServer, ServiceError, create_topics


@pytest.mark.parametrize(
    ("server_class", "binary"),
    [(KafkaBroker, "/nonexistent/tansu"), (RedisServer, "/nonexistent/redis-server")],
)
def test_missing_binary_is_named(
    server_class: type[KafkaBroker] | type[RedisServer], binary: str
) -> None:
    server = server_class(binary=binary)
    with pytest.raises(ServiceError, match=re.escape(binary)):
        server.start()
    assert not server.running


def fake_binary(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-server"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_early_exit_reports_exit_code_and_log_tail(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, "echo 'boom: address already in use' >&2\nexit 3")
    broker = KafkaBroker(binary=binary)
    with pytest.raises(ServiceError, match="exited with code 3") as caught:
        broker.start()
    assert "boom: address already in use" in str(caught.value)
    assert not broker.running


def test_server_that_never_answers_times_out_and_is_stopped(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, "echo 'starting up'\nexec sleep 60")
    server = RedisServer(binary=binary, start_timeout=0.5)
    with pytest.raises(ServiceError, match="did not answer") as caught:
        server.start()
    assert "starting up" in str(caught.value)
    assert not server.running


def test_create_topics_rejects_zero_partitions() -> None:
    # Checked before connecting, so no broker is needed.
    with pytest.raises(ValueError, match="at least 1"):
        create_topics("127.0.0.1:1", ["events"], partitions=0)
