"""Django admin for batches and sync runs: read-only, for staff to look. The
Batch changelist is also the benchmark's yardstick (bench/dashboard_bench.py).

Batches, their destinations and history come from Inkit and sync runs from
the sync: people never add, change or delete them, and a batch is never
deleted (deleting one would also take its history). BatchEvent is not
registered: the detail page's timeline shows it."""

from django.contrib import admin
from django.http import HttpRequest

from .models import Batch, BatchDestination, SyncRun


class ReadOnlyAdminMixin:
    """No add, no change (the change view only shows), no delete, and so no
    delete action on the changelist."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class BatchDestinationInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = BatchDestination
    extra = 0
    fields = ("name", "count", "completed", "failed", "in_progress", "status")


@admin.register(Batch)
class BatchAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id", "name", "status", "total", "completed", "failed", "in_progress", "created_at"
    )
    # The list page's status filter, q search and default order, Django's way
    # (the benchmark compares the two on the same data).
    list_filter = ("status",)
    search_fields = ("id", "name")
    ordering = ("-created_at",)
    inlines = (BatchDestinationInline,)


@admin.register(SyncRun)
class SyncRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id", "started_at", "kind", "trigger", "outcome", "pages_fetched", "batches_seen",
        "api_requests", "error",
    )
    list_filter = ("kind", "outcome", "trigger")
    ordering = ("-started_at",)
