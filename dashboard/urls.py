from django.contrib import admin
from django.urls import path

from dashboard import health

urlpatterns = [
    path("admin/", admin.site.urls),
    # Platform probes and Prometheus (dashboard/health.py); no login.
    path("healthz", health.healthz, name="healthz"),
    path("metrics", health.metrics, name="metrics"),
]
