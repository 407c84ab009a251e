"""Time the admin's list pages over a million usage records on PostgreSQL.

    python bench/admin_million.py                       # 1,000,000 records in scratch_h6, dropped after
    python bench/admin_million.py --rows 200000 --keep  # smaller, and keep the database to poke at

Creates a scratch database (refuses one that exists unless --replace), migrates
it, loads tenants, keys, budgets, credit and the records with COPY, runs
ANALYZE as autovacuum would, then fetches each page through Django's test
client as a logged-in superuser and prints the median and worst of --repeat
runs, with the number of queries per page.
"""

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/scratch_h6"
TENANTS, KEYS_PER_TENANT, DAYS = 200, 5, 30
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-3")
PROVIDERS = ("openai", "anthropic", "local")
STATUSES = (200,) * 95 + (429, 429, 500, 502, 401)
COLUMNS = (
    "request_id",
    "created_at",
    "tenant_id",
    "api_key_id",
    "endpoint",
    "public_model",
    "upstream_model",
    "provider",
    "status_code",
    "error_code",
    "stream",
    "client_disconnected",
    "usage_estimated",
    "cache_hit",
    "cache_status",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_nanos",
    "saved_nanos",
    "prepaid",
    "latency_ms",
    "ttft_ms",
    "rolled_up",
)


def admin_database(url: str, sql: str) -> None:
    """Run CREATE/DROP DATABASE from the server's maintenance database."""
    import psycopg

    parts = urlsplit(url)
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as conn:
        conn.execute(sql)


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["DATABASE_POOL"] = "0"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    import django

    django.setup()


def load(rows: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from accounts.services import api_key_issue, tenant_create
    from billing.services import budget_set, credit_add

    random.seed(7)
    keys: list[tuple[int, int]] = []
    for t in range(TENANTS):
        tenant = tenant_create(slug=f"tenant-{t:03d}", is_prepaid=t % 4 == 0)
        for k in range(KEYS_PER_TENANT):
            keys.append((tenant.pk, api_key_issue(tenant=tenant, name=f"key {k}")[1].pk))
        budget_set(limit_usd=Decimal("100"), period="month", tenant=tenant)
        budget_set(limit_usd=Decimal("10"), period="day", tenant=tenant)
        if tenant.is_prepaid:
            credit_add(tenant=tenant, amount_usd=Decimal("500"))
    get_user_model().objects.create_superuser("bench", "bench@example.test", "bench")

    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(days=DAYS)
    span = (now - start).total_seconds()
    t0 = time.perf_counter()
    connection.ensure_connection()  # COPY goes through the psycopg connection itself
    with (
        connection.connection.cursor() as raw,
        raw.copy(f"COPY billing_usagerecord ({', '.join(COLUMNS)}) FROM STDIN") as copy,
    ):
        for i in range(rows):
            tenant_id, key_id = random.choice(keys)
            status = random.choice(STATUSES)
            created = start + dt.timedelta(seconds=span * i / rows)
            tokens_in, tokens_out = random.randint(10, 4000), random.randint(0, 800) if status == 200 else 0
            copy.write_row(
                (
                    f"req_{uuid.uuid4().hex}",
                    created,
                    tenant_id,
                    key_id,
                    "chat.completions",
                    random.choice(MODELS),
                    "upstream",
                    random.choice(PROVIDERS),
                    status,
                    "" if status == 200 else "upstream",
                    i % 3 == 0,
                    False,
                    False,
                    i % 10 == 0,
                    "",
                    tokens_in,
                    0,
                    0,
                    0,
                    tokens_out,
                    0,
                    tokens_in * 150 + tokens_out * 600,
                    0,
                    False,
                    random.randint(80, 9000),
                    None,
                    created < now - dt.timedelta(minutes=10),
                )
            )
    print(f"loaded {rows:,} usage records with COPY in {time.perf_counter() - t0:.1f}s", flush=True)
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        for granularity in ("hour", "day"):
            cursor.execute(rollup_sql(granularity))
        cursor.execute("ANALYZE")
    print(f"rolled up in SQL in {time.perf_counter() - t0:.1f}s", flush=True)


def rollup_sql(granularity: str) -> str:
    """The rollups of the records marked rolled up, in one INSERT ... SELECT
    (what billing.rollups computes batch by batch, at load speed)."""
    from billing.histograms import LATENCY_COLUMNS, TTFT_COLUMNS, bucket_range

    sums = [
        "input_tokens",
        "cached_input_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cost_nanos",
        "saved_nanos",
    ]
    buckets = []
    for columns, field in ((LATENCY_COLUMNS, "latency_ms"), (TTFT_COLUMNS, "ttft_ms")):
        for index, column in enumerate(columns):
            low, high = bucket_range(index)
            upper = f" AND {field} < {high}" if high is not None else ""
            buckets.append((column, f"COUNT(*) FILTER (WHERE {field} >= {low}{upper})"))
    names = ["requests", "errors", "cache_hits", *sums, "prepaid_cost_nanos", *(c for c, _ in buckets)]
    values = [
        "COUNT(*)",
        "COUNT(*) FILTER (WHERE status_code >= 400)",
        "COUNT(*) FILTER (WHERE cache_hit)",
        *(f"SUM({name})" for name in sums),
        "COALESCE(SUM(cost_nanos) FILTER (WHERE prepaid), 0)",
        *(v for _, v in buckets),
    ]
    return (
        "INSERT INTO billing_usagerollup (granularity, bucket_start, tenant_id, api_key_id, public_model, provider, "
        f"{', '.join(names)}) SELECT '{granularity}', date_trunc('{granularity}', created_at AT TIME ZONE 'UTC') "
        f"AT TIME ZONE 'UTC', tenant_id, api_key_id, public_model, provider, {', '.join(values)} "
        "FROM billing_usagerecord WHERE rolled_up GROUP BY 2, 3, 4, 5, 6"
    )


def measure(repeat: int) -> list[tuple[str, float, float, int]]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench"))
    day = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    pages = {
        "usage records": "/admin/billing/usagerecord/",
        "usage records, 5xx": "/admin/billing/usagerecord/?status=5xx",
        "usage records, one provider": "/admin/billing/usagerecord/?provider=anthropic",
        "usage records, one day": f"/admin/billing/usagerecord/?created_at__year={day.year}"
        f"&created_at__month={day.month}&created_at__day={day.day}",
        "usage records, one tenant": "/admin/billing/usagerecord/?q=tenant-042",
        "usage records, page 50": "/admin/billing/usagerecord/?p=50",
        "tenants": "/admin/accounts/tenant/",
        "keys": "/admin/accounts/apikey/",
        "dashboard (30 days)": "/admin/dashboard/?days=30",
    }
    results = []
    for name, url in pages.items():
        timings, queries = [], 0
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as captured:
                t0 = time.perf_counter()
                response = client.get(url)
                timings.append(time.perf_counter() - t0)
            assert response.status_code == 200, (url, response.status_code)
            queries = len(captured)
        results.append((name, statistics.median(timings), max(timings), queries))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database afterwards")
    parser.add_argument("--replace", action="store_true", help="drop the scratch database first if it exists")
    parser.add_argument("--reuse", action="store_true", help="measure a database kept by an earlier --keep run")
    args = parser.parse_args()
    name = urlsplit(args.database_url).path.lstrip("/")
    if args.replace and not args.reuse:
        admin_database(args.database_url, f'DROP DATABASE IF EXISTS "{name}"')
    if not args.reuse:
        admin_database(args.database_url, f'CREATE DATABASE "{name}"')
    try:
        setup_django(args.database_url)
        from django.core.management import call_command

        call_command("migrate", verbosity=0, skip_checks=True)
        if not args.reuse:
            load(args.rows)
        print(f"\n{'page':32} {'median':>9} {'worst':>9} {'queries':>8}")
        for page, median, worst, queries in measure(args.repeat):
            print(f"{page:32} {median * 1000:7.0f}ms {worst * 1000:7.0f}ms {queries:8d}")
    finally:
        if not args.keep:
            from django.db import connections

            connections.close_all()
            admin_database(args.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            print(f"dropped {name}")


if __name__ == "__main__":
    main()
