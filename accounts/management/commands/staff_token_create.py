from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.staff_tokens import staff_token_issue


class Command(BaseCommand):
    help = "Issue a management API token (/api/) for a staff user. The token is printed once, alone on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="What the token is for, e.g. terraform.")

    def handle(self, *args: Any, username: str, name: str, **options: Any) -> None:
        user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"no user {username!r}; create one with: manage.py createsuperuser")
        try:
            plaintext, token = staff_token_issue(user=user, name=name)
        except ValueError as exc:
            raise CommandError(f"{exc}: only active staff may hold a management token") from None
        self.stdout.write(f"token {token.prefix}… for {username} (shown once; use Authorization: Bearer <token>):")
        self.stdout.write(plaintext)
