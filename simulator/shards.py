"""Simulate a shard of the customers, day by day, in this process or in worker processes.

Customers never interact and each draws from its own random streams, so a shard's lines
are exactly the lines those customers produce in a full run. Merging the shards' sorted
day batches therefore gives byte-identical output whatever the number of workers.
Households (consecutive pairs sharing a device) stay in one shard.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
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


class Spool:
    """Hand pickled batches from a worker to the parent through files.

    The pipe carries only one short line per batch (the file's name); the bulk goes
    through the page cache, so a busy parent never stalls a worker 64 KiB at a time.
    """

    def __init__(self, directory: Path | str, shard: int) -> None:
        self.directory = Path(directory)
        self.shard = shard
        self._sequence = 0

    def put(self, out: BinaryIO, value: object) -> None:
        """Write ``value`` to the next spool file and announce it on ``out``."""
        path = self.directory / f"shard{self.shard}-{self._sequence}.pickle"
        self._sequence += 1
        with path.open("wb") as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(path.name.encode() + b"\n")
        out.flush()

    def take(self, announcements: BinaryIO) -> object:
        """Wait for the next announced file, load it and delete it; EOFError at the end."""
        name = announcements.readline().strip()
        if not name:
            raise EOFError
        path = self.directory / name.decode()
        with path.open("rb") as handle:
            value = pickle.load(handle)
        path.unlink()
        return value


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
        self._spool_dir = tempfile.mkdtemp(prefix="omnioffer-sim-")
        self._spools = [Spool(self._spool_dir, shard) for shard in range(workers)]
        try:
            for shard in range(workers):
                worker = subprocess.Popen(
                    [sys.executable, "-m", "simulator.worker"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=env,
                )
                self._workers.append(worker)
                job = pickle.dumps((config, catalog, shard, workers, self._spool_dir))
                worker.stdin.write(job)  # type: ignore[union-attr]
                worker.stdin.close()  # type: ignore[union-attr]
        except BaseException:
            self.close()
            raise
        self.noise = NoiseStats()
        self._finished = False

    def _receive(self, shard: int) -> object:
        worker = self._workers[shard]
        try:
            return self._spools[shard].take(worker.stdout)  # type: ignore[arg-type]
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
        self._finished = True

    def close(self) -> None:
        """Wait for the workers to finish; stop them if the run was abandoned."""
        for worker in self._workers:
            if not getattr(self, "_finished", False):
                worker.kill()
            if worker.stdout is not None:
                worker.stdout.close()
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        shutil.rmtree(self._spool_dir, ignore_errors=True)
