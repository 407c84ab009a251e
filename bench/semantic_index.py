"""How long the semantic cache's lookup takes with 100,000 questions in one partition.

    python bench/semantic_index.py                       # 100,000 vectors of 1536 and 384 dimensions
    python bench/semantic_index.py --entries 20000 --dims 768

The index (cachestore.semantic_index) answers a lookup with one matrix
product over the partition's unit vectors. Every vector here is in one
tenant's one partition, the worst case (a lookup only ever reads its own
partition). 1536 dimensions are OpenAI's text-embedding-3-small, 384 a small
local model's. The figures are the wall time of `SemanticIndex.nearest`
(including, above 20,000 vectors, its hop to a worker thread), the time to
add each vector (indexing only: the database write is not measured), and
the memory the vectors take. Nothing here needs a database or a network.
"""

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")


def measure(entries: int, dims: int, lookups: int) -> dict[str, float]:
    import numpy as np

    from cachestore.semantic_index import SemanticIndex, unit_vector

    rng = np.random.default_rng(17)
    index = SemanticIndex()
    index.loaded, index.synced_at = True, time.time() + 3600  # nothing to load, no catch-up
    expires = time.time() + 3600
    started = time.perf_counter()
    for row in range(entries):
        index.put(row + 1, 1, "partition", f"key-{row}", unit_vector(rng.standard_normal(dims)), expires)
    added = (time.perf_counter() - started) / entries
    queries = [unit_vector(rng.standard_normal(dims)) for _ in range(lookups)]

    async def lookups_timed() -> list[float]:
        times = []
        for query in queries:
            began = time.perf_counter()
            await index.nearest(1, "partition", query)
            times.append(time.perf_counter() - began)
        return times

    times = sorted(asyncio.run(lookups_timed()))
    partition = index.partitions[(1, "partition")]
    return {
        "p50_ms": statistics.median(times) * 1000,
        "p99_ms": times[int(len(times) * 0.99) - 1] * 1000,
        "add_us": added * 1e6,
        "memory_mb": partition.vectors.nbytes / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[1536, 384])
    parser.add_argument("--lookups", type=int, default=200)
    args = parser.parse_args()
    import django

    django.setup()
    print(f"{'entries':>8} {'dims':>5} {'lookup p50 ms':>14} {'p99 ms':>8} {'add us':>7} {'vectors MB':>11}")
    for dims in args.dims:
        found = measure(args.entries, dims, args.lookups)
        print(
            f"{args.entries:>8} {dims:>5} {found['p50_ms']:>14.2f} {found['p99_ms']:>8.2f} "
            f"{found['add_us']:>7.1f} {found['memory_mb']:>11.0f}"
        )


if __name__ == "__main__":
    main()
