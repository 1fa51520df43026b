"""Off-policy estimators recover known policy values; bad inputs are named."""

import numpy as np
import pytest

from models.ope import (
    DoublyRobust,
    InverseProbabilityWeighting,
    SelfNormalizedInverseProbabilityWeighting,
    effective_sample_size,
)

ESTIMATORS = [InverseProbabilityWeighting(), SelfNormalizedInverseProbabilityWeighting(),
              DoublyRobust()]


def enumerated_log():
    """Every context logged with each action in exact proportion to its propensity.

    Three actions with logging propensities 1/2, 1/4, 1/4 appear 2, 1, 1 times per context,
    and rewards are deterministic, so importance weighting is exact, not just unbiased.
    """
    q = np.array([[0.2, 0.9, 0.1], [0.7, 0.3, 0.0], [0.4, 0.4, 1.0]])  # q[x, a]
    target = np.array([1, 0, 2])  # the evaluated policy's action per context
    logging = np.array([0.5, 0.25, 0.25])
    rows = [(x, a) for x in range(3) for a, k in ((0, 2), (1, 1), (2, 1)) for _ in range(k)]
    x = np.array([r[0] for r in rows])
    a = np.array([r[1] for r in rows])
    true_value = q[np.arange(3), target].mean()
    return q, target, logging, x, a, true_value


def arrays(q_hat, target, logging, x, a, q):
    return {
        "reward": q[x, a],
        "pscore": logging[a],
        "action_prob": (target[x] == a).astype(float),
        "estimated_reward_logged": q_hat[x, a],
        "estimated_value": q_hat[x, target[x]],
    }


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: e.name)
def test_exact_recovery_on_an_enumerated_log(estimator):
    q, target, logging, x, a, truth = enumerated_log()
    # A deliberately wrong reward model: DR must still be exact (propensities are right).
    wrong = np.full_like(q, 0.5)
    value = estimator.estimate(**arrays(wrong, target, logging, x, a, q))
    assert value == pytest.approx(truth, abs=1e-12)


def test_dr_is_exact_with_a_perfect_reward_model_even_with_wrong_propensities():
    q, target, logging, x, a, truth = enumerated_log()
    data = arrays(q, target, logging, x, a, q)
    data["pscore"] = np.full(len(x), 0.9)
    assert DoublyRobust().estimate(**data) == pytest.approx(truth, abs=1e-12)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: e.name)
def test_sampled_log_interval_contains_the_true_value(estimator):
    rng = np.random.default_rng(3)
    n, k = 20_000, 4
    q = rng.uniform(0.0, 0.3, size=(n, k))
    logging = rng.dirichlet(np.ones(k), size=n) * 0.8 + 0.2 / k
    a = np.array([rng.choice(k, p=p) for p in logging])
    r = (rng.uniform(size=n) < q[np.arange(n), a]).astype(float)
    target = q.argmax(axis=1)
    truth = q[np.arange(n), target].mean()
    noisy = np.clip(q + rng.normal(0, 0.05, size=q.shape), 0, 1)
    interval = estimator.interval(
        r, logging[np.arange(n), a], (target == a).astype(float),
        noisy[np.arange(n), a], noisy[np.arange(n), target], n_bootstrap=200, seed=1,
    )
    assert interval.ci_low < interval.value < interval.ci_high
    assert interval.contains(truth)


BAD = [
    ({"reward": []}, "`reward` must not be empty"),
    ({"reward": [[1.0]]}, "`reward` must be a 1-D array"),
    ({"pscore": [0.5, 0.0]}, "`pscore` must be within \\(0, 1\\]"),
    ({"pscore": [0.5]}, "`pscore` must have the same length as `reward` \\(2\\); got 1"),
    ({"action_prob": [1.5, 0.0]}, "`action_prob` must be within \\[0, 1\\]"),
    ({"reward": [np.nan, 1.0]}, "`reward` must be finite"),
    ({"estimated_value": [0.1]}, "`estimated_value` must have the same length"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_bad_inputs_name_the_argument(change, message):
    good = {"reward": [1.0, 0.0], "pscore": [0.5, 0.5], "action_prob": [1.0, 0.0],
            "estimated_reward_logged": [0.1, 0.1], "estimated_value": [0.2, 0.2]}
    with pytest.raises(ValueError, match=message):
        DoublyRobust().estimate(**{**good, **change})


def test_dr_requires_a_reward_model_and_bootstrap_checks_its_arguments():
    with pytest.raises(ValueError, match="`estimated_reward_logged` is required by DoublyRobust"):
        DoublyRobust().estimate([1.0], [0.5], [1.0])
    with pytest.raises(ValueError, match="`n_bootstrap` must be >= 10"):
        InverseProbabilityWeighting().interval([1.0], [0.5], [1.0], n_bootstrap=1)
    with pytest.raises(ValueError, match="`alpha` must be within"):
        InverseProbabilityWeighting().interval([1.0], [0.5], [1.0], alpha=2.0)


def test_effective_sample_size_of_uniform_weights_is_n():
    assert effective_sample_size(np.ones(10), np.full(10, 0.5)) == pytest.approx(10)
