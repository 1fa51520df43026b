"""Simulate a shard of the customers, day by day, in this process or in worker processes.

Customers never interact and each draws from its own random streams, so a shard's lines
are exactly the lines those customers produce in a full run. Merging the shards' sorted
day batches therefore gives byte-identical output whatever the number of workers.
Households (consecutive pairs sharing a device) stay in one shard.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Iterator
from typing import BinaryIO

from features.catalog import Catalog
from simulator.activity import run_day
from simulator.emit import Line, NoiseStats
from simulator.state import CustomerState, Sim
from simulator.world import SimulationConfig, World, make_world


class ShardRun:
    """The customers of one shard (``(index // 2) % shards == shard``) and their days."""

    def __init__(
        self,
        config: SimulationConfig,
        catalog: Catalog,
        shard: int = 0,
        shards: int = 1,
        world: World | None = None,
    ) -> None:
        self.world = world or make_world(config, catalog)
        self.sim = Sim(self.world, catalog)
        self.states = [
            CustomerState(self.sim, c)
            for c in self.world.customers
            if (c.index // 2) % shards == shard
        ]

    @property
    def noise(self) -> NoiseStats:
        """What the noise stage did so far."""
        return self.sim.emitter.noise

    def batches(self) -> Iterator[list[Line]]:
        """Yield each day's lines in log order, then whatever arrives after the horizon."""
        sim = self.sim
        for day in range(sim.config.days):
            sim.today = today = sim.day(day)
            for st in self.states:
                run_day(st, today)
            yield sim.emitter.drain(day)
        yield sim.emitter.drain_all()


_FRAME = struct.Struct("!Q")


def send_frame(out: BinaryIO, value: object) -> None:
    """Write one length-prefixed pickle to ``out``."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_FRAME.pack(len(data)))
    out.write(data)
    out.flush()


def _recv_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data


class ParallelRun:
    """Run ``workers`` shards in worker processes and merge their batches in log order.

    Workers are fresh interpreters (``python -m simulator.worker``) that inherit this
    process's import path, so nothing depends on how the caller's main module is written.
    """

    def __init__(self, config: SimulationConfig, catalog: Catalog, workers: int) -> None:
        if workers < 2:
            message = f"workers must be >= 2 for a parallel run; got {workers}"
            raise ValueError(message)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._workers: list[subprocess.Popen[bytes]] = []
        try:
            for shard in range(workers):
                worker = subprocess.Popen(
                    [sys.executable, "-m", "simulator.worker"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=env,
                )
                self._workers.append(worker)
                job = pickle.dumps((config, catalog, shard, workers))
                worker.stdin.write(job)  # type: ignore[union-attr]
                worker.stdin.close()  # type: ignore[union-attr]
        except BaseException:
            self.close()
            raise
        self.noise = NoiseStats()

    def _receive(self, shard: int) -> object:
        worker = self._workers[shard]
        stream: BinaryIO = worker.stdout  # type: ignore[assignment]
        try:
            (size,) = _FRAME.unpack(_recv_exactly(stream, _FRAME.size))
            return pickle.loads(_recv_exactly(stream, size))
        except EOFError:
            code = worker.wait(10)
            message = f"simulator shard {shard} stopped early (exit code {code}); see its stderr"
            raise RuntimeError(message) from None

    def batches(self, days: int) -> Iterator[list[Line]]:
        """Yield the merged batch of every day, then the one after the horizon."""
        for _ in range(days + 1):
            merged: list[Line] = []
            for shard in range(len(self._workers)):
                merged += self._receive(shard)  # type: ignore[arg-type]
            merged.sort()  # sorted runs: timsort merges them in linear time
            yield merged
        for shard in range(len(self._workers)):
            part: NoiseStats = self._receive(shard)  # type: ignore[assignment]
            noise = self.noise
            noise.duplicates += part.duplicates
            noise.late += part.late
            noise.malformed += part.malformed
            noise.beyond_horizon += part.beyond_horizon
            for kind, count in part.malformed_by_kind.items():
                noise.malformed_by_kind[kind] = noise.malformed_by_kind.get(kind, 0) + count

    def close(self) -> None:
        """Wait for the workers to finish (and stop those that do not)."""
        for worker in self._workers:
            if worker.stdout is not None:
                worker.stdout.close()
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
