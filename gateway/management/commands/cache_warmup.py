from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.audit import command_actor
from accounts.models import Tenant
from gateway.cache_warmup import cache_warm, popular_requests
from gateway.kernel import cli


class Command(BaseCommand):
    help = (
        "Fill a tenant's response cache: each request body of a JSON Lines file is answered once by the "
        "upstream (billed to the tenant) and stored, so the same requests from its caching keys are hits. "
        "With --save-popular N, write the request bodies of its N most hit entries to the file instead."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="The tenant's slug.")
        parser.add_argument("--file", required=True, type=Path, help="JSON Lines: one request body per line.")
        parser.add_argument(
            "--save-popular",
            type=int,
            default=None,
            metavar="N",
            help="Write the tenant's N most hit entries' request bodies to --file (nothing is sent upstream).",
        )
        parser.add_argument(
            "--cache-ttl",
            type=cli.seconds,
            default=None,
            metavar="SECONDS",
            help="How long the answers are kept (default: the tenant's cache lifetime).",
        )

    def handle(self, *args: Any, slug: str, file: Path, cache_ttl: int | None, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"no tenant {slug!r}; create it with: manage.py tenant_create {slug}")
        if options["save_popular"] is not None:
            return self._save_popular(tenant, options["save_popular"], file)
        if not (cache_ttl or tenant.cache_ttl_seconds):
            raise CommandError(
                f"tenant {slug} has no cache lifetime: give --cache-ttl or run tenant_create --cache-ttl"
            )
        try:
            lines = file.read_text().splitlines()
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc}") from None
        report = cache_warm(tenant, lines, ttl_seconds=cache_ttl, actor=command_actor(__name__))
        for failure in report.failed:
            self.stderr.write(failure)
        self.stdout.write(f"{report.stored} stored, {report.cached} cached already, {len(report.failed)} failed")
        if report.failed and not (report.stored or report.cached):
            raise CommandError("no request could be warmed")
        return None

    def _save_popular(self, tenant: Tenant, limit: int, file: Path) -> None:
        if limit < 1:
            raise CommandError("--save-popular takes a number of entries, at least 1")
        bodies = popular_requests(tenant, limit)
        try:
            file.write_bytes(b"".join(body + b"\n" for body in bodies))
        except OSError as exc:
            raise CommandError(f"cannot write {file}: {exc}") from None
        self.stdout.write(f"{len(bodies)} popular requests of {tenant.slug} written to {file}")
