"""Django admin for batches and sync runs: a read-mostly view for staff. The
Batch changelist is also the benchmark's yardstick (bench/dashboard_bench.py)."""

from django.contrib import admin

from .models import Batch, BatchDestination, SyncRun


class BatchDestinationInline(admin.TabularInline):
    model = BatchDestination
    extra = 0
    can_delete = False
    fields = ("name", "count", "completed", "failed", "in_progress", "status")
    readonly_fields = fields


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = (
        "id", "name", "status", "total", "completed", "failed", "in_progress", "created_at"
    )
    # The list page's status filter, q search and default order, Django's way
    # (the benchmark compares the two on the same data).
    list_filter = ("status",)
    search_fields = ("id", "name")
    ordering = ("-created_at",)
    inlines = (BatchDestinationInline,)
    # Rows come from Inkit: the sync writes them, people do not.
    readonly_fields = tuple(field.name for field in Batch._meta.fields)

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = (
        "id", "started_at", "trigger", "outcome", "pages_fetched", "batches_seen", "error"
    )
    list_filter = ("outcome", "trigger")
    ordering = ("-started_at",)
    readonly_fields = tuple(field.name for field in SyncRun._meta.fields)

    def has_add_permission(self, request) -> bool:
        return False
