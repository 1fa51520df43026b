"""Scorers for serving: calibrated probabilities and each row's strongest reasons.

``load_promoted(registry_dir)`` returns ``(version, NboScorer, ChannelScorer)``. A scorer
takes rows (``{feature: value}`` dicts from :func:`models.rows.nbo_row` /
:func:`models.rows.channel_row`) and returns, per row, the calibrated probability and the
top feature contributions (log-odds of the uncalibrated model), named in words
(:data:`models.rows.WORDS`).

Probabilities come from the faster backend whose outputs match the Booster within 1e-6:
the ``lleaves``-compiled model when it is installed (measured by ``omnioffer evaluate``),
else the Booster. Contributions come from the Booster's model (``lleaves`` has none), by
one of two methods (setting ``reasons``):

* ``path`` (default): path attributions (:class:`PathContrib`), each split on the row's
  way to its leaf credits its feature with the change of the node's value; tabled per
  leaf at load, so a row costs LightGBM's leaf lookup and a gather;
* ``shap``: TreeSHAP, LightGBM's ``pred_contrib``, through its single-row API when it
  gives the same numbers (checked on load). About 9 times the cost of ``path`` here
  (``python -m bench.reasons``).

Both add up, with the bias, to the model's raw score. Either way only the rows asked for
are explained: the ``explain_top`` most probable, and with :meth:`BinaryScorer.score_batch`
only those the caller reads.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import lightgbm as lgb
import numpy as np
import orjson

from models.calibration import Calibrator
from models.registry import Registry, RegistryError
from models.rows import CATEGORICAL, WORDS, to_matrix

log = logging.getLogger(__name__)

Backend = Literal["auto", "booster", "lleaves"]
Attribution = Literal["path", "shap"]
MATCH_TOLERANCE = 1e-6
# Path tables hold trees x leaves x features floats: 0.6 MB for the shipped model. A model
# whose table would pass this is explained with TreeSHAP instead (see PathContrib).
PATH_TABLE_MAX_BYTES = 64 * 2**20


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
    """The model compiled to machine code by ``lleaves`` (LLVM), cached beside the model.

    lleaves hands any file at the cache path to LLVM unchecked, and a truncated one
    crashes the process (SIGSEGV, SIGABRT). So the cache is only used when the digest
    written beside it matches; otherwise the model is compiled to a file of this process's
    own, which then replaces the cache atomically, digest last. Workers loading a newly
    promoted version at once, or a process killed mid-write, never see half a file.
    """

    name = "lleaves"

    def __init__(self, model_file: Path, cache: Path | None = None) -> None:
        import lleaves

        self.model = lleaves.Model(model_file=str(model_file))
        if cache is None:
            self.model.compile()
        elif _cached_whole(cache):
            self.model.compile(cache=str(cache))
        else:
            own = cache.with_name(f"{cache.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            own.unlink(missing_ok=True)
            self.model.compile(cache=str(own))  # compiles, writes ``own``, loads it
            digest = hashlib.sha256(own.read_bytes()).hexdigest()
            os.replace(own, cache)
            _write_atomically(_digest_path(cache), digest.encode())

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Return raw probabilities."""
        return self.model.predict(np.ascontiguousarray(x, dtype=np.float64), n_jobs=1)


def _digest_path(cache: Path) -> Path:
    return cache.with_name(cache.name + ".sha256")


def _cached_whole(cache: Path) -> bool:
    """Whether ``cache`` is a whole compiled model: its digest file says so."""
    try:
        expected = _digest_path(cache).read_text().strip()
        return hashlib.sha256(cache.read_bytes()).hexdigest() == expected
    except OSError:
        return False


def _write_atomically(path: Path, data: bytes) -> None:
    own = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    own.write_bytes(data)
    os.replace(own, path)


class SingleRowPredictor:
    """Rows one by one through LightGBM's single-row API (a ``FastConfig``), set up once.

    ``Booster.predict`` sets up a predictor on every call: about 60 µs measured here, a
    third of explaining one row of the shipped model with TreeSHAP. ``predict_type`` is
    LightGBM's (contributions, leaf indices), ``width`` the outputs per row. It runs the
    Booster's own predictor code; callers check the numbers against ``Booster.predict``
    on load. Calls are serialized: a config has one output buffer.
    """

    def __init__(self, booster: lgb.Booster, ncol: int, predict_type: int, width: int) -> None:
        from lightgbm.basic import _LIB, _safe_call

        self._lib, self._check = _LIB, _safe_call
        self.ncol = ncol
        self.width = width
        handle = ctypes.c_void_p()
        self._check(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(predict_type),
                ctypes.c_int(0),  # start_iteration, as Booster.predict's default
                ctypes.c_int(booster.best_iteration),  # Booster.predict's num_iteration
                ctypes.c_int(_DTYPE_FLOAT64),
                ctypes.c_int32(ncol),
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(handle),
            )
        )
        self._handle = handle
        self._lock = threading.Lock()
        self._length = ctypes.c_int64(0)
        # The booster must outlive the config: keep it referenced, free the config first.
        self._booster = booster
        weakref.finalize(self, _LIB.LGBM_FastConfigFree, handle)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Return ``width`` outputs per row of a dense float matrix."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        out = np.empty((len(x), self.width), dtype=np.float64)
        double_p = ctypes.POINTER(ctypes.c_double)
        with self._lock:
            for i in range(len(x)):
                self._check(
                    self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                        self._handle,
                        x[i].ctypes.data_as(ctypes.c_void_p),
                        ctypes.byref(self._length),
                        out[i].ctypes.data_as(double_p),
                    )
                )
                if self._length.value != self.width:
                    message = f"LightGBM returned {self._length.value} outputs, not {self.width}"
                    raise RuntimeError(message)
        return out


class PathContrib:
    """Path attributions: each split on a row's way to its leaf credits the feature split on.

    Along a tree's path from the root to a leaf, each step changes the node's value
    (LightGBM's ``internal_value``, then the ``leaf_value``); the change is credited to
    the node's split feature. The credits of each leaf's path are fixed, so they are
    tabled at load (trees x leaves x features, plus the root's value as the bias); a row
    then costs LightGBM's leaf lookup and a gather. As TreeSHAP's, a row's credits plus
    the bias add up to the raw score; unlike TreeSHAP's, a feature's credit depends on
    where in the tree it is split (Saabas's method; XGBoost's ``approx_contribs``).

    >>> import lightgbm as lgb, numpy as np
    >>> x = np.arange(40.0).reshape(20, 2); y = (x[:, 0] > 19).astype(float)
    >>> booster = lgb.train({"objective": "binary", "verbose": -1, "min_data_in_leaf": 2},
    ...                     lgb.Dataset(x, y), num_boost_round=2)
    >>> row = PathContrib(booster, 2).predict(x[:1])[0]
    >>> bool(np.isclose(row.sum(), booster.predict(x[:1], raw_score=True)[0]))
    True
    """

    def __init__(self, booster: lgb.Booster, ncol: int, max_bytes: int | None = None) -> None:
        trees = booster.dump_model()["tree_info"]  # the iterations Booster.predict uses
        widest = max(tree["num_leaves"] for tree in trees)
        size = len(trees) * widest * (ncol + 1) * 8
        max_bytes = PATH_TABLE_MAX_BYTES if max_bytes is None else max_bytes
        if size > max_bytes:
            message = (
                f"a path table of {len(trees)} trees x {widest} leaves x {ncol + 1} columns "
                f"takes {size / 2**20:.0f} MB, over {max_bytes / 2**20:.0f} MB"
            )
            raise ValueError(message)
        self.table = np.zeros((len(trees), widest, ncol + 1), dtype=np.float64)
        for number, tree in enumerate(trees):
            _tabulate_paths(tree["tree_structure"], self.table[number], ncol)
        self._leaves = SingleRowPredictor(booster, ncol, _PREDICT_LEAF_INDEX, len(trees))
        self._trees = np.arange(len(trees))[np.newaxis, :]

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """Return each row's leaf in each tree (LightGBM's ``pred_leaf``)."""
        return self._leaves.predict(x).astype(np.intp)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Return the credits per feature and the bias (last column), per row."""
        return self.table[self._trees, self.leaves(x)].sum(axis=1)


def single_row_shap(booster: lgb.Booster) -> SingleRowPredictor:
    """Return TreeSHAP (``pred_contrib``: contributions, then the bias) row by row."""
    ncol = booster.num_feature()
    return SingleRowPredictor(booster, ncol, _PREDICT_CONTRIB, ncol + 1)


def _tabulate_paths(root: dict[str, Any], out: np.ndarray, ncol: int) -> None:
    """Fill ``out[leaf]`` with the credits along the path to each leaf, the bias last."""
    if "leaf_index" in root:  # a tree of one leaf: all bias
        out[:, ncol] = root["leaf_value"]
        return
    bias = root["internal_value"]
    out[:, ncol] = bias
    stack = [(root, bias, np.zeros(ncol))]
    while stack:
        node, value, credit = stack.pop()
        for side in ("left_child", "right_child"):
            child = node[side]
            is_leaf = "leaf_index" in child
            child_value = child["leaf_value"] if is_leaf else child["internal_value"]
            path = credit.copy()
            path[node["split_feature"]] += child_value - value
            if is_leaf:
                out[child["leaf_index"], :ncol] = path
            else:
                stack.append((child, child_value, path))


# LightGBM C API constants (c_api.h): C_API_PREDICT_LEAF_INDEX, C_API_PREDICT_CONTRIB,
# C_API_DTYPE_FLOAT64.
_PREDICT_LEAF_INDEX = 2
_PREDICT_CONTRIB = 3
_DTYPE_FLOAT64 = 1


def lleaves_available() -> bool:
    """Return whether the ``lleaves`` compiler can be imported."""
    try:
        import lleaves  # noqa: F401
    except ImportError:
        return False
    return True


class BinaryScorer:
    """A calibrated LightGBM model with a prediction backend and Booster explanations.

    ``reasons`` picks how contributions are computed: ``path`` (falls back to TreeSHAP for
    a model the path tables do not cover; ``reasons_method`` says which) or ``shap``.
    """

    def __init__(
        self,
        model_file: Path,
        calibrator: Calibrator,
        backend: Backend = "auto",
        cache_dir: Path | None = None,
        reasons: Attribution = "path",
    ) -> None:
        self.model_file = Path(model_file)
        self.booster = lgb.Booster(model_file=str(model_file))
        self.feature_names: tuple[str, ...] = tuple(self.booster.feature_name())
        self.calibrator = calibrator
        self.predictor: Predictor = BoosterPredictor(self.booster)
        self.backend_note: str | None = None  # why ``auto`` kept the Booster, if it did
        if backend == "lleaves" or (backend == "auto" and lleaves_available()):
            cache = None
            if cache_dir is not None:
                cache = cache_dir / f"{self.model_file.stem}.lleaves.so"
            try:
                compiled = LleavesPredictor(self.model_file, cache)
                self._check_match(compiled)
            except Exception as error:  # a compiler or a mismatch: auto keeps the Booster
                if backend == "lleaves":
                    raise
                self.backend_note = f"lleaves not used: {type(error).__name__}: {error}"
                log.warning("%s: %s", self.model_file.name, self.backend_note)
            else:
                self.predictor = compiled

        self._contrib: PathContrib | SingleRowPredictor | None = None
        self.reasons_method: Attribution = "shap"
        if reasons == "path":
            self._contrib = self._path_contrib()
            if self._contrib is not None:
                self.reasons_method = "path"
        if self._contrib is None:
            self._contrib = self._single_row_shap()

    def _path_contrib(self) -> PathContrib | None:
        """Return path attributions if they hold on the probe rows, else ``None`` (TreeSHAP).

        They must find the Booster's leaves and add up to its raw score: a model they do
        not cover (linear trees, say) is explained by TreeSHAP instead.
        """
        try:
            path = PathContrib(self.booster, len(self.feature_names))
            probe = self._probe()
            leaves = self.booster.predict(probe, pred_leaf=True, num_threads=1)
            raw = self.booster.predict(probe, raw_score=True, num_threads=1)
            total = path.predict(probe).sum(axis=1)
            if np.array_equal(path.leaves(probe), leaves) and np.allclose(
                total, raw, rtol=0, atol=1e-9
            ):
                return path
            log.warning("%s: path attributions do not add up; using TreeSHAP", self.model_file)
        except (AttributeError, KeyError, OSError, RuntimeError, ValueError,
                lgb.basic.LightGBMError) as error:  # fmt: skip
            log.warning("%s: no path attributions (%s); using TreeSHAP", self.model_file, error)
        return None

    def _single_row_shap(self) -> SingleRowPredictor | None:
        """Return TreeSHAP through the single-row API if it gives the Booster's numbers."""
        try:
            fast = single_row_shap(self.booster)
            probe = self._probe()
            same = self.booster.predict(probe, pred_contrib=True, num_threads=1)
            if fast.predict(probe).tobytes() == np.ascontiguousarray(same).tobytes():
                return fast
            log.warning("%s: single-row contributions differ; using Booster.predict",
                        self.model_file)  # fmt: skip
        except (AttributeError, OSError, RuntimeError, lgb.basic.LightGBMError) as error:
            log.warning("%s: no single-row contributions (%s); using Booster.predict",
                        self.model_file, error)  # fmt: skip
        return None

    def _probe(self) -> np.ndarray:
        """Return rows that reach many branches: scaled noise, categories and NaNs."""
        rng = np.random.default_rng(0)
        probe = rng.normal(size=(64, len(self.feature_names))) * 5
        for j, name in enumerate(self.feature_names):
            if name in CATEGORICAL:
                probe[:, j] = rng.integers(0, 6, size=64)
        probe[::7, :] = np.nan
        probe[1::5, ::3] = np.nan
        return probe

    @property
    def backend(self) -> str:
        """The backend computing probabilities: ``booster`` or ``lleaves``."""
        return self.predictor.name  # type: ignore[attr-defined]

    def _check_match(self, compiled: Predictor) -> None:
        # A compiled model must give the Booster's numbers; probe with NaNs and categories.
        probe = self._probe()
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
        """Return each row's ``top_features`` largest contributions by absolute value.

        Each row's contributions (``reasons_method``: path attributions or TreeSHAP) are
        computed on their own, so a row's reasons do not depend on the other rows with it.
        """
        if self._contrib is not None:
            contrib = self._contrib.predict(x)[:, :-1]
        else:
            contrib = self.booster.predict(x, pred_contrib=True, num_threads=1)[:, :-1]
        names = self.feature_names
        out = []
        for row in contrib:
            order = np.argsort(-np.abs(row), kind="stable")[:top_features]
            out.append(
                tuple(Reason(names[j], WORDS.get(names[j], names[j]), float(row[j]))
                      for j in order.tolist())
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
        batch = self.score_batch(x, top_features=top_features, explain_top=explain_top)
        batch.explain(range(len(x)))
        return [Scored(p, batch.reasons(i)) for i, p in enumerate(batch.probabilities)]

    def score_batch(
        self, x: np.ndarray, *, top_features: int = 3, explain_top: int | None = None
    ) -> ScoredBatch:
        """Score a feature matrix now and explain its rows later, only those asked for.

        The rows that *may* get reasons are the same as :meth:`score_matrix` explains
        (all, or the ``explain_top`` most probable); which of them *do* is up to the
        caller (:meth:`ScoredBatch.explain`), since explaining with TreeSHAP costs far
        more than predicting (about 0.1 ms a row for the shipped model).
        """
        return ScoredBatch(self, x, self.predict_matrix(x), top_features, explain_top)


class ScoredBatch:
    """Calibrated probabilities of a matrix, and reasons of its rows on demand.

    ``probabilities`` are plain floats. A row outside the explainable ones (see
    :meth:`BinaryScorer.score_batch`) has no reasons, as :meth:`BinaryScorer.score_matrix`
    gives it none.
    """

    __slots__ = ("_explainable", "_reasons", "_scorer", "_top_features", "_x", "probabilities")

    def __init__(self, scorer: BinaryScorer, x: np.ndarray, p: np.ndarray, top_features: int,
                 explain_top: int | None) -> None:  # fmt: skip
        self._scorer = scorer
        self._x = x
        self.probabilities: list[float] = p.tolist()
        self._top_features = top_features
        self._explainable: frozenset[int] | None = None  # None: every row
        if top_features <= 0:
            self._explainable = frozenset()
        elif explain_top is not None:
            top = np.argsort(-p, kind="stable")[: max(0, explain_top)]
            self._explainable = frozenset(top.tolist())
        self._reasons: dict[int, tuple[Reason, ...]] = {}

    def __len__(self) -> int:
        """Return the number of rows."""
        return len(self.probabilities)

    def explainable(self, i: int) -> bool:
        """Return whether row ``i`` gets reasons when asked."""
        return self._explainable is None or i in self._explainable

    def explain(self, indices: Iterable[int]) -> None:
        """Compute the reasons of these rows now, in one model call (others are skipped)."""
        todo = sorted({i for i in indices if i not in self._reasons and self.explainable(i)})
        if todo:
            why = self._scorer.explain(self._x[todo], self._top_features)
            self._reasons.update(zip(todo, why, strict=True))

    def reasons(self, i: int) -> tuple[Reason, ...]:
        """Return row ``i``'s reasons (computed now if it was not yet)."""
        found = self._reasons.get(i)
        if found is None:
            if not self.explainable(i):
                return ()
            self.explain((i,))
            found = self._reasons[i]
        return found


class NboScorer(BinaryScorer):
    """P(conversion | customer, offer, channel, context) for next-best-offer ranking."""


class ChannelScorer(BinaryScorer):
    """P(engagement | customer, channel, context) for channel choice."""


def _calibrator(path: Path) -> Calibrator:
    return Calibrator.from_json(orjson.loads(path.read_bytes()))


def load_version(
    registry_dir: Path | str, version: str, backend: Backend = "auto",
    reasons: Attribution = "path",
) -> tuple[str, NboScorer, ChannelScorer]:  # fmt: skip
    """Load both scorers of one registered version."""
    folder = Registry(registry_dir).path(version)
    nbo = NboScorer(folder / "nbo.txt", _calibrator(folder / "nbo.calibration.json"),
                    backend, folder, reasons)  # fmt: skip
    channel = ChannelScorer(folder / "channel.txt",
                            _calibrator(folder / "channel.calibration.json"), backend, folder,
                            reasons)  # fmt: skip
    return version, nbo, channel


def load_promoted(
    registry_dir: Path | str, backend: Backend = "auto", reasons: Attribution = "path"
) -> tuple[str, NboScorer, ChannelScorer]:
    """Load the promoted version's scorers; ``RegistryError`` if nothing is promoted."""
    version = Registry(registry_dir).promoted()
    if version is None:
        message = f"no model is promoted in {registry_dir}; run `omnioffer models promote`"
        raise RegistryError(message)
    return load_version(registry_dir, version, backend, reasons)
