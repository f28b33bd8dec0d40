"""python manage.py local_login: a staff login for the person running the app
locally. Used by scripts/run; not meant for production accounts."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Create (or reset) a local staff login and print how to sign in."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password-file", required=True, help="Where the password is kept between runs.")
        parser.add_argument("--url", default="http://127.0.0.1:8000/")

    def handle(self, *args: object, username: str, password_file: str, url: str, **options: object) -> None:
        try:
            with open(password_file) as f:
                password = f.read().strip()
        except FileNotFoundError:
            password = ""
        if not password:
            password = secrets.token_urlsafe(12)
            with open(password_file, "w") as f:
                f.write(password + "\n")
        user, _ = get_user_model().objects.get_or_create(username=username)
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(password)
        user.save()
        self.stdout.write(f"Sign in at {url} as {username!r} with password {password!r}")
