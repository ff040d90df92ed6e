"""The console in a real browser (Debian's chromium and chromium-driver, through Selenium), on
the embedded broker with a real worker process and the console's own process, as its users
work: signing in, filing an erasure and seeing it confirmed, extending a request, revealing a
customer's values (and finding the reveal on the ledger), an analyst who cannot reveal or
file, and requests without a session or without a CSRF token, refused.

Every page visited is kept as a screenshot in ``tests/console/screenshots/`` and checked: the
text the page shows (through the DOM) and that the picture is not blank.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from console.helpers import ANALYST, OFFICER, PASSWORD
from PIL import Image
from sqlalchemy import Engine

from core.db import make_engine
from sinks.ledger import iter_records
from streams.broker import EmbeddedBroker
from streams.topic_admin import apply_topics
from streams.topics import CUSTOMER_EVENTS

from fixtures.broker import LIFECYCLE, REPO, WorkerProcess, pipeline_env, read_topic, run_cli

os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for a driver

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
WINDOW = (1400, 1000)

CUSTOMERS = {
    "C-5001": {"name": "Aaliyah Example-Ramdeen", "email": "aaliyah.example@example.org"},
    "C-5002": {"name": "Brandon Example-Charles", "email": "brandon.example@example.org"},
    "C-5003": {"name": "Chantal Example-Persad", "email": "chantal.example@example.org",
               "address": "12 Sample Street, Chaguanas"},
}  # fmt: skip
ALL_VALUES = [v for values in CUSTOMERS.values() for v in values.values()]


@dataclass
class Stack:
    url: str
    env: dict[str, str]
    engine: Engine
    console_log: Path

    def records(self, kind: str) -> list[dict[str, Any]]:
        return [e.as_export() for e in iter_records(self.engine) if e.as_export()["kind"] == kind]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def events() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n, (customer, values) in enumerate(CUSTOMERS.items()):
        common = {"source": "web", "subject_id": customer}
        out.append(
            {**common, "kind": "collected", "event_id": f"b-{n}-c", "channel": "web_form",
             "actor": {"id": "web-portal", "role": "system"},
             "purposes": ["billing", "service_provision"], "data": values}
        )  # fmt: skip
        out.append(
            {**common, "kind": "used", "event_id": f"b-{n}-u", "source": "crm",
             "actor": {"id": "mk-1", "role": "marketing"}, "categories": ["email"],
             "purpose": "sale"}
        )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            "chromium and chromium-driver are needed: apt-get install chromium chromium-driver"
        )
    tmp = tmp_path_factory.mktemp("console-browser")
    with EmbeddedBroker() as broker:
        apply_topics({"bootstrap.servers": broker.bootstrap}, 4)
        env = pipeline_env(broker.bootstrap, tmp / "data")  # its sources registered, with secrets
        for name, role in ((OFFICER, "privacy_officer"), (ANALYST, "analyst")):
            added = run_cli(env, "console", "user", "add", name, "--role", role,
                            stdin=PASSWORD.encode())  # fmt: skip
            assert added.returncode == 0, added.stderr.decode()
        with open(tmp / "worker.log", "wb") as out:
            process = subprocess.Popen(
                [LIFECYCLE, "up"], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
            )
        worker = WorkerProcess(process, tmp / "worker.log")
        port = free_port()
        console_log = tmp / "console.log"
        with open(console_log, "wb") as out:
            console = subprocess.Popen(
                [LIFECYCLE, "console", "--port", str(port)],
                env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            worker.wait_for_log("Worker ready", 90)
            document = "".join(json.dumps(e) + "\n" for e in events()).encode()
            assert run_cli(env, "publish", "-", stdin=document).returncode == 0
            producer = Producer({"bootstrap.servers": broker.bootstrap})
            producer.produce(CUSTOMER_EVENTS, b"\x00 not a record of ours", b"x")
            assert producer.flush(10) == 0
            read_topic(broker.bootstrap, "privacy.audit", min_count=len(events()), timeout=60)
            url = f"http://127.0.0.1:{port}/"
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(url + "healthz", timeout=2)  # noqa: S310
                    break
                except OSError:
                    assert console.poll() is None, console_log.read_text()[-3000:]
                    assert time.monotonic() < deadline, "the console did not start"
                    time.sleep(0.3)
            engine = make_engine(f"sqlite:///{tmp / 'data' / 'lifecycle.sqlite'}")
            yield Stack(url, env, engine, console_log)
            engine.dispose()
        finally:
            console.terminate()
            console.wait(30)
            worker.stop()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait_for(driver: WebDriver, css: str, text: str = "", timeout: float = 30) -> str:
    """The text of the element ``css`` once it contains ``text``."""
    shown = ""

    def found(d: WebDriver) -> bool:
        nonlocal shown
        elements = d.find_elements(By.CSS_SELECTOR, css)
        shown = elements[0].text if elements else ""
        return bool(elements) and text in shown

    # htmx swaps fragments in place: an element found may be replaced before it is read.
    WebDriverWait(driver, timeout, ignored_exceptions=[StaleElementReferenceException]).until(
        found, f"{css} never showed {text!r}"
    )
    return shown


def keep(driver: WebDriver, name: str, *, shows: list[str]) -> None:
    """Screenshot ``name``; check the page's text and that the picture is not blank."""
    body = driver.find_element(By.TAG_NAME, "body").text
    for text in shows:
        assert text in body, f"{name}: {text!r} not on the page"
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    assert driver.save_screenshot(str(path))
    with Image.open(path) as image:
        assert image.size[0] >= 1000 and image.size[1] >= 600, image.size
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50, f"{name}: a nearly blank picture"
        if colours:
            most = max(count for count, _ in colours)
            assert most < 0.97 * image.size[0] * image.size[1], f"{name}: one colour fills it"


def sign_in(driver: WebDriver, stack: Stack, name: str, password: str = PASSWORD) -> None:
    driver.get(stack.url + "login")
    driver.find_element(By.NAME, "name").send_keys(name)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    wait_for(driver, "#signed-in-as", name)


def fetch(driver: WebDriver, path: str, form: dict[str, str]) -> int:
    """POST ``form`` from the page (same origin, with the browser's cookies); the status."""
    status = driver.execute_async_script(
        "const [path, form, done] = arguments;"
        "fetch(path, {method: 'POST', body: new URLSearchParams(form), redirect: 'manual'})"
        ".then(r => done(r.status), e => done(String(e)));",
        path,
        form,
    )
    assert isinstance(status, int), status
    return status


def page_csrf(driver: WebDriver) -> str:
    field = driver.find_element(By.CSS_SELECTOR, "input[name='csrf_token']")
    return str(field.get_attribute("value"))


# --------------------------------------------------------------------------- the tests


def test_signing_in(stack: Stack, browser: WebDriver) -> None:
    browser.get(stack.url)
    assert browser.current_url.endswith("/login")
    keep(browser, "login", shows=["Sign in", "Name", "Password"])
    browser.find_element(By.NAME, "name").send_keys(OFFICER)
    browser.find_element(By.NAME, "password").send_keys("not the password")
    browser.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    assert wait_for(browser, "#sign-in-error") == "Wrong name or password."
    sign_in(browser, stack, OFFICER)
    assert browser.current_url.endswith("/requests")
    keep(browser, "requests", shows=["Customers' requests", "File a request", OFFICER,
                                      "placeholder"])  # fmt: skip


def test_an_officer_files_an_erasure_and_sees_it_confirmed_and_completed(
    stack: Stack, browser: WebDriver
) -> None:
    sign_in(browser, stack, OFFICER)
    browser.find_element(By.CSS_SELECTOR, "#file-panel summary").click()
    browser.find_element(By.NAME, "customer_id").send_keys("C-5001")
    browser.find_element(By.ID, "file-erasure").click()
    confirmed = wait_for(browser, "#confirmed", "completed", timeout=60)
    assert "Confirmed on privacy.deletion-confirmations" in confirmed
    request_id = browser.current_url.rsplit("/", 1)[1]
    assert "C-5001" not in browser.current_url and "C-5001" not in browser.page_source
    keep(browser, "request-erasure", shows=["Erasure request", request_id, "Erased: email, name",
                                            f"by {OFFICER} (console)"])  # fmt: skip
    browser.get(stack.url + "requests")
    row = wait_for(browser, f"tr[data-request-id='{request_id}']", "completed")
    assert "erasure" in row
    keep(browser, "requests-completed", shows=[request_id, "completed"])
    filed = [r for r in stack.records("request_filed") if request_id in r["event_id"]]
    assert [(r["recipient"], r["purpose"]) for r in filed] == [(OFFICER, "erasure")]
    decided = [r for r in stack.records("deletion_requested")
               if r["erasure"]["request_id"] == request_id]  # fmt: skip
    assert decided and decided[0]["erasure"]["status"] == "completed"


def test_an_officer_extends_a_request_and_its_due_date_moves(
    stack: Stack, browser: WebDriver
) -> None:
    sign_in(browser, stack, OFFICER)
    browser.find_element(By.CSS_SELECTOR, "#file-panel summary").click()
    browser.find_element(By.NAME, "customer_id").send_keys("C-5002")
    browser.find_element(By.CSS_SELECTOR, "input[name='kind'][value='access']").click()
    browser.find_element(By.ID, "file-erasure").click()
    due = wait_for(browser, "#due", "UTC")
    assert "Ledger records" in wait_for(browser, "#request-facts")
    Select(browser.find_element(By.NAME, "reason")).select_by_value("number_of_requests")
    browser.find_element(By.NAME, "customer_told").click()
    browser.find_element(By.ID, "extend").click()
    extended = wait_for(browser, "#extended", "number of requests")
    assert f"by {OFFICER}" in extended
    moved = wait_for(browser, "#due", "UTC")
    first = time.strptime(due, "%Y-%m-%d %H:%M UTC")
    second = time.strptime(moved, "%Y-%m-%d %H:%M UTC")
    assert (time.mktime(second) - time.mktime(first)) / 86_400 == pytest.approx(30, abs=0.05)
    keep(browser, "request-extended", shows=["Access request", "number of requests", moved])
    assert [r["reason_code"] for r in stack.records("request_extended")] == ["number_of_requests"]


def test_a_reveal_shows_values_and_lands_on_the_ledger(stack: Stack, browser: WebDriver) -> None:
    sign_in(browser, stack, OFFICER)
    browser.get(stack.url + "customer")
    browser.find_element(By.NAME, "customer_id").send_keys("C-5003")
    browser.find_element(By.ID, "search").click()
    wait_for(browser, "#held", "address")
    assert not any(v in browser.page_source for v in CUSTOMERS["C-5003"].values())
    keep(browser, "customer", shows=["Access report", "Reveal values", "Uses and disclosures"])
    browser.find_element(By.ID, "reveal").click()
    recorded = wait_for(browser, "#reveal-recorded", "ledger record")
    seq = int(re.search(r"ledger record (\d+)", recorded).group(1))  # type: ignore[union-attr]
    assert CUSTOMERS["C-5003"]["email"] in wait_for(browser, "#held", "@")
    keep(browser, "customer-revealed", shows=["Revealed address, email, name", recorded])
    (record,) = [r for r in stack.records("values_revealed") if r["seq"] == seq]
    assert (record["recipient"], record["actor_role"], record["source"]) == (
        OFFICER, "privacy_officer", "console",
    )  # fmt: skip
    assert record["categories"] == ["address", "email", "name"]
    assert not any(v in json.dumps(record) for v in ALL_VALUES)
    browser.get(stack.url + f"audit/records/{seq}")
    keep(browser, "record", shows=[f"Ledger record {seq}", "values_revealed"])


def test_an_analyst_can_neither_reveal_nor_file(stack: Stack, browser: WebDriver) -> None:
    sign_in(browser, stack, ANALYST)
    assert not browser.find_elements(By.ID, "file-panel")
    browser.get(stack.url + "customer")
    browser.find_element(By.NAME, "customer_id").send_keys("C-5003")
    browser.find_element(By.ID, "search").click()
    wait_for(browser, "#categories-only", "Categories only")
    assert not browser.find_elements(By.ID, "reveal-form")
    assert not any(v in browser.page_source for v in ALL_VALUES)
    keep(browser, "customer-analyst", shows=["Categories only", ANALYST, "hidden"])
    ref = browser.find_element(By.CSS_SELECTOR, "input[name='subject_ref']").get_attribute("value")
    token = page_csrf(browser)
    assert fetch(browser, "/customer/reveal", {"subject_ref": str(ref), "csrf_token": token}) == 403
    filing = {"customer_id": "C-5003", "kind": "erasure", "csrf_token": token}
    assert fetch(browser, "/requests/file", filing) == 403
    refused = [r for r in stack.records("values_revealed") + stack.records("request_filed")
               if r["decision"] == "deny"]  # fmt: skip
    deadline = time.monotonic() + 20
    while len(refused) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
        refused = [r for r in stack.records("values_revealed") + stack.records("request_filed")
                   if r["decision"] == "deny"]  # fmt: skip
    assert sorted((r["kind"], r["recipient"], r["reason_code"]) for r in refused) == [
        ("request_filed", ANALYST, "role_not_authorized"),
        ("values_revealed", ANALYST, "role_not_authorized"),
    ]


def test_a_request_without_a_session_is_refused(stack: Stack, browser: WebDriver) -> None:
    browser.get(stack.url + "requests")
    assert browser.current_url.endswith("/login")  # sent to sign in
    assert "Customers' requests" not in browser.page_source
    token = page_csrf(browser)  # the anonymous session's: not enough
    filing = {"customer_id": "C-5002", "kind": "erasure", "csrf_token": token}
    assert fetch(browser, "/requests/file", filing) == 401
    keep(browser, "no-session", shows=["Sign in"])


def test_a_form_without_its_csrf_token_is_refused(stack: Stack, browser: WebDriver) -> None:
    sign_in(browser, stack, OFFICER)
    browser.get(stack.url + "customer")
    browser.execute_script(
        "document.querySelector('#customer-search input[name=csrf_token]').remove()"
    )
    browser.find_element(By.NAME, "customer_id").send_keys("C-5003")
    browser.find_element(By.ID, "search").click()
    refusal = wait_for(browser, "#refusal", "security token (CSRF)")
    assert "C-5003" not in browser.page_source
    keep(browser, "csrf-refused", shows=[refusal])


def test_the_violations_dead_letters_and_audit_pages(stack: Stack, browser: WebDriver) -> None:
    sign_in(browser, stack, ANALYST)
    browser.get(stack.url + "violations")
    wait_for(browser, "#violations", "purpose not permitted")
    assert browser.find_elements(By.CSS_SELECTOR, ".chart canvas")  # uPlot drew the chart
    keep(browser, "violations", shows=["Refused collections, uses and shares", "marketing"])
    browser.get(stack.url + "deadletters")
    wait_for(browser, "#dead-letters", "customer.events")
    keep(browser, "deadletters", shows=["Dead letters", "Never its content"])
    browser.get(stack.url + "audit")
    browser.find_element(By.ID, "run-verify").click()
    verified = wait_for(browser, "#verify-result", "Intact", timeout=60)
    assert browser.find_elements(By.CSS_SELECTOR, ".chart canvas")
    keep(browser, "audit", shows=["Chain head", "Last signed checkpoint", verified])
    log = stack.console_log.read_text()
    assert not any(v in log for v in [*ALL_VALUES, *CUSTOMERS])  # nothing personal logged
