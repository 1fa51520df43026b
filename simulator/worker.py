"""A shard worker process: ``python -m simulator.worker`` (started by ``ParallelRun``).

It reads ``(config, catalog, shard, shards)`` as a pickle on stdin and writes each day's
sorted lines, then its noise counts, as length-prefixed pickles on stdout.
"""

from __future__ import annotations

import gc
import os
import pickle
import sys

from simulator.shards import ShardRun, send_frame


def main() -> None:
    """Run one shard in a worker process: job on stdin, framed pickles on stdout."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr  # a stray print must not corrupt the frames
    gc.disable()  # see simulate(): no reference cycles here
    config, catalog, shard, shards = pickle.loads(sys.stdin.buffer.read())
    run = ShardRun(config, catalog, shard, shards)
    for batch in run.batches():
        send_frame(out, batch)
    send_frame(out, run.noise)
    out.close()


if __name__ == "__main__":
    main()
