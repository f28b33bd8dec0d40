from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"

    def ready(self) -> None:
        # Connects the sign-in signal receivers (lockout log, session end).
        from . import signin  # noqa: F401
