"""Registry: versions with metadata, promote / rollback round trip, serving's loader."""

from datetime import UTC, datetime

import numpy as np
import pytest
from typer.testing import CliRunner

from models.bundle import register
from models.registry import Registry, RegistryError
from models.rows import NBO_FEATURES, WORDS, ActionContext, CustomerView, OfferTable, nbo_row
from models.scoring import lleaves_available, load_promoted
from omnioffer.cli import app


@pytest.fixture
def registry(tmp_path, bundle):
    reg = Registry(tmp_path / "registry")
    for _ in range(3):
        register(reg, bundle, {"nbo": {"auc": 0.7}, "channel": {"auc": 0.6}})
    return reg


def test_versions_carry_metadata(registry):
    assert registry.versions() == ["v0001", "v0002", "v0003"]
    meta = registry.metadata("v0002")
    assert meta["version"] == "v0002" and meta["seed"] == 5
    assert meta["features"]["nbo"] == list(NBO_FEATURES)
    assert meta["data_range"]["first_decision"] < meta["data_range"]["last_decision"]
    assert meta["git_commit"] and meta["metrics"]["nbo"]["auc"] == 0.7


def test_promote_and_rollback_round_trip(registry):
    assert registry.promoted() is None
    with pytest.raises(RegistryError, match="nothing is promoted"):
        registry.rollback()
    registry.promote("v0001")
    with pytest.raises(RegistryError, match="v0001 is the first promoted version"):
        registry.rollback()
    registry.promote("v0003")
    registry.promote("v0002")
    assert registry.promoted() == "v0002"
    assert registry.rollback() == "v0003"
    assert registry.rollback() == "v0001"
    assert registry.promoted() == "v0001"
    registry.promote("v0002")
    assert registry.rollback() == "v0001"
    assert [h["action"] for h in registry.history()] == [
        "promote", "promote", "promote", "rollback", "rollback", "promote", "rollback"
    ]
    leftovers = [p.name for p in registry.root.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # temporary files were renamed into place


def test_unknown_version_is_named(registry):
    with pytest.raises(RegistryError, match="unknown model version 'v0042'; registered: v0001"):
        registry.promote("v0042")


def test_cli_lists_promotes_and_rolls_back(registry, monkeypatch):
    monkeypatch.setenv("OMNIOFFER_REGISTRY_DIR", str(registry.root))
    runner = CliRunner()
    assert runner.invoke(app, ["models", "promote", "v0001"]).exit_code == 0
    assert runner.invoke(app, ["models", "promote", "v0003"]).exit_code == 0
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0 and "v0003" in listed.output
    assert runner.invoke(app, ["models", "rollback"]).exit_code == 0
    assert registry.promoted() == "v0001"
    bad = runner.invoke(app, ["models", "promote", "v9999"])
    assert bad.exit_code == 2 and "unknown model version" in bad.output


@pytest.mark.parametrize("backend", ["booster", "lleaves"])
def test_load_promoted_scores_rows_with_reasons_in_words(registry, training_set, catalog,
                                                         backend):
    if backend == "lleaves" and not lleaves_available():
        pytest.skip("lleaves is not installed")
    registry.promote("v0002")
    version, nbo, channel = load_promoted(registry.root, backend=backend)
    assert version == "v0002" and nbo.backend == backend
    offers = OfferTable.from_catalog(catalog)
    view = training_set.views[-1]
    ctx = ActionContext(at=training_set.examples[-1].decision.decided_at, surface="offers")
    rows = [nbo_row(view, offers, offer, "web", ctx) for offer in sorted(offers.offers)[:12]]
    scored = nbo.score(rows, top_features=3, explain_top=2)
    assert all(0 < s.probability < 1 for s in scored)
    explained = [s for s in scored if s.reasons]
    assert len(explained) == 2 and len(explained[0].reasons) == 3
    assert explained[0].reasons[0].words == WORDS[explained[0].reasons[0].feature]
    best = max(scored, key=lambda s: s.probability)
    assert best.reasons  # the top-ranked rows carry their reasons
    assert len(nbo.score(rows)) == len(rows) and all(s.reasons for s in nbo.score(rows))
    [only] = channel.score([{"channel": 0.0}], top_features=1)
    assert 0 < only.probability < 1


def test_compiled_and_booster_scores_match(registry, training_set):
    if not lleaves_available():
        pytest.skip("lleaves is not installed")
    registry.promote("v0001")
    _, booster, _ = load_promoted(registry.root, backend="booster")
    _, compiled, _ = load_promoted(registry.root, backend="lleaves")
    x, _, _ = training_set.nbo()
    np.testing.assert_allclose(compiled.predict_matrix(x), booster.predict_matrix(x),
                               rtol=0, atol=1e-6)


def test_a_half_written_compiled_model_is_compiled_again_not_loaded(registry):
    import subprocess
    import sys

    if not lleaves_available():
        pytest.skip("lleaves is not installed")
    registry.promote("v0001")
    load_promoted(registry.root, backend="lleaves")
    [cache] = registry.path("v0001").glob("nbo*.lleaves.so")
    whole = cache.read_bytes()
    for damage in (whole[: len(whole) // 2], b""):  # a writer killed, or still writing
        cache.write_bytes(damage)
        # In a process of its own: lleaves given half a file kills the process (SIGSEGV).
        code = ("from models.scoring import load_promoted; import sys; "
                f"v, nbo, _ = load_promoted({str(registry.root)!r}, backend='lleaves'); "
                "print(v, nbo.backend)")  # fmt: skip
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-500:]
        assert done.stdout.split() == ["v0001", "lleaves"]
        assert cache.read_bytes() == whole


def test_promotions_at_once_all_keep_their_history_line(registry):
    import threading

    def promote_many(version: str) -> None:
        for _ in range(25):
            Registry(registry.root).promote(version)  # its own handle, as another process

    threads = [threading.Thread(target=promote_many, args=(f"v000{n}",)) for n in (1, 2, 3)]
    threads += [threading.Thread(target=promote_many, args=("v0002",)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(registry.history()) == 25 * len(threads)


def test_nothing_promoted_is_an_error(tmp_path):
    with pytest.raises(RegistryError, match="no model is promoted"):
        load_promoted(tmp_path)


def test_empty_view_rows_are_scoreable(registry, catalog):
    registry.promote("v0001")
    _, nbo, _ = load_promoted(registry.root, backend="booster")
    ctx = ActionContext(at=datetime(2026, 3, 3, 18, tzinfo=UTC))
    offers = OfferTable.from_catalog(catalog)
    row = nbo_row(CustomerView.empty(), offers, "of-disc-dairy", "app", ctx)
    assert 0 < nbo.score([row], top_features=0)[0].probability < 1


def test_serving_loader_scores_offers_and_channels(registry, catalog, training_set, monkeypatch):
    from types import SimpleNamespace

    from features.profile import profile_features
    from models.registry import load_scorer

    monkeypatch.setenv("OMNIOFFER_REGISTRY_DIR", str(registry.root))
    scorer = load_scorer("v0002")
    assert scorer.version == "v0002"
    record = {"profile_id": "p", "fragments": ["x"], "first_seen": 1, "last_seen": 2,
              "days": {}, "hours": {}, "registers": {}, "carts": {}, "expiries": {}}
    features = profile_features(record, 1_772_500_000)
    offers = [SimpleNamespace(offer=o, channel=None) for o in list(catalog.offers.values())[:5]]
    ctx = SimpleNamespace(surface="offers", channel="app", page="home", store_id=None,
                          now=datetime(2026, 3, 3, 18, tzinfo=UTC))
    scored = scorer.score(features, offers, ctx)
    assert len(scored) == 5 and all(0 < s.probability < 1 and s.contributions for s in scored)
    channels = [SimpleNamespace(offer=None, channel=c) for c in ("email", "push", "sms")]
    msg = SimpleNamespace(surface="channel", channel=None, page=None, store_id=None, now=None)
    assert len(scorer.score(None, channels, msg)) == 3


def test_serving_loads_the_promoted_model_from_the_pointers_registry(registry, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    from fastapi.testclient import TestClient

    from features.store import open_store
    from omnioffer.settings import Settings
    from serving.app import create_app

    monkeypatch.delenv("OMNIOFFER_REGISTRY_DIR", raising=False)
    registry.promote("v0002")
    # As `omnioffer serve --model-pointer` does: only the pointer names the registry.
    settings = Settings(data_dir=tmp_path / "elsewhere", model_pointer=registry.root / "promoted")
    with open_store("sqlite", sqlite_path=":memory:") as store, TestClient(
        create_app(settings, store=store)
    ) as client:
        ready = client.get("/readyz").json()
    assert ready["model_version"] == "v0002" and ready["ready"] is True


def test_auto_keeps_the_booster_when_the_compiled_model_does_not_match(registry, monkeypatch):
    import models.scoring as scoring

    class OffByOne:
        name = "lleaves"

        def __init__(self, model_file, cache=None) -> None:
            pass

        def predict(self, x):
            return np.full(len(x), 1.0)

    monkeypatch.setattr(scoring, "LleavesPredictor", OffByOne)
    monkeypatch.setattr(scoring, "lleaves_available", lambda: True)
    registry.promote("v0001")
    _, nbo, _ = load_promoted(registry.root, backend="auto")
    assert nbo.backend == "booster" and "differs from the Booster" in nbo.backend_note
    with pytest.raises(RuntimeError, match="differs from the Booster"):
        load_promoted(registry.root, backend="lleaves")
