from django.contrib import admin
from django.urls import path, register_converter

from batches.paths import BatchIdConverter
from dashboard import health, views

# Any id Inkit can send, "/", "." and ".." included (batches/paths.py).
register_converter(BatchIdConverter, "batch_id")

urlpatterns = [
    path("", views.batch_list, name="batch-list"),
    path("batches/<batch_id:batch_id>/", views.batch_detail, name="batch-detail"),
    path("export.csv", views.batch_export, name="batch-export"),
    path("sync-runs/", views.sync_runs, name="sync-runs"),
    path("sync-runs/full-sweep/", views.start_full_sweep, name="full-sweep"),
    path("trends/", views.trends, name="trends"),
    path("sync/", views.sync_now, name="sync-now"),
    path("sync/status/", views.sync_status, name="sync-status"),
    path("login/", views.login, name="login"),
    path("logout/", views.logout, name="logout"),
    path("admin/", admin.site.urls),
    # Platform probes and Prometheus (dashboard/health.py); no login.
    path("healthz", health.healthz, name="healthz"),
    path("metrics", health.metrics, name="metrics"),
]
