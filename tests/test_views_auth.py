"""Signing in and out, what needs a login, and how accounts are made."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from .html import text

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/", "/batches/rb_x/", "/export.csv", "/sync-runs/", "/sync/status/"])
def test_every_page_needs_a_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_the_sign_in_page_is_open_and_styled(client):
    response = client.get("/login/?next=/%3Fstatus%3DCompleted")
    assert response.status_code == 200
    html = response.content.decode()
    assert re.search(r'<link rel="stylesheet" href="/static/dashboard/dashboard\.[0-9a-f]{12}\.css">', html)
    assert 'autocomplete="current-password"' in html
    assert "Sign in to see that page." in text(response)


def test_signing_in_goes_on_to_the_page_asked_for(client, ops_user):
    response = client.post("/login/", {"username": "ops", "password": "ops-password-1", "next": "/?status=Completed"})
    assert response.status_code == 302 and response["Location"] == "/?status=Completed"
    assert client.get("/").status_code == 200


def test_a_wrong_password_is_refused_with_a_message(client, ops_user):
    response = client.post("/login/", {"username": "ops", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in text(response)


def test_signing_out_is_a_post_that_says_so(client, ops_user):
    client.force_login(ops_user)
    assert client.get("/logout/").status_code == 405
    response = client.post("/logout/", follow=True)
    assert response.redirect_chain == [("/login/", 302)]
    assert "You have signed out." in text(response)
    assert client.get("/").status_code == 302


def test_signing_out_needs_the_csrf_token(ops_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(ops_user)
    assert client.post("/logout/").status_code == 403
    assert client.get("/").status_code == 200


def test_a_signed_in_visit_to_sign_in_goes_to_the_list(client, ops_user):
    client.force_login(ops_user)
    assert client.get("/login/")["Location"] == "/"


def test_an_htmx_request_without_a_session_sends_the_whole_tab_to_sign_in(client):
    # The live refresh after the session ended: htmx follows the redirect
    # to /login/ and must not swap a sign-in form into the table.
    response = client.get(
        "/?status=Completed", follow=True,
        HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL="http://testserver/?status=Completed",
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/login/?next=/%3Fstatus%3DCompleted"


def test_static_files_need_no_login(client):
    html = client.get("/login/").content.decode()
    stylesheet = re.search(r'href="(/static/dashboard/dashboard\.[0-9a-f]+\.css)"', html).group(1)
    response = client.get(stylesheet)
    assert response.status_code == 200
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"prefers-color-scheme: dark" in body


def test_createsuperuser_makes_an_account_that_can_sign_in(client, fast_passwords, monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-admin-password")
    call_command("createsuperuser", interactive=False, username="admin", email="admin@example.com", verbosity=0)
    assert get_user_model().objects.get(username="admin").is_staff
    client.post("/login/", {"username": "admin", "password": "a-long-admin-password"})
    assert 'id="sync-now"' in client.get("/").content.decode()


def test_the_batch_admin_filters_searches_and_orders_like_the_list(admin_client):
    from .factories import make_batch

    make_batch(id="rb_admin1", name="Invoices", status="Completed")
    make_batch(id="rb_admin2", name="Letters", status="In Progress")
    response = admin_client.get("/admin/batches/batch/?status__exact=In+Progress&q=lett")
    assert response.status_code == 200
    html = response.content.decode()
    assert "rb_admin2" in html and "rb_admin1" not in html
