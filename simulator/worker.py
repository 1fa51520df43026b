"""A shard worker process: ``python -m simulator.worker`` (started by ``ParallelRun``).

It reads ``(config, catalog, shard, shards, spool_dir)`` as a pickle on stdin, and hands
each day's sorted lines, then its noise counts, to the parent through a
:class:`~simulator.shards.Spool`.
"""

from __future__ import annotations

import gc
import os
import pickle
import sys

from simulator.shards import ShardRun, Spool


def main() -> None:
    """Run one shard in a worker process: job on stdin, spool file names on stdout."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr  # a stray print must not corrupt the frames
    gc.disable()  # see simulate(): no reference cycles here
    config, catalog, shard, shards, spool_dir = pickle.loads(sys.stdin.buffer.read())
    spool = Spool(spool_dir, shard)
    run = ShardRun(config, catalog, shard, shards)
    for batch in run.batches():
        spool.put(out, batch)
    spool.put(out, run.noise)
    out.close()


if __name__ == "__main__":
    main()
