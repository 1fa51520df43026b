"""Data files reload when they change; a version that fails to load never replaces a good one."""

from __future__ import annotations

import os

import pytest

from features.datafile import DataFileError, Reloadable


def _write(path, text: str) -> None:
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


def _load(path):
    text = path.read_text()
    if text.startswith("bad"):
        raise DataFileError(f"{path}: entry '(top)', field 'x': bad")
    if text.startswith("boom"):
        return 1 / 0  # a mistake the loader did not foresee
    return text


@pytest.mark.parametrize("in_background", [False, True])
def test_a_failed_reload_keeps_the_last_good_value_and_says_why(tmp_path, in_background):
    path = tmp_path / "data.yaml"
    _write(path, "one")
    source = Reloadable([path], lambda: _load(path), errors=(DataFileError,), what="data",
                        check_interval_s=0.0, in_background=in_background)  # fmt: skip

    def settle():
        value = source.get()
        if source.reloading is not None:
            source.reloading.join(timeout=30)
        return value

    assert settle() == "one"
    _write(path, "two")
    settle()
    assert source.get() == "two" and source.error is None
    for text, expected in (("bad", "field 'x': bad"), ("boom", "ZeroDivisionError")):
        _write(path, text)
        settle()
        assert source.get() == "two"
        assert expected in (source.error or "")
    _write(path, "three")
    settle()
    assert source.get() == "three" and source.error is None


def test_a_file_written_to_while_it_is_read_is_loaded_at_the_next_check(tmp_path):
    path = tmp_path / "data.yaml"
    _write(path, "one")
    loads: list[str] = []

    def load() -> str:
        text = path.read_text()
        loads.append(text)
        if len(loads) == 2:  # the writer goes on while this load reads
            with path.open("a") as handle:
                handle.write(" and a half")
        return text

    source = Reloadable([path], load, errors=(DataFileError,), what="data",
                        check_interval_s=0.0, in_background=False)  # fmt: skip
    _write(path, "two")
    assert source.reload() == "unchanged"  # what it read was not the file as it is now
    assert source.current == "one"
    assert source.get() == "two and a half"
    assert loads == ["one", "two", "two and a half"]
