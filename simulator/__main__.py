"""Command line: ``python -m simulator --customers 1000 --days 7 --out data/sim``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from features.catalog import load_catalog
from simulator.run import simulate
from simulator.sinks import EventSink, FileSink, KafkaSink
from simulator.world import SimulationConfig


def main(argv: Sequence[str] | None = None) -> int:
    """Run one simulation into files or Kafka and print its stats as JSON."""
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("data/sim"), help="event-log directory")
    parser.add_argument("--kafka", metavar="BOOTSTRAP", help="produce to Kafka instead of files")
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s to Kafka (0 = max)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: auto)")
    args = parser.parse_args(argv)
    config = SimulationConfig(customers=args.customers, days=args.days, seed=args.seed)
    sink: EventSink
    if args.kafka:
        sink = KafkaSink(args.kafka, args.rate, ground_truth_path=args.out / "ground_truth.jsonl")
    else:
        sink = FileSink(args.out)

    def progress(done: int, total: int) -> None:
        print(f"day {done}/{total}", file=sys.stderr, flush=True)

    stats = simulate(config, load_catalog(), sink, progress, workers=args.workers)
    print(json.dumps(stats.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
