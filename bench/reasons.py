"""Reason codes side by side: path attributions against TreeSHAP on the offers serving shows.

A simulated world (as :mod:`bench.serve_inprocess` builds it) gives each customer's
profile as of the next noon; the promoted model (``--registry``, default the settings'
registry; a small one trained here when nothing is promoted) scores the bench catalog's 200
offers for each customer on the web, and the ``--shown`` most probable rows of each are
explained both ways by :func:`models.bench.reasons_agreement`: agreement of the top reasons
and the cost of explaining one page. Prints the JSON and writes it::

    python -m bench.reasons --json bench/results/reasons.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def shown_rows(store_path: Path, customers: list[str], catalog_dir: Path, booster: Any,
               shown: int, at: Any) -> np.ndarray:  # fmt: skip
    """Return the ``shown`` most probable offer rows of each customer (model column order)."""
    from features.catalog import load_catalog
    from features.profile import decode_profile, profile_features
    from features.store import open_store
    from models.rows import ActionContext, CustomerView, OfferTable, offer_matrix

    catalog = load_catalog(catalog_dir)
    offers = OfferTable.from_catalog(catalog)
    ids = sorted(catalog.offers)
    positions = offers.columns.positions(ids)
    context = ActionContext(at=at, surface="offers", page="home")
    rows = []
    with open_store("sqlite", sqlite_path=store_path) as store:
        for customer in customers:
            raw = store.read_profile(f"customer_id:{customer}")
            if raw is None:
                continue
            view = CustomerView.from_features(profile_features(decode_profile(raw),
                                                               int(at.timestamp())))  # fmt: skip
            x = offer_matrix(view, offers, ids, "web", context, positions)
            top = np.argsort(-booster.predict(x, num_threads=1), kind="stable")[:shown]
            rows.append(x[top])
    return np.vstack(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison; return (and write) the result document."""
    import lightgbm as lgb

    from bench.serve import bench_catalog
    from bench.serve_inprocess import WORLD_START, build_world, promoted_model
    from models.bench import reasons_agreement
    from models.registry import Registry
    from omnioffer.console import write_json
    from omnioffer.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m bench.reasons")
    parser.add_argument("--customers", type=int, default=1500)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--shown", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--registry", type=Path, default=None,
                        help="model registry (default: the settings' registry)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/reasons.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="omnioffer-bench-reasons-") as folder:
        work = Path(folder)
        registry = args.registry or Settings().model_registry_dir
        registry_dir, version, note = promoted_model(registry, work, args.seed)
        model_file = Registry(registry_dir).path(version) / "nbo.txt"
        store_path, customers = build_world(work, args.customers, args.days, args.seed)
        bench_catalog(work / "catalog", 200)
        at = WORLD_START + timedelta(days=args.days, hours=12)
        booster = lgb.Booster(model_file=str(model_file))
        rows = shown_rows(store_path, customers, work / "catalog", booster, args.shown, at)
        result = {
            "benchmark": "reasons",
            "model": note,
            "customers": len(customers),
            "shown_per_customer": args.shown,
            **reasons_agreement(model_file, rows, shown=args.shown),
        }
    write_json(args.json, result)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
