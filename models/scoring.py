"""Scorers for serving: calibrated probabilities and each row's strongest reasons.

``load_promoted(registry_dir)`` returns ``(version, NboScorer, ChannelScorer)``. A scorer
takes rows (``{feature: value}`` dicts from :func:`models.rows.nbo_row` /
:func:`models.rows.channel_row`) and returns, per row, the calibrated probability and the
top feature contributions from LightGBM's ``pred_contrib`` (log-odds of the uncalibrated
model), named in words (:data:`models.rows.WORDS`).

Probabilities come from the faster backend whose outputs match the Booster within 1e-6:
the ``lleaves``-compiled model when it is installed (measured by ``omnioffer evaluate``),
else the Booster. Contributions always come from the Booster (``lleaves`` has none), and
only for the rows asked for (``explain_top``), which keeps a 200-candidate request fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import lightgbm as lgb
import numpy as np
import orjson

from models.calibration import Calibrator
from models.registry import Registry, RegistryError
from models.rows import CATEGORICAL, WORDS, to_matrix

Backend = Literal["auto", "booster", "lleaves"]
MATCH_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Reason:
    """One feature's push on a score: its name, its meaning, its log-odds contribution."""

    feature: str
    words: str
    contribution: float


@dataclass(frozen=True)
class Scored:
    """A row's calibrated probability and its strongest reasons (largest first)."""

    probability: float
    reasons: tuple[Reason, ...] = ()


class Predictor(Protocol):
    """Anything that maps a feature matrix to raw (uncalibrated) probabilities."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Return one probability per row."""
        ...


class BoosterPredictor:
    """LightGBM's own Booster, single-threaded (a request is small)."""

    name = "booster"

    def __init__(self, booster: lgb.Booster) -> None:
        self.booster = booster

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Return raw probabilities."""
        return self.booster.predict(x, num_threads=1)


class LleavesPredictor:
    """The model compiled to machine code by ``lleaves`` (LLVM), cached beside the model."""

    name = "lleaves"

    def __init__(self, model_file: Path, cache: Path | None = None) -> None:
        import lleaves

        self.model = lleaves.Model(model_file=str(model_file))
        self.model.compile(cache=str(cache) if cache is not None else None)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Return raw probabilities."""
        return self.model.predict(np.ascontiguousarray(x, dtype=np.float64), n_jobs=1)


def lleaves_available() -> bool:
    """Return whether the ``lleaves`` compiler can be imported."""
    try:
        import lleaves  # noqa: F401
    except ImportError:
        return False
    return True


class BinaryScorer:
    """A calibrated LightGBM model with a prediction backend and Booster explanations."""

    def __init__(
        self,
        model_file: Path,
        calibrator: Calibrator,
        backend: Backend = "auto",
        cache_dir: Path | None = None,
    ) -> None:
        self.model_file = Path(model_file)
        self.booster = lgb.Booster(model_file=str(model_file))
        self.feature_names: tuple[str, ...] = tuple(self.booster.feature_name())
        self.calibrator = calibrator
        self.predictor: Predictor = BoosterPredictor(self.booster)
        if backend == "lleaves" or (backend == "auto" and lleaves_available()):
            cache = None
            if cache_dir is not None:
                cache = cache_dir / f"{self.model_file.stem}.lleaves.so"
            compiled = LleavesPredictor(self.model_file, cache)
            self._check_match(compiled)
            self.predictor = compiled

    @property
    def backend(self) -> str:
        """The backend computing probabilities: ``booster`` or ``lleaves``."""
        return self.predictor.name  # type: ignore[attr-defined]

    def _check_match(self, compiled: Predictor) -> None:
        # A compiled model must give the Booster's numbers; probe with NaNs and categories.
        rng = np.random.default_rng(0)
        probe = rng.normal(size=(64, len(self.feature_names))) * 5
        for j, name in enumerate(self.feature_names):
            if name in CATEGORICAL:
                probe[:, j] = rng.integers(0, 6, size=64)
        probe[::7, :] = np.nan
        expected = self.booster.predict(probe, num_threads=1)
        got = compiled.predict(probe)
        if not np.allclose(got, expected, rtol=0, atol=MATCH_TOLERANCE):
            worst = float(np.max(np.abs(got - expected)))
            message = f"compiled model differs from the Booster by {worst:.2e} > 1e-6"
            raise RuntimeError(message)

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Return calibrated probabilities of a feature matrix (columns in model order)."""
        return self.calibrator.apply(self.predictor.predict(x))

    def matrix(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Stack rows into the model's feature order (missing features are NaN)."""
        return to_matrix(rows, self.feature_names)

    def explain(self, x: np.ndarray, top_features: int = 3) -> list[tuple[Reason, ...]]:
        """Return each row's ``top_features`` largest contributions by absolute value."""
        contrib = self.booster.predict(x, pred_contrib=True, num_threads=1)[:, :-1]
        out = []
        for row in contrib:
            order = np.argsort(-np.abs(row), kind="stable")[:top_features]
            out.append(
                tuple(
                    Reason(self.feature_names[j], WORDS.get(self.feature_names[j],
                                                            self.feature_names[j]), float(row[j]))
                    for j in order
                )
            )
        return out

    def score(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        top_features: int = 3,
        explain_top: int | None = None,
    ) -> list[Scored]:
        """Score rows; explain every row, or only the ``explain_top`` most probable ones."""
        if not rows:
            return []
        return self.score_matrix(self.matrix(rows), top_features=top_features,
                                 explain_top=explain_top)

    def score_matrix(
        self, x: np.ndarray, *, top_features: int = 3, explain_top: int | None = None
    ) -> list[Scored]:
        """Score a feature matrix (columns in model order); see :meth:`score`."""
        if not len(x):
            return []
        p = self.predict_matrix(x)
        if explain_top is None:
            chosen = np.arange(len(x))
        else:
            chosen = np.argsort(-p, kind="stable")[: max(0, explain_top)]
        reasons: dict[int, tuple[Reason, ...]] = {}
        if top_features > 0 and len(chosen):
            for i, why in zip(chosen, self.explain(x[chosen], top_features), strict=True):
                reasons[int(i)] = why
        return [Scored(float(p[i]), reasons.get(i, ())) for i in range(len(x))]


class NboScorer(BinaryScorer):
    """P(conversion | customer, offer, channel, context) for next-best-offer ranking."""


class ChannelScorer(BinaryScorer):
    """P(engagement | customer, channel, context) for channel choice."""


def _calibrator(path: Path) -> Calibrator:
    return Calibrator.from_json(orjson.loads(path.read_bytes()))


def load_version(
    registry_dir: Path | str, version: str, backend: Backend = "auto"
) -> tuple[str, NboScorer, ChannelScorer]:
    """Load both scorers of one registered version."""
    folder = Registry(registry_dir).path(version)
    nbo = NboScorer(
        folder / "nbo.txt", _calibrator(folder / "nbo.calibration.json"), backend, folder
    )
    channel = ChannelScorer(
        folder / "channel.txt", _calibrator(folder / "channel.calibration.json"), backend, folder
    )
    return version, nbo, channel


def load_promoted(
    registry_dir: Path | str, backend: Backend = "auto"
) -> tuple[str, NboScorer, ChannelScorer]:
    """Load the promoted version's scorers; ``RegistryError`` if nothing is promoted."""
    version = Registry(registry_dir).promoted()
    if version is None:
        message = f"no model is promoted in {registry_dir}; run `omnioffer models promote`"
        raise RegistryError(message)
    return load_version(registry_dir, version, backend)
