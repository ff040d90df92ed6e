"""Who gets in, and what an unsigned or forged request gets: sessions, sign-in locks, CSRF
tokens and console roles, through the application's handlers (no browser)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from console.helpers import (
    ANALYST,
    AUDITOR,
    OFFICER,
    PASSWORD,
    csrf_of,
    published_decisions,
    sign_in,
)
from fastapi.testclient import TestClient

from core.clock import FixedClock
from lifecycle.console.web import Console

pytestmark = pytest.mark.broker

PAGES = ("/requests", "/customer", "/violations", "/deadletters", "/audit", "/audit/records")


def test_every_page_without_a_session_sends_to_sign_in_and_a_post_is_refused(
    client: TestClient,
) -> None:
    for page in (*PAGES, "/requests.csv", "/audit/export?format=jsonl"):
        answer = client.get(page, follow_redirects=False)
        assert (answer.status_code, answer.headers.get("location")) == (303, "/login"), page
    token = csrf_of(client.get("/login").text)  # an anonymous session's token
    forged = client.post(
        "/requests/file",
        data={"customer_id": "C-1", "kind": "erasure", "csrf_token": token},
        follow_redirects=False,
    )
    assert forged.status_code == 401
    assert client.get("/healthz").json() == {"ok": True}  # probes need no session


def test_a_signed_in_user_sees_every_page_with_their_name_and_role(client: TestClient) -> None:
    sign_in(client, AUDITOR)
    for page in PAGES:
        answer = client.get(page)
        assert answer.status_code == 200, (page, answer.text[:500])
        assert f'{AUDITOR} <span class="role">auditor</span>' in answer.text
        assert answer.headers["cache-control"] == "no-store"
        assert "script-src 'self'" in answer.headers["content-security-policy"]


def test_a_wrong_password_is_refused_and_five_in_a_row_lock_the_name(
    client: TestClient, clock: FixedClock
) -> None:
    def attempt(password: str) -> int:
        token = csrf_of(client.get("/login").text)
        answer = client.post(
            "/login",
            data={"name": OFFICER, "password": password, "csrf_token": token},
            follow_redirects=False,
        )
        return answer.status_code

    for _ in range(4):
        assert attempt("not the password") == 401
    assert attempt(PASSWORD) == 303  # four failures: not yet locked, and the count starts over
    client.post("/logout", data={"csrf_token": csrf_of(client.get("/requests").text)})
    for _ in range(5):
        assert attempt("not the password") == 401
    token = csrf_of(client.get("/login").text)
    locked = client.post(
        "/login", data={"name": OFFICER, "password": PASSWORD, "csrf_token": token}
    )
    assert locked.status_code == 401 and "locked until 09:15 UTC" in locked.text
    clock.advance(timedelta(minutes=16))
    assert attempt(PASSWORD) == 303


def test_a_name_that_does_not_exist_locks_the_same_way(client: TestClient) -> None:
    for _ in range(5):
        token = csrf_of(client.get("/login").text)
        answer = client.post(
            "/login", data={"name": "nobody", "password": "x" * 12, "csrf_token": token}
        )
        assert answer.status_code == 401
    token = csrf_of(client.get("/login").text)
    answer = client.post("/login", data={"name": "nobody", "password": "x", "csrf_token": token})
    assert "locked until" in answer.text  # the same answer as for a real name


def test_a_form_without_its_csrf_token_or_with_another_is_refused(
    client: TestClient, console: Console, broker: str
) -> None:
    # the sign-in form too
    refused = client.post("/login", data={"name": OFFICER, "password": PASSWORD})
    assert refused.status_code == 403 and "security token (CSRF)" in refused.text
    token = sign_in(client, OFFICER)
    for data in (
        {"customer_id": "C-1", "kind": "access"},
        {"customer_id": "C-1", "kind": "access", "csrf_token": "forged" + token[6:]},
    ):
        answer = client.post("/requests/file", data=data, follow_redirects=False)
        assert answer.status_code == 403, data
    headers_only = client.post(
        "/audit/verify", headers={"X-CSRF-Token": token}, follow_redirects=False
    )
    assert headers_only.status_code == 200  # htmx sends the token as a header
    assert published_decisions(broker) == []  # nothing was filed


def test_a_session_ends_at_its_maximum_age_and_when_its_user_is_removed(
    client: TestClient, console: Console, clock: FixedClock
) -> None:
    sign_in(client, ANALYST)
    clock.advance(timedelta(hours=12, minutes=1))
    assert client.get("/requests", follow_redirects=False).status_code == 303
    sign_in(client, ANALYST)
    assert client.get("/requests").status_code == 200
    console.users.remove(ANALYST)
    assert client.get("/requests", follow_redirects=False).headers["location"] == "/login"


def test_an_analyst_cannot_file_reveal_extend_or_answer_and_each_attempt_is_recorded(
    client: TestClient, broker: str
) -> None:
    token = sign_in(client, ANALYST)
    requests_page = client.get("/requests").text
    assert 'id="file-request"' not in requests_page  # no form to file with
    forged = [
        ("/requests/file", {"customer_id": "C-100042", "kind": "erasure"}),
        ("/customer/reveal", {"subject_ref": "ab" * 32}),
        ("/customer/report", {"subject_ref": "ab" * 32, "values": "yes"}),
    ]
    for path, data in forged:
        answer = client.post(path, data={**data, "csrf_token": token}, follow_redirects=False)
        assert answer.status_code == 403, path
        assert "Only a privacy officer may" in answer.text
        assert "C-100042" not in answer.text
    records = published_decisions(broker)
    assert sorted(
        (r["kind"], r["decision"], r["reason_code"], r["recipient"]) for r in records
    ) == [
        ("request_filed", "deny", "role_not_authorized", ANALYST),
        ("values_revealed", "deny", "role_not_authorized", ANALYST),
        ("values_revealed", "deny", "role_not_authorized", ANALYST),
    ]
    assert all(r["actor_role"] == "analyst" and r["source"] == "console" for r in records)
    assert all("C-100042" not in repr(r) for r in records)  # the pseudonym only


@pytest.mark.postgres
def test_console_users_are_kept_on_postgresql_too(
    tmp_path: Path, broker: str, postgres_db_url: str
) -> None:
    from core.settings import load_settings
    from lifecycle.console import create_app, load_console_settings, open_console
    from lifecycle.runtime import Runtime

    settings = load_settings(
        {
            "KAFKA_BOOTSTRAP": broker,
            "LIFECYCLE_DATA_DIR": str(tmp_path / "data"),
            "LIFECYCLE_DB_URL": postgres_db_url,
        }
    )
    services = open_console(Runtime(settings), load_console_settings(settings, {}))
    try:
        services.users.add(OFFICER, "privacy_officer", PASSWORD)
        with TestClient(create_app(services), base_url="http://127.0.0.1") as pg_client:
            sign_in(pg_client, OFFICER)
            assert pg_client.get("/requests").status_code == 200
            assert [u.name for u in services.users.list()] == [OFFICER]
    finally:
        services.close()
