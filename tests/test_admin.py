"""Django admin: batches and sync runs can be looked at, never added,
changed or deleted (a batch is never deleted)."""

from __future__ import annotations

import pytest
from django.contrib import admin

from batches.models import Batch, BatchDestination, BatchEvent

from .factories import finished_sync, make_batch, make_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model, fast_passwords):
    """A superuser: every permission a user can have, so only the admin
    classes themselves can refuse."""
    user = django_user_model.objects.create_superuser("root", "root@example.com", "root-password-1")
    client.force_login(user)
    return client


@pytest.fixture
def batch():
    batch = make_batch(id="rb_admin", destinations={"salesforce": (3, 1, 2)})
    make_event(batch, changes={"completed": [2, 3]})
    return batch


def test_the_batch_changelist_shows_batches_without_a_delete_action(admin_client, batch):
    response = admin_client.get("/admin/batches/batch/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "rb_admin" in html
    assert "delete_selected" not in html and "/admin/batches/batch/add/" not in html

    # Even posted by hand, the bulk delete action is refused.
    admin_client.post(
        "/admin/batches/batch/",
        {"action": "delete_selected", "_selected_action": ["rb_admin"], "post": "yes"},
    )
    assert Batch.objects.filter(pk="rb_admin").exists()


def test_a_batch_cannot_be_deleted(admin_client, batch):
    assert admin_client.get("/admin/batches/batch/rb_admin/delete/").status_code == 403
    assert (
        admin_client.post("/admin/batches/batch/rb_admin/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert Batch.objects.filter(pk="rb_admin").exists()
    assert BatchDestination.objects.filter(batch_id="rb_admin").count() == 1
    assert BatchEvent.objects.filter(batch_id="rb_admin").count() == 1


def test_a_batch_cannot_be_added(admin_client):
    assert admin_client.get("/admin/batches/batch/add/").status_code == 403
    response = admin_client.post(
        "/admin/batches/batch/add/", {"id": "rb_made_up", "status": "Completed", "total": 1}
    )
    assert response.status_code == 403
    assert not Batch.objects.exists()


def test_the_batch_change_view_only_shows(admin_client, batch):
    response = admin_client.get("/admin/batches/batch/rb_admin/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "rb_admin" in html and "salesforce" in html  # The destinations inline.
    assert 'name="_save"' not in html and 'name="status"' not in html
    # Nor can its destinations be edited, added or removed.
    assert (
        'name="destinations-0-completed"' not in html and 'name="destinations-0-DELETE"' not in html
    )
    assert 'name="destinations-MAX_NUM_FORMS" value="0"' in html

    response = admin_client.post(
        "/admin/batches/batch/rb_admin/change/", {"status": "Failed", "total": 99}
    )
    assert response.status_code == 403
    batch.refresh_from_db()
    assert (batch.status, batch.total) == ("Completed", 10)


def test_sync_runs_are_read_only_too(admin_client):
    run = finished_sync(error="Inkit answered 503")
    assert admin_client.get("/admin/batches/syncrun/").status_code == 200
    html = admin_client.get(f"/admin/batches/syncrun/{run.pk}/change/").content.decode()
    assert "Inkit answered 503" in html and 'name="_save"' not in html
    assert admin_client.get("/admin/batches/syncrun/add/").status_code == 403
    assert (
        admin_client.post(f"/admin/batches/syncrun/{run.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert (
        admin_client.post(f"/admin/batches/syncrun/{run.pk}/change/", {"error": ""}).status_code
        == 403
    )
    run.refresh_from_db()
    assert run.error == "Inkit answered 503"


def test_destinations_and_events_have_no_admin_of_their_own():
    # Destinations show, read-only, inside their batch; events on the detail page.
    assert not admin.site.is_registered(BatchDestination)
    assert not admin.site.is_registered(BatchEvent)
