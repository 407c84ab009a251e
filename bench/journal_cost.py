"""What the usage journal costs a request: UsageMeter.push with and without it.

    python bench/journal_cost.py              # 200,000 pushes each way, CPU time per push
    python bench/journal_cost.py --events 1e6

push() runs once per request, on the request path. Both runs push the same
event into a fresh meter (no writer, so nothing is flushed); the difference is
the journal's line: one orjson encode and one write() into the page cache.
The journal's folder is a temporary one on the same disk as var/.
"""

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=float, default=200_000)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    import django

    django.setup()
    from billing.journal import UsageJournal
    from billing.meter import UsageMeter
    from gateway.kernel.context import Usage, UsageEvent

    event = UsageEvent(
        request_id="req_0123456789abcdef0123456789abcdef",
        created_at=dt.datetime.now(dt.UTC),
        tenant_id=1,
        key_id=1,
        endpoint="chat.completions",
        public_model="gpt-4o-mini",
        upstream_model="gpt-4o-mini-2024-07-18",
        provider="openai",
        status_code=200,
        usage=Usage(input_tokens=812, output_tokens=164),
        cost_nanos=220_200,
        latency_ms=412,
        stream=True,
        ttft_ms=95,
    )
    n = int(args.events)
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent.parent / "var") as folder:
        results = {}
        for name in ("without the journal", "with the journal"):
            meter = UsageMeter()
            if name == "with the journal":
                meter.journal = UsageJournal(Path(folder))
            else:
                meter.journal.append = lambda event: None  # type: ignore[method-assign]
            started = time.process_time()
            for _ in range(n):
                meter.push(event)
            results[name] = (time.process_time() - started) / n * 1e6
        for name, micros in results.items():
            print(f"{name:>22}: {micros:6.2f} µs CPU per push")
        added = results["with the journal"] - results["without the journal"]
        print(f"{'the journal adds':>22}: {added:6.2f} µs CPU per request")


if __name__ == "__main__":
    main()
