"""Reason codes: path attributions tabled per leaf, TreeSHAP on request, fallback on doubt."""

from __future__ import annotations

import logging
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from models import scoring
from models.bench import reasons_agreement
from models.bundle import register
from models.calibration import Calibrator
from models.registry import Registry
from models.scoring import BinaryScorer, PathContrib, load_promoted


def _walk(node: dict[str, Any], row: np.ndarray, credit: np.ndarray) -> float:
    """Follow ``row`` down one dumped tree (numerical splits, no missing values)."""
    value = node["internal_value"] if "split_feature" in node else node["leaf_value"]
    while "split_feature" in node:
        assert node["decision_type"] == "<="
        side = "left_child" if row[node["split_feature"]] <= node["threshold"] else "right_child"
        child = node[side]
        child_value = child["internal_value"] if "split_feature" in child else child["leaf_value"]
        credit[node["split_feature"]] += child_value - value
        node, value = child, child_value
    return value


@pytest.fixture(scope="module")
def numeric_model() -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(11)
    x = rng.normal(size=(600, 6))
    y = ((x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + rng.normal(scale=0.5, size=600)) > 0).astype(float)
    params = {"objective": "binary", "verbose": -1, "num_leaves": 7, "min_data_in_leaf": 5,
              "seed": 3, "deterministic": True, "num_threads": 1}  # fmt: skip
    return lgb.train(params, lgb.Dataset(x, y), num_boost_round=25), x


def test_path_attributions_credit_each_split_on_the_way_down(numeric_model):
    booster, x = numeric_model
    path = PathContrib(booster, x.shape[1])
    trees = booster.dump_model()["tree_info"]
    got = path.predict(x[:40])
    for row, credits in zip(x[:40], got, strict=True):
        expected = np.zeros(x.shape[1])
        bias = sum(t["tree_structure"]["internal_value"] for t in trees)
        raw = sum(_walk(t["tree_structure"], row, expected) for t in trees)
        np.testing.assert_allclose(credits[:-1], expected, rtol=0, atol=1e-12)
        assert credits[-1] == pytest.approx(bias, abs=1e-12)
        assert credits.sum() == pytest.approx(raw, abs=1e-9)
    raw_scores = booster.predict(x[:40], raw_score=True)
    np.testing.assert_allclose(got.sum(axis=1), raw_scores, rtol=0, atol=1e-9)
    never_split = set(range(x.shape[1])) - {
        node["split_feature"] for t in trees for node in _nodes(t["tree_structure"])
    }
    assert all(not got[:, j].any() for j in never_split)


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    if "split_feature" not in node:
        return []
    return [node, *_nodes(node["left_child"]), *_nodes(node["right_child"])]


def test_served_models_explain_with_path_attributions_unless_asked(
    tmp_path, bundle, training_set
):
    registry = Registry(tmp_path / "registry")
    registry.promote(register(registry, bundle, {"nbo": {}, "channel": {}}))
    _, by_path, by_path_channel = load_promoted(registry.root, backend="booster")
    _, by_shap, _ = load_promoted(registry.root, backend="booster", reasons="shap")
    assert (by_path.reasons_method, by_path_channel.reasons_method) == ("path", "path")
    assert by_shap.reasons_method == "shap"
    x, _, _ = training_set.nbo()
    rows = x[:50]
    shap = by_shap.booster.predict(rows, pred_contrib=True)[:, :-1]
    for row, path_reasons, shap_reasons in zip(
        shap, by_path.explain(rows), by_shap.explain(rows), strict=True
    ):
        # TreeSHAP's are LightGBM's own; both name the model's features and rank by size.
        assert [r.contribution for r in shap_reasons] == sorted(
            (float(v) for v in row), key=abs, reverse=True
        )[: len(shap_reasons)]
        assert [abs(r.contribution) for r in path_reasons] == sorted(
            (abs(r.contribution) for r in path_reasons), reverse=True
        )
        assert {r.feature for r in path_reasons} <= set(by_path.feature_names)


def test_path_attributions_that_do_not_add_up_give_way_to_treeshap(
    numeric_model, tmp_path, monkeypatch, caplog
):
    booster, x = numeric_model
    model_file = tmp_path / "model.txt"
    booster.save_model(str(model_file))
    assert BinaryScorer(model_file, Calibrator("none"), backend="booster").reasons_method == "path"
    # A model whose leaves the tables would misread (a LightGBM change, say) is caught on load.
    real = PathContrib.predict
    monkeypatch.setattr(PathContrib, "predict", lambda self, rows: real(self, rows) * 0.5)
    with caplog.at_level(logging.WARNING, logger="models.scoring"):
        scorer = BinaryScorer(model_file, Calibrator("none"), backend="booster")
    assert scorer.reasons_method == "shap"
    assert "path attributions do not add up" in caplog.text
    contrib = booster.predict(x[:3], pred_contrib=True)[:, :-1]
    top = [r.contribution for r in scorer.explain(x[:3])[0]]
    assert top == sorted((float(v) for v in contrib[0]), key=abs, reverse=True)[:3]


def test_the_agreement_measure_compares_both_methods_on_the_same_rows(numeric_model, tmp_path):
    booster, x = numeric_model
    model_file = tmp_path / "model.txt"
    booster.save_model(str(model_file))
    result = reasons_agreement(model_file, x[:200], repeats=3)
    assert result["rows"] == 200
    assert result["max_abs_total_difference"] < 1e-9  # both decompose the raw score
    # Feature 0 drives this model: both methods put it first for most rows.
    assert result["top1_same"] > 0.5
    assert 0 <= result["top3_same_set"] <= result["top3_overlap"] <= 1
    assert result["path_ms_5_rows"] > 0 and result["shap_ms_5_rows"] > 0


def test_a_model_too_big_for_path_tables_is_explained_by_treeshap(
    numeric_model, tmp_path, monkeypatch, caplog
):
    booster, x = numeric_model
    model_file = tmp_path / "model.txt"
    booster.save_model(str(model_file))
    with pytest.raises(ValueError, match="MB, over"):
        PathContrib(booster, x.shape[1], max_bytes=1000)
    monkeypatch.setattr(scoring, "PATH_TABLE_MAX_BYTES", 1000)
    with caplog.at_level(logging.WARNING, logger="models.scoring"):
        scorer = BinaryScorer(model_file, Calibrator("none"), backend="booster")
    assert scorer.reasons_method == "shap"
    assert "no path attributions" in caplog.text
