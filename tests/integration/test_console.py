"""The web console in a real browser: Debian's Chromium, driven by Playwright, against the real tiers.

Every test saves screenshots of the views it went through under ``artifacts/screenshots/``.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time

import pytest

from tests.integration.browser import CHROMIUM_ARGS, chromium_path, screenshot
from tests.integration.harness import PYTHON, ROOT, Stack, scaled, wait_until
from tests.integration.receiver import Receiver

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make venv installs it)")
expect = sync_api.expect

CHROMIUM = chromium_path()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason=f"no Chromium at {os.environ.get('MSCHEDULE_CHROMIUM') or '/usr/bin/chromium'}: "
                             "`make browser` (or .ci/run) installs Debian's chromium package through apt, as root")

#: one dc=sh agent and two dc=bj agents, with hostnames the rows can be told apart by
AGENT_SETS = (("sh-{i}", "dc=sh", 1), ("bj-{i}", "dc=bj", 2))
UI_TIMEOUT_MS = int(scaled(20) * 1000)


@pytest.fixture(scope="module")
def console_stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("console"))
    try:
        s.master()
        s.web()
        for hostname, label, count in AGENT_SETS:
            s.agents(count, extra=("--hostname", hostname, "--label", label))
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser session (its own sessionStorage); fails the test on any script error in the page."""
    context = browser.new_context(viewport={"width": 1300, "height": 850})
    context.set_default_timeout(UI_TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"script errors in the page: {errors}"


def hosts(stack: Stack) -> dict[str, str]:
    """Agent id -> reported hostname."""
    return {agent_id: info["hostname"] for agent_id, info in stack.api.agents().items()}


def open_console(page, stack: Stack, view: str = "", token: str | None = None) -> None:
    """Load the page; it asks for the token once (the API wants one; the stack's admin file token unless
    ``token``) and then shows the agents."""
    page.goto(f"{stack.api.base}/{view}")
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    page.fill("#token-input", token or stack.token)
    page.click("#token-form button[type=submit]")
    expect(dialog).to_be_hidden()


def tick(page, agent_ids) -> None:
    for agent_id in agent_ids:
        page.locator(f"#agents tr[data-agent='{agent_id}'] input.pick").check()


def submit_run(page, script: str, **params) -> str:
    """From the Run view: type the script and parameters, submit, and return the task id the page opened."""
    page.fill("#run-form-script", script)
    for name, value in params.items():
        page.fill(f"#run-form-{name}", str(value))
    page.click("#run-form button[type=submit]")
    page.wait_for_url(re.compile(r"#/task/"))
    return page.url.rsplit("/", 1)[1]


def wait_task_done(page) -> None:
    expect(page.locator("#view")).to_have_attribute("data-done", "yes", timeout=UI_TIMEOUT_MS)


def target_row(page, agent_id: str):
    return page.locator(f"#targets tr[data-agent='{agent_id}']")


def test_tick_two_agents_and_run_a_script(console_stack, page):
    names = hosts(console_stack)
    open_console(page, console_stack)
    rows = page.locator("#agents tbody tr[data-agent]")
    expect(rows).to_have_count(3)
    for agent_id, hostname in names.items():
        row = page.locator(f"#agents tr[data-agent='{agent_id}']")
        expect(row.locator("td.hostname")).to_have_text(hostname)
        expect(row).to_contain_text("online")
        expect(row).to_contain_text(re.compile(r"\d+\.\d s ago"))
    bj = sorted(a for a, h in names.items() if h.startswith("bj-"))
    tick(page, bj)
    expect(page.locator("#run-selected")).to_have_text("Run on 2 ticked")
    screenshot(page, "01-agents")

    page.click("#run-selected")
    expect(page.locator("#run-form-targets")).to_have_value(" ".join(bj))
    page.fill("#run-form-script", "hostname; exit 0")
    screenshot(page, "02-run")
    task_id = submit_run(page, "hostname; exit 0")

    wait_task_done(page)
    expect(page.locator("#task-state")).to_have_text("SUCCEED")
    expect(page.locator("#targets tbody tr")).to_have_count(2)
    for agent_id in bj:
        row = target_row(page, agent_id)
        expect(row.locator("td.state")).to_have_text("SUCCEED")
        expect(row.locator("td.code")).to_have_text("0")
        expect(row.locator("td.hostname")).to_have_text(names[agent_id])
        row.locator("summary").click()
        expect(row.locator("pre.output")).to_have_text(socket.gethostname() + "\n")
    screenshot(page, "03-task")

    # the page showed what the API holds
    detail = console_stack.api.wait_task(task_id)
    assert sorted(detail["targets"]) == bj
    assert {t["output"] for t in detail["targets"].values()} == {socket.gethostname() + "\n"}


def test_failing_script_shows_failed_and_the_cancelled_hosts(console_stack, page):
    open_console(page, console_stack)
    expect(page.locator("#agents tbody tr[data-agent]")).to_have_count(3)
    page.check("#select-all")
    expect(page.locator("#run-selected")).to_have_text("Run on 3 ticked")
    page.click("#run-selected")
    task_id = submit_run(page, "echo failing on purpose; exit 3", parallel=1, fail_count=0, fail_rate=0)

    wait_task_done(page)
    expect(page.locator("#task-state")).to_have_text("FAILED")
    states = page.locator("#targets td.state")
    expect(states.filter(has_text="FAILED")).to_have_count(1)
    expect(states.filter(has_text="CANCELLED")).to_have_count(2)
    expect(page.locator("#targets td").filter(has_text="never started")).to_have_count(2)
    expect(page.locator("#targets td.code").filter(has_text="3")).to_have_count(1)
    # the failure's output is open without a click
    failed = page.locator("#targets tbody tr").filter(has=page.locator("td.state", has_text="FAILED"))
    expect(failed.locator("pre.output")).to_be_visible()
    expect(failed.locator("pre.output")).to_have_text("failing on purpose\n")
    expect(page.locator("#task-counts")).to_contain_text("FAILED 1")
    expect(page.locator("#task-counts")).to_contain_text("CANCELLED 2")
    expect(page.locator("#cancel-task")).to_be_disabled()
    screenshot(page, "04-task-failed")

    # on a big task the operator narrows the table to the failures, or to what the hosts printed
    visible = page.locator("#targets tbody tr:visible")
    page.select_option("#target-state-filter", "CANCELLED")
    expect(visible).to_have_count(2)
    expect(page.locator("#targets-shown")).to_have_text("2 of 3 shown")
    page.select_option("#target-state-filter", "")
    page.fill("#target-filter", "on purpose")
    expect(visible).to_have_count(1)
    expect(visible.locator("td.state")).to_have_text("FAILED")
    page.fill("#target-filter", "")
    expect(visible).to_have_count(3)

    detail = console_stack.api.wait_task(task_id)
    assert detail["state"] == "FAILED"
    assert sorted(t["state"] for t in detail["targets"].values()) == ["CANCELLED", "CANCELLED", "FAILED"]

    # "Retry failed" makes a task on the FAILED and CANCELLED hosts (all three here) and opens it
    page.click("#retry-task")
    page.wait_for_url(re.compile(r"#/task/(?!" + task_id + ")"))
    retried = page.url.rsplit("/", 1)[1]
    expect(page.locator("#retry-of")).to_have_text(f"retry of {task_id}")
    wait_task_done(page)
    screenshot(page, "04b-task-retried")
    again = console_stack.api.wait_task(retried)
    assert again["retry_of"] == task_id and sorted(again["targets"]) == sorted(detail["targets"])


def test_cancel_a_long_task_from_the_page(console_stack, page):
    names = hosts(console_stack)
    open_console(page, console_stack)
    bj = sorted(a for a, h in names.items() if h.startswith("bj-"))
    tick(page, bj)
    page.click("#run-selected")
    task_id = submit_run(page, "sleep 60", parallel=1)

    expect(page.locator("#targets td.state").filter(has_text="RUNNING")).to_have_count(1)
    cancel = page.locator("#cancel-task")
    cancel.click()
    expect(cancel).to_have_text("Click again to cancel")  # one stray click cancels nothing
    assert console_stack.api.get(f"/task/{task_id}")[1]["state"] == "RUNNING"
    cancel.click()

    wait_task_done(page)
    expect(page.locator("#task-state")).to_have_text("CANCELLED")
    expect(page.locator("#targets td.state").filter(has_text="CANCELLED")).to_have_count(2)
    screenshot(page, "05-task-cancelled")
    detail = console_stack.api.wait_task(task_id, timeout=10)
    assert [t["state"] for t in detail["targets"].values()] == ["CANCELLED", "CANCELLED"]
    # the agents are free again: the sleep was killed, not left to run out its minute
    wait_until(lambda: not any(a["busy"] for a in console_stack.api.agents().values()), 10, what="agents idle")


def test_bad_input_is_shown_next_to_its_field_and_the_form_is_kept(console_stack, page):
    names = hosts(console_stack)
    open_console(page, console_stack, "#/run")
    script = "for i in 1 2; do\n    echo \"$i\"\n\tdone_marker=1\ndone\n"
    page.fill("#run-form-script", script)
    page.fill("#run-form-targets", next(iter(names)))
    page.fill("#run-form-parallel", "0")
    page.click("#run-form button[type=submit]")
    error = page.locator("[data-error-for=parallel]")
    expect(error).to_have_text(re.compile(r"^parallel: must be between 1 and 10000, got 0"))
    expect(page.locator("#run-form-script")).to_have_value(script)
    assert "#/run" in page.url
    screenshot(page, "06-run-bad-input")

    page.fill("#run-form-parallel", "1")
    page.fill("#run-form-timeout", "soon")
    page.click("#run-form button[type=submit]")
    expect(page.locator("[data-error-for=timeout]")).to_have_text(re.compile(r"^timeout: expected a number"))
    expect(error).to_be_empty()

    page.fill("#run-form-timeout", "0")
    page.fill("#run-form-targets", "no-such-agent")
    page.click("#run-form button[type=submit]")
    expect(page.locator("[data-error-for=targets]")).to_contain_text("no-such-agent")

    page.fill("#run-form-targets", "")
    page.fill("#run-form-hostname", "nothing-is-called-this-*")
    page.click("#run-form button[type=submit]")
    expect(page.locator("[data-error-for=selector]")).to_contain_text("matches no agent")

    # the draft survives leaving the view and coming back
    page.click("header nav a[data-view=agents]")
    expect(page.locator("#agents tbody tr[data-agent]")).to_have_count(3)
    page.click("header nav a[data-view=run]")
    expect(page.locator("#run-form-script")).to_have_value(script)
    expect(page.locator("#run-form-hostname")).to_have_value("nothing-is-called-this-*")


def test_an_error_goes_where_its_field_says_not_where_its_text_starts(console_stack, page):
    """The console reads the answer's ``field`` (and falls back to the enclosing field the form has); it never
    reads the field out of the message."""
    open_console(page, console_stack, "#/run")
    page.fill("#run-form-script", "true")
    page.fill("#run-form-targets", next(iter(hosts(console_stack))))
    answers = iter([{"error": "timeout: a message that names another field", "field": "parallel"},
                    {"error": "not valid UTF-8 text", "field": "selector.labels.dc"},
                    {"error": "parallel: no field in the answer", "field": None}])
    page.route("**/task", lambda route: route.fulfill(status=400, content_type="application/json",
                                                      body=json.dumps(next(answers))))
    submit = "#run-form button[type=submit]"
    page.click(submit)
    expect(page.locator("[data-error-for=parallel]")).to_have_text("timeout: a message that names another field")
    expect(page.locator("[data-error-for=timeout]")).to_be_empty()
    page.click(submit)
    expect(page.locator('[data-error-for="selector.labels"]')).to_have_text("not valid UTF-8 text")
    expect(page.locator("[data-error-for=parallel]")).to_be_empty()
    page.click(submit)
    expect(page.locator("#run-form p.error[role=alert]")).to_have_text("parallel: no field in the answer")
    expect(page.locator("[data-error-for=parallel]")).to_be_empty()


def test_editor_keeps_indentation(console_stack, page):
    open_console(page, console_stack, "#/run")
    editor = page.locator("#run-form-script")
    editor.fill("")
    editor.click()
    page.keyboard.type("if true; then")
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    page.keyboard.type("echo in")
    page.keyboard.press("Enter")
    page.keyboard.type("echo still in")
    expect(editor).to_have_value("if true; then\n    echo in\n    echo still in")


def test_filters_and_select_all_of_the_filtered_rows(console_stack, page):
    names = hosts(console_stack)
    open_console(page, console_stack)
    rows = page.locator("#agents tbody tr[data-agent]")
    expect(rows).to_have_count(3)
    page.fill("#label-filter", "dc:bj")
    expect(rows).to_have_count(2)
    page.check("#select-all")
    page.fill("#label-filter", "")
    expect(rows).to_have_count(3)
    ticked = {row.get_attribute("data-agent") for row in rows.all() if row.locator("input.pick").is_checked()}
    assert ticked == {a for a, h in names.items() if h.startswith("bj-")}
    page.fill("#agent-filter", "sh-")
    expect(rows).to_have_count(1)
    expect(page.locator("#agents-shown")).to_have_text(re.compile(r"^1 of 3 shown, as of \d\d:\d\d:\d\d$"))
    expect(rows.first.locator("td.hostname")).to_have_text(re.compile(r"^sh-"))
    page.fill("#agent-filter", "no match at all")
    expect(page.locator("#agents tbody")).to_contain_text("No agent matches the filter.")


def test_output_is_shown_as_text_never_as_html(console_stack, page):
    agent_id = next(iter(hosts(console_stack)))
    task_id = console_stack.api.submit("echo '<img src=x onerror=\"document.title=1\"><b>bold</b>'", [agent_id])
    console_stack.api.wait_task(task_id)
    open_console(page, console_stack, f"#/task/{task_id}")
    wait_task_done(page)
    output = target_row(page, agent_id).locator("pre.output")
    expect(output).to_have_text('<img src=x onerror="document.title=1"><b>bold</b>\n')
    assert output.locator("img, b").count() == 0
    assert page.title() != "1"


def test_token_is_asked_once_per_session_and_a_wrong_one_is_refused(console_stack, page):
    page.goto(console_stack.api.base + "/")
    expect(page.locator("#token-dialog")).to_be_visible()
    page.fill("#token-input", "not-the-token")
    page.click("#token-form button[type=submit]")
    expect(page.locator("#token-error")).to_have_text("That token was refused. Try again.")
    page.fill("#token-input", console_stack.token)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#agents tbody tr[data-agent]")).to_have_count(3)
    page.reload()
    expect(page.locator("#agents tbody tr[data-agent]")).to_have_count(3)
    expect(page.locator("#token-dialog")).to_be_hidden()


def test_a_run_sent_again_after_a_503_keeps_its_idempotency_key_and_makes_one_task(console_stack, page):
    """The master failing over answers a 503 that says the task may have been made; the operator clicks Run again
    and the console sends the same Idempotency-Key, so the master makes the task once."""
    names = hosts(console_stack)
    agent = sorted(names)[0]
    before = len(console_stack.api.get("/tasks?limit=1000")[1])
    keys: list[str] = []

    def first_fails(route):
        keys.append(route.request.headers.get("idempotency-key", ""))
        if len(keys) == 1:  # the request goes through and makes the task, but its answer is lost
            route.fetch()
            route.fulfill(status=503, content_type="application/json",
                          body=json.dumps({"error": "no answer from the master: this task.submit may have been "
                                                    "done; send it again with the same Idempotency-Key",
                                           "field": None}))
        else:
            route.continue_()

    open_console(page, console_stack, "#/run")
    page.route("**/task", first_fails)
    page.fill("#run-form-targets", agent)
    page.fill("#run-form-script", "echo once")
    page.click("#run-form button[type=submit]")
    expect(page.locator("#view .error", has_text="may have been done")).to_be_visible()
    page.click("#run-form button[type=submit]")  # again, the same form
    page.wait_for_url(re.compile(r"#/task/"))
    assert len(keys) == 2 and keys[0] == keys[1] and re.fullmatch(r"[0-9a-f]{32}", keys[0]), keys
    tasks = console_stack.api.get("/tasks?limit=1000")[1]
    assert len(tasks) == before + 1, tasks  # one task for the two requests
    assert page.url.rsplit("/", 1)[1] == tasks[0]["task_id"]


def test_jobs_versions_diff_run_and_history(console_stack, page):
    names = hosts(console_stack)
    sh = [a for a, h in names.items() if h.startswith("sh-")]
    open_console(page, console_stack, "#/jobs")
    page.fill("#new-job-name", "rotate-logs")
    page.fill("#new-job-form-script", "echo rotating\nexit 0\n")
    page.fill("#new-job-form-message", "first cut")
    page.fill("#new-job-form-targets", " ".join(sh))
    page.click("#new-job-form button[type=submit]")
    page.wait_for_url(re.compile(r"#/job/rotate-logs"))
    expect(page.locator("#versions tbody tr")).to_have_count(1)

    # a new version from the form the view filled with the latest one
    expect(page.locator("#job-form-script")).to_have_value("echo rotating\nexit 0\n")
    expect(page.locator("#job-form-targets")).to_have_value(" ".join(sh))
    page.fill("#job-form-script", "echo rotating gently\nexit 0\n")
    page.fill("#job-form-parallel", "2")
    page.fill("#job-form-message", "gentler")
    page.click("#job-form button[type=submit]")
    expect(page.locator("#job-form .note")).to_have_text("Saved rotate-logs version 2.")
    expect(page.locator("#versions tbody tr")).to_have_count(2)

    page.click("#show-diff")
    diff = page.locator("#job-diff")
    expect(diff.locator(".del")).to_contain_text(["-echo rotating"])
    expect(diff.locator(".add")).to_contain_text(["+echo rotating gently"])
    expect(page.locator("#param-diff")).to_contain_text("parallel")
    screenshot(page, "07-job")

    # run version 1 on the job's own targets (nothing ticked in this session)
    page.locator("#versions tr[data-version='1'] button.link-view").click()
    expect(page.locator("#version-script")).to_have_text("echo rotating\nexit 0\n")
    page.click("#run-version")
    page.wait_for_url(re.compile(r"#/task/"))
    task_id = page.url.rsplit("/", 1)[1]
    wait_task_done(page)
    expect(page.locator("#task-state")).to_have_text("SUCCEED")
    expect(page.locator("#view .meta")).to_contain_text("rotate-logs v1")
    expect(target_row(page, sh[0]).locator("pre.output")).to_have_text("rotating\n")

    page.click("header nav a[data-view=jobs]")
    expect(page.locator("#jobs tr[data-job='rotate-logs']")).to_contain_text("gentler")
    screenshot(page, "08-jobs")

    page.click("header nav a[data-view=history]")
    row = page.locator(f"#history tr[data-task='{task_id}']")
    expect(row).to_contain_text("rotate-logs v1")
    expect(row).to_contain_text("SUCCEED")
    screenshot(page, "09-history")
    row.locator("a").first.click()
    page.wait_for_url(re.compile(f"#/task/{task_id}$"))
    expect(page.locator("#task-state")).to_have_text("SUCCEED")

    # run again with the same parameters: the job's run form, of the same version, on the same hosts
    page.click("#rerun")
    page.wait_for_url(re.compile(f"#/job/rotate-logs\\?v=1&from={task_id}$"))
    expect(page.locator("#rerun-of")).to_contain_text(task_id)
    expect(page.locator("#version-script")).to_have_text("echo rotating\nexit 0\n")
    expect(page.locator("#selection-badge")).to_have_text("1 agent ticked")
    page.click("#run-version")
    page.wait_for_url(re.compile(r"#/task/"))
    again = page.url.rsplit("/", 1)[1]
    assert again != task_id
    wait_task_done(page)
    expect(page.locator("#task-state")).to_have_text("SUCCEED")
    rerun = console_stack.api.wait_task(again)
    assert (rerun["job"], rerun["job_version"], sorted(rerun["targets"])) == ("rotate-logs", 1, sh)
    # "again" of a task that is gone says so, and the job's page is still there
    page.goto(f"{console_stack.api.base}/#/job/rotate-logs?v=1&from=no-such-task")
    expect(page.locator("#view > .error")).to_have_text("task no-such-task not found")
    expect(page.locator("#version-script")).to_have_text("echo rotating\nexit 0\n")
    expect(page.locator("#rerun-of")).to_have_count(0)


def test_agents_view_refreshes_by_itself(stack, page):
    stack.master()
    stack.web()
    stack.agents(1, extra=("--hostname", "first-{i}"))
    open_console(page, stack)
    rows = page.locator("#agents tbody tr[data-agent]")
    expect(rows).to_have_count(1)
    stack.agents(1, extra=("--hostname", "second-{i}"))
    expect(rows).to_have_count(2)
    expect(page.locator("#agents td.hostname").filter(has_text="second-")).to_have_count(1)


def test_pending_agent_keys_are_accepted_from_the_agents_view(stack, page):
    stack.master(auto_accept=False)
    stack.web()
    stack.agents(1, wait=False, extra=("--hostname", "newcomer-{i}"))
    agent_id = wait_until(lambda: [k["agent_id"] for k in stack.api.get("/keys")[1] if k["state"] == "pending"],
                          20, what="a pending key")[0]
    open_console(page, stack)
    pending = page.locator(f"#pending-keys tr[data-key='{agent_id}']")
    expect(pending).to_contain_text("newcomer-0")
    expect(page.locator("#pending-keys h3")).to_have_text("1 agent key waiting for a decision")
    expect(page.locator("#agents tbody tr[data-agent]")).to_have_count(0)
    screenshot(page, "10-pending-keys")
    pending.locator("button.accept").click()
    expect(page.locator("#pending-keys")).to_be_hidden()
    row = page.locator(f"#agents tr[data-agent='{agent_id}']")
    expect(row).to_contain_text("online")
    assert [k["state"] for k in stack.api.get("/keys")[1]] == ["accepted"]


def flood_pending_keys(stack: Stack, count: int, hostname: str) -> None:
    """``count`` new keys registered (pending) in a couple of seconds, from another process."""
    proc = subprocess.run([PYTHON, "-m", "tests.integration.flood", stack.master_endpoint, stack.keys.public_path,
                           str(count), hostname], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout)["pending"] == count, proc.stderr[-3000:]


def pending_states(stack: Stack) -> dict[str, str]:
    return {k["agent_id"]: k["state"] for k in stack.api.get("/keys")[1]}


def test_a_thousand_pending_keys_stay_in_a_bounded_panel_and_are_decided_one_or_many(stack, page):
    stack.master(auto_accept=False)
    stack.web()
    long_name = "flood-{i:03d}-" + "x" * 190  # 200-character hostnames, as in issue 12
    flood_pending_keys(stack, 990, long_name)
    flood_pending_keys(stack, 10, "rack7-{i}")
    states = pending_states(stack)
    assert len(states) == 1000 and set(states.values()) == {"pending"}

    open_console(page, stack)
    heading = page.locator("#pending-heading")
    expect(heading).to_have_text("1000 agent keys waiting for a decision")
    rows = page.locator("#pending-table tbody tr[data-key]")
    expect(rows).to_have_count(1000)
    viewport = page.viewport_size
    panel = page.locator("#pending-keys").bounding_box()
    assert panel["height"] < viewport["height"] * 0.75, panel  # was 24,000 px: the list scrolls inside it
    scroll_box = page.locator("#pending-keys .pending-scroll")
    assert scroll_box.evaluate("el => el.scrollHeight > 10 * el.clientHeight")
    assert page.evaluate("document.documentElement.scrollHeight") < 3 * viewport["height"]
    first = rows.first
    host_cell = first.locator("td.hostname")
    full = host_cell.get_attribute("title")
    assert len(full) == 200 and host_cell.text_content() == full  # the whole text, cut by CSS only
    assert host_cell.evaluate("el => el.scrollWidth > el.clientWidth")  # shown with an ellipsis
    for button in (first.locator("button.accept"), first.locator("button.reject"),
                   page.locator("#pending-accept-selected")):
        box = button.bounding_box()
        assert box and box["x"] + box["width"] <= viewport["width"] and box["y"] + box["height"] <= viewport["height"]
    screenshot(page, "11-pending-flood")

    # Accept of one row
    one = first.get_attribute("data-key")
    first.locator("button.accept").click()
    expect(heading).to_have_text("999 agent keys waiting for a decision")
    assert pending_states(stack)[one] == "accepted"

    # the filter, select-all and Accept selected: one call for the rows shown, none of the others
    page.fill("#pending-filter", "rack7-")
    expect(rows).to_have_count(10)
    expect(page.locator("#pending-shown")).to_have_text("10 of 999 shown, 0 ticked")
    page.locator("#pending-select-all").check()
    page.locator("#pending-table tbody tr[data-key]", has_text="rack7-3").locator("input.pick").uncheck()
    accept_selected = page.locator("#pending-accept-selected")
    expect(accept_selected).to_have_text("Accept 9 selected")
    screenshot(page, "12-pending-filtered")
    calls: list[str] = []
    page.on("request", lambda r: calls.append(f"{r.method} {r.url.split('/', 3)[3]}") if "/keys/" in r.url else None)
    accept_selected.click()
    expect(page.locator("#pending-note")).to_have_text("9 keys accepted.")
    expect(heading).to_have_text("990 agent keys waiting for a decision")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("rack7-3")
    assert calls == ["POST keys/accept"]
    states = pending_states(stack)
    by_host = {k["agent_id"]: k["hostname"] for k in stack.api.get("/keys")[1]}
    assert sorted(by_host[a] for a, s in states.items() if s == "accepted") == sorted(
        [by_host[one], *(f"rack7-{i}" for i in range(10) if i != 3)])

    # Reject selected wants a second click; then the ticked rows are rejected
    page.fill("#pending-filter", "rack7-3")
    page.locator("#pending-select-all").check()
    reject_selected = page.locator("#pending-reject-selected")
    reject_selected.click()
    expect(reject_selected).to_have_text("Click again to reject 1")
    assert pending_states(stack)[rows.first.get_attribute("data-key")] == "pending"
    reject_selected.click()
    expect(page.locator("#pending-note")).to_have_text("1 key rejected.")
    expect(heading).to_have_text("989 agent keys waiting for a decision")
    assert list(pending_states(stack).values()).count("rejected") == 1


def test_an_unknown_task_says_so_and_stops_asking(console_stack, page):
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/task/no-such-task" in r.url else None)
    open_console(page, console_stack, "#/task/no-such-task")
    expect(page.locator("#view .error")).to_have_text("task no-such-task not found")
    asked = len(requests)
    page.wait_for_timeout(2000)  # several refresh intervals
    assert len(requests) == asked


def test_a_long_output_shows_its_tail_and_loads_whole_on_request(console_stack, page, tmp_path):
    first, second = sorted(hosts(console_stack))[:2]
    flag = tmp_path / "first-done"
    # parallel 1: the first target prints and ends at once; the second then runs 4 s more, so the page is
    # still refreshing the task while the first output is loaded whole
    task_id = console_stack.api.submit(f"seq 1 20000; if [ -e {flag} ]; then sleep 4; fi; touch {flag}",
                                       [first, second], parallel=1)
    whole = "".join(f"{i}\n" for i in range(1, 20001))
    open_console(page, console_stack, f"#/task/{task_id}")
    row = target_row(page, first)
    expect(row.locator("td.state")).to_have_text("SUCCEED")
    expect(row.locator("summary")).to_have_text(re.compile(r"^last 8\.0 KB of 106\.3 KB$"))
    row.locator("summary").click()
    output = row.locator("pre.output")
    expect(output).to_have_text(whole[-8192:])
    load = row.locator("button.whole-output")
    expect(load).to_have_text("Load all 106.3 KB")
    load.click()
    expect(output).to_have_text(whole)
    expect(load).to_be_hidden()
    expect(row.locator("summary")).to_have_text("20000 lines")
    expect(page.locator("#view")).to_have_attribute("data-done", "no")
    page.wait_for_timeout(1500)  # refreshes of the running task leave the whole output in place
    expect(output).to_have_text(whole)
    wait_task_done(page)
    expect(output).to_have_text(whole)


def test_a_running_target_shows_its_output_live_from_the_event_stream(console_stack, page, tmp_path):
    wait_until(lambda: not any(a["busy"] for a in console_stack.api.agents().values()), 30, what="agents idle")
    agent_id = sorted(hosts(console_stack))[0]
    flag = tmp_path / "go"
    # prints only once the page follows the stream: the first line can reach it through the stream alone
    task_id = console_stack.api.submit(f"while [ ! -e {flag} ]; do sleep 0.1; done; echo first; sleep 8; echo second",
                                       [agent_id])
    open_console(page, console_stack, f"#/task/{task_id}")
    expect(page.locator("#view")).to_have_attribute("data-live", "stream")
    row = target_row(page, agent_id)
    expect(row.locator("td.state")).to_have_text("RUNNING")
    flag.touch()
    expect(row.locator("pre.output")).to_have_text("first\n")
    expect(row.locator("pre.output")).to_be_visible()  # a running target's output opens by itself
    expect(row.locator("td.num").nth(1)).to_have_text(re.compile(r"^running \d+ s$"))
    assert console_stack.api.get(f"/task/{task_id}")[1]["state"] == "RUNNING"  # shown before the task ends
    expect(row.locator("td.state")).to_have_text("RUNNING")
    screenshot(page, "13-task-live-output")
    wait_task_done(page)
    expect(row.locator("td.state")).to_have_text("SUCCEED")
    expect(row.locator("pre.output")).to_have_text("first\nsecond\n")


def test_a_group_from_the_draft_can_be_unset(console_stack, page):
    names = hosts(console_stack)
    sh = [a for a, h in names.items() if h.startswith("sh-")]
    assert console_stack.api.request("PUT", "/group/beijing", {"selector": {"labels": {"dc": "bj"}}})[0] == 200
    open_console(page, console_stack, "#/run")
    page.fill("#run-form-targets", "")
    page.select_option("#run-form-group", "beijing")
    # the draft keeps the group; coming back fills it in before the list of groups has loaded
    page.click("header nav a[data-view=agents]")
    expect(page.locator("#agents tbody tr[data-agent]")).to_have_count(3)
    page.click("header nav a[data-view=run]")
    expect(page.locator("#run-form-group")).to_have_value("beijing")
    page.select_option("#run-form-group", "")
    page.fill("#run-form-targets", " ".join(sh))
    task_id = submit_run(page, "true")
    assert sorted(console_stack.api.wait_task(task_id)["targets"]) == sorted(sh)


# ---- issue 15: parameters, environment, schedules -------------------------------------------------------------


def declare_param(page, form: str, row: int, name: str, **fields) -> None:
    """Add a row to a job form's parameter table and fill it (text fields by name, booleans as ticks)."""
    page.click(f"#{form}-add-param")
    cells = page.locator(f"#{form}-params tbody tr").nth(row)
    cells.locator("input[name=param-name]").fill(name)
    for key, value in fields.items():
        box = cells.locator(f"input[name=param-{key}]")
        if isinstance(value, bool):
            box.set_checked(value)
        else:
            box.fill(value)


def test_a_declared_parameter_is_given_at_run_and_shown_in_the_task(console_stack, page):
    sh = [a for a, h in hosts(console_stack).items() if h.startswith("sh-")]
    open_console(page, console_stack, "#/jobs")
    page.fill("#new-job-name", "greet")
    page.fill("#new-job-form-script", 'echo "hello $WHO in $TIER"\n')
    page.fill("#new-job-form-targets", " ".join(sh))
    declare_param(page, "new-job-form", 0, "WHO", default="world", pattern="[a-z]+", description="who is greeted")
    declare_param(page, "new-job-form", 1, "TIER", choices="blue, green", required=True)
    page.click("#new-job-form button[type=submit]")
    page.wait_for_url(re.compile(r"#/job/greet$"))
    saved = console_stack.api.get("/job/greet")[1]["params"]["params"]
    assert [(p["name"], p.get("default"), p.get("choices"), p.get("required")) for p in saved] == [
        ("WHO", "world", None, False), ("TIER", None, ["blue", "green"], True)]
    # the editor starts from the latest version's declarations
    expect(page.locator("#job-form-params tbody tr")).to_have_count(2)
    expect(page.locator("#job-form-params tbody tr").nth(1).locator("input[name=param-choices]")).to_have_value(
        "blue, green")

    # one input per parameter: the default filled in, a select for the choices, the required one marked
    who = page.locator("#run-param-WHO")
    expect(who).to_have_value("world")
    tier = page.locator("#run-param-TIER")
    assert tier.evaluate("el => el.tagName") == "SELECT"
    expect(tier.locator("option")).to_have_text(["(not given)", "blue", "green"])
    expect(page.locator("[data-field='params.TIER'] .required")).to_be_visible()
    screenshot(page, "14-job-parameters")

    # the master's errors go beside the input they are about
    page.click("#run-version")
    expect(page.locator("#run-version-form [data-error-for='params.TIER']")).to_contain_text("TIER")
    tier.select_option("green")
    who.fill("Not Lower")
    page.click("#run-version")
    expect(page.locator("#run-version-form [data-error-for='params.WHO']")).to_contain_text("WHO")
    expect(page.locator("#run-version-form [data-error-for='params.TIER']")).to_be_empty()
    who.fill("console")
    page.click("#run-version")
    page.wait_for_url(re.compile(r"#/task/"))
    task_id = page.url.rsplit("/", 1)[1]
    wait_task_done(page)
    expect(target_row(page, sh[0]).locator("pre.output")).to_have_text("hello console in green\n")
    expect(page.locator("#task-params tr[data-name=WHO] td.value")).to_have_text("console")
    expect(page.locator("#task-params tr[data-name=TIER] td.value")).to_have_text("green")
    expect(page.locator("#task-env")).to_have_count(0)  # the same variables: listed once
    screenshot(page, "15-task-parameters")
    assert console_stack.api.wait_task(task_id)["params"] == {"WHO": "console", "TIER": "green"}


def test_a_secret_parameter_is_shown_as_stars_and_asked_for_again(console_stack, page):
    sh = [a for a, h in hosts(console_stack).items() if h.startswith("sh-")]
    open_console(page, console_stack, "#/jobs")
    page.fill("#new-job-name", "use-token")
    # the script holds no more of the secret than a prefix: the page must not show it whole anywhere
    page.fill("#new-job-form-script", 'case "$TOKEN" in s3cret-v*) echo token ok;; *) echo wrong; exit 1;; esac\n')
    page.fill("#new-job-form-targets", " ".join(sh))
    declare_param(page, "new-job-form", 0, "SCRATCH")
    declare_param(page, "new-job-form", 1, "TOKEN", secret=True, required=True, default="no defaults for secrets")
    decls = page.locator("#new-job-form-params tbody tr")
    decls.nth(0).locator("button.remove-param").click()  # TOKEN is now the first of the list the master gets
    expect(decls).to_have_count(1)
    page.click("#new-job-form button[type=submit]")
    # the master's error about params[0].default is shown in that cell
    expect(decls.nth(0).locator("[data-error-for='params[0].default']")).to_contain_text("default")
    assert "#/jobs" in page.url
    decls.nth(0).locator("input[name=param-default]").fill("")
    page.click("#new-job-form button[type=submit]")
    page.wait_for_url(re.compile(r"#/job/use-token$"))
    token = page.locator("#run-param-TOKEN")
    expect(token).to_have_attribute("type", "password")
    token.fill("s3cret-value")
    page.click("#run-version")
    page.wait_for_url(re.compile(r"#/task/"))
    task_id = page.url.rsplit("/", 1)[1]
    wait_task_done(page)
    expect(page.locator("#task-state")).to_have_text("SUCCEED")
    expect(target_row(page, sh[0]).locator("pre.output")).to_have_text("token ok\n")
    expect(page.locator("#task-params tr[data-name=TOKEN] td.value")).to_have_text("***")
    assert "s3cret-value" not in page.content()
    screenshot(page, "16-task-secret")

    # run again: the secret's input is empty (the API answers ***, which is never sent back)
    page.click("#rerun")
    page.wait_for_url(re.compile(f"#/job/use-token\\?v=1&from={task_id}$"))
    expect(page.locator("#rerun-of")).to_contain_text(task_id)
    token = page.locator("#run-param-TOKEN")
    expect(token).to_have_value("")
    expect(page.locator("[data-field='params.TOKEN'] .hint")).to_contain_text("again")
    token.fill("not-the-secret")
    page.click("#run-version")
    page.wait_for_url(re.compile(r"#/task/(?!" + task_id + ")"))
    failed_id = page.url.rsplit("/", 1)[1]
    wait_task_done(page)
    expect(page.locator("#task-state")).to_have_text("FAILED")

    # Retry failed asks for the secret too: without it, the master's error is shown beside its input
    page.click("#retry-task")
    expect(page.locator("#retry-secrets [data-error-for='params.TOKEN']")).to_contain_text("again")
    assert "#/task/" + failed_id in page.url
    page.fill("#retry-param-TOKEN", "s3cret-value")
    page.click("#retry-task")
    page.wait_for_url(re.compile(r"#/task/(?!" + failed_id + ")"))
    expect(page.locator("#retry-of")).to_have_text(f"retry of {failed_id}")
    wait_task_done(page)
    expect(page.locator("#task-state")).to_have_text("SUCCEED")
    expect(page.locator("#task-params tr[data-name=TOKEN] td.value")).to_have_text("***")


def test_a_plain_task_gets_environment_variables(console_stack, page):
    agent_id = sorted(hosts(console_stack))[0]
    open_console(page, console_stack, "#/run")
    page.fill("#run-form-targets", agent_id)
    page.fill("#run-form-env", "bad name=1")
    page.fill("#run-form-script", 'echo "$GREETING/$COUNT"')
    page.click("#run-form button[type=submit]")
    expect(page.locator("#run-form [data-error-for=env]")).to_contain_text("bad name")
    assert "#/run" in page.url
    page.fill("#run-form-env", "GREETING=hi there\nCOUNT=3\n")
    task_id = submit_run(page, 'echo "$GREETING/$COUNT"')
    wait_task_done(page)
    expect(target_row(page, agent_id).locator("pre.output")).to_have_text("hi there/3\n")
    expect(page.locator("#task-env tr[data-name=GREETING] td.value")).to_have_text("hi there")
    assert console_stack.api.wait_task(task_id)["env"] == {"GREETING": "hi there", "COUNT": "3"}
    # run again fills the environment in
    page.click("#rerun")
    expect(page.locator("#run-form-env")).to_have_value("GREETING=hi there\nCOUNT=3")


def test_a_schedule_is_created_from_a_job_listed_disabled_and_deleted(stack, page):
    stack.master()
    stack.web()
    stack.agents(1)
    agent_id = stack.online_agents()[0]
    status, body = stack.api.post("/job/nightly", {"script": 'echo "$MODE"', "targets": [agent_id],
                                                   "params": [{"name": "MODE", "choices": ["full", "quick"],
                                                               "default": "quick"}]})
    assert status == 201, body
    open_console(page, stack, "#/job/nightly")
    expect(page.locator("#job-schedules")).to_contain_text("No schedule runs this job.")
    page.click("#new-schedule")
    page.wait_for_url(re.compile(r"#/schedules\?job=nightly$"))
    expect(page.locator("header nav a.active")).to_have_text("Schedules")
    expect(page.locator("#schedule-form-job")).to_have_value("nightly")
    mode = page.locator("#schedule-form-param-MODE")
    expect(mode).to_have_value("quick")
    mode.select_option("full")
    page.click("#schedule-form button[type=submit]")
    expect(page.locator("#schedule-form [data-error-for=cron]")).not_to_be_empty()
    page.fill("#schedule-form-cron", "* * * * *")
    page.fill("#schedule-form-timezone", "Europe/Berlin")
    page.click("#schedule-form button[type=submit]")
    expect(page.locator("#schedule-form .note")).to_have_text(re.compile(r"^Created schedule "))
    expect(page.locator("#schedule-form [data-error-for=cron]")).to_be_empty()
    row = page.locator("#schedules tbody tr[data-schedule]")
    expect(row).to_have_count(1)
    schedule_id = row.get_attribute("data-schedule")
    expect(row.locator("td.cron")).to_have_text("* * * * *")
    expect(row).to_contain_text("nightly")
    # the next run, to the minute, in the schedule's own timezone
    expect(row.locator("td.next")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:00 \+0[12]:00 Europe/Berlin$"))
    expect(row.locator("td.enabled")).to_have_text("enabled")
    screenshot(page, "17-schedules")
    listed = stack.api.get("/schedules")[1]
    assert [(s["schedule_id"], s["job"], s["cron"], s["timezone"], s["params"], s["enabled"]) for s in listed] == [
        (schedule_id, "nightly", "* * * * *", "Europe/Berlin", {"MODE": "full"}, True)]

    row.locator("button.toggle-schedule").click()
    expect(row.locator("td.enabled")).to_have_text("disabled")
    expect(row.locator("td.next")).to_have_text("disabled")
    expect(row.locator("button.toggle-schedule")).to_have_text("Enable")
    assert stack.api.get(f"/schedule/{schedule_id}")[1]["enabled"] is False
    screenshot(page, "18-schedule-disabled")

    # its page: enabled again, the next five runs; the job's page lists it
    row.locator("a").first.click()
    page.wait_for_url(re.compile(f"#/schedule/{schedule_id}$"))
    expect(page.locator("#schedule-enabled")).to_have_text("disabled")
    page.click("button.toggle-schedule")
    expect(page.locator("#schedule-enabled")).to_have_text("enabled")
    expect(page.locator("#next-runs li")).to_have_count(5)
    expect(page.locator("#schedule-params tr[data-name=MODE] td.value")).to_have_text("full")
    screenshot(page, "19-schedule")
    page.goto(f"{stack.api.base}/#/job/nightly")
    expect(page.locator(f"#job-schedules tr[data-schedule='{schedule_id}']")).to_contain_text("* * * * *")

    # delete wants a second click
    page.goto(f"{stack.api.base}/#/schedule/{schedule_id}")
    delete = page.locator("button.delete-schedule")
    delete.click()
    expect(delete).to_have_text("Click again to delete")
    assert stack.api.get(f"/schedule/{schedule_id}")[0] == 200
    delete.click()
    page.wait_for_url(re.compile(r"#/schedules$"))
    expect(page.locator("#schedules tbody")).to_contain_text("No schedule yet.")
    assert stack.api.get("/schedules")[1] == []


def test_a_schedule_s_runs_and_skips_link_to_their_tasks(stack, page):
    # the schedule clock runs 30 times faster: a * * * * * schedule fires every 2 s, and a run of 3 s makes
    # the tick after it a skip (overlap)
    stack.master("--schedule-clock", f"{time.time():.3f}:30")
    stack.web()
    stack.agents(1)
    agent_id = stack.online_agents()[0]
    assert stack.api.post("/job/slow", {"script": "sleep 3; echo slept", "targets": [agent_id]})[0] == 201
    status, made = stack.api.post("/schedules", {"job": "slow", "cron": "* * * * *", "timezone": "Asia/Kolkata"})
    assert status == 201, made
    schedule_id = made["schedule_id"]
    open_console(page, stack, f"#/schedule/{schedule_id}")
    runs = page.locator("#schedule-runs tbody tr[data-task]")
    # the page refreshes a schedule every 5 s
    expect(runs.first).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.locator("#schedule-skips tbody tr[data-reason=overlap]").first).to_be_visible(timeout=UI_TIMEOUT_MS)
    page.click("button.toggle-schedule")
    expect(page.locator("#schedule-enabled")).to_have_text("disabled")
    screenshot(page, "20-schedule-runs")
    # a tick is shown in the schedule's timezone (+05:30, no daylight saving time): a whole minute there
    expect(page.locator("#schedule-runs th").first).to_have_text("Tick (Asia/Kolkata)")
    tick = stack.api.get(f"/schedule/{schedule_id}")[1]["runs"][-1]["tick"]
    kolkata = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(tick + 5.5 * 3600))
    expect(runs.last.locator("td").first).to_have_text(kolkata)
    task_id = runs.last.get_attribute("data-task")  # the oldest run shown
    assert task_id in {t["task_id"] for t in stack.api.get(f"/tasks?schedule={schedule_id}")[1]}

    page.click("header nav a[data-view=schedules]")
    last = page.locator(f"#schedules tr[data-schedule='{schedule_id}'] td.last")
    expect(last.locator("a")).to_have_count(1, timeout=UI_TIMEOUT_MS)
    expect(last.locator(".badge")).to_have_text(re.compile(r"^(RUNNING|SUCCEED)$"))

    page.goto(f"{stack.api.base}/#/task/{task_id}")
    wait_task_done(page)
    expect(page.locator("#task-schedule a")).to_have_text(schedule_id)
    page.click("#task-schedule a")
    page.wait_for_url(re.compile(f"#/schedule/{schedule_id}$"))
    expect(page.locator("header nav a.active")).to_have_text("Schedules")


def test_a_task_s_notifications_are_shown_until_delivered(stack, page):
    receiver = Receiver(statuses=(500, 200))
    try:
        # the first attempt gets a 500; the retry, 4 s later, a 200: the page shows pending, then delivered
        stack.master("--webhook-retry-base", "4")
        stack.web()
        stack.agents(1)
        agent_id = stack.online_agents()[0]
        task_id = stack.api.submit("true", [agent_id], notify=[{"url": receiver.url}])
        open_console(page, stack, f"#/task/{task_id}")
        wait_task_done(page)
        row = page.locator("#task-notifications tr[data-notification]")
        expect(row).to_have_count(1)
        expect(row.locator("td").first).to_have_text(receiver.url)
        expect(row).to_contain_text("pending")
        screenshot(page, "21-task-notification-pending")
        # the ended task is fetched again while a notification is pending
        expect(row).to_contain_text("delivered", timeout=UI_TIMEOUT_MS)
        cells = row.locator("td")
        expect(cells.nth(3)).to_have_text("2")  # attempts
        expect(cells.nth(4)).to_have_text("200")  # the last status
        assert len(receiver.calls) == 2
    finally:
        receiver.close()


def expect_hidden(locator) -> None:
    """On the page (so a view not drawn yet does not pass) and not shown: the role may not use it."""
    expect(locator).to_be_attached()
    expect(locator).to_be_hidden()


def make_token(stack: Stack, user: str, role: str) -> str:
    """A token of ``user`` with ``role``, made through the API with the stack's admin file token."""
    status, made = stack.api.post("/tokens", {"user": user, "role": role})
    assert status == 201, made
    return made["token"]


def test_a_viewer_sees_who_they_are_and_no_button_that_changes_anything(console_stack, page):
    agent_id = sorted(hosts(console_stack))[0]
    failed = console_stack.api.submit("exit 3", [agent_id])  # ended FAILED: Retry would be offered
    console_stack.api.wait_task(failed)
    assert console_stack.api.post("/job/viewed", {"script": "true", "targets": [agent_id]})[0] == 201
    status, schedule = console_stack.api.post("/schedules", {"job": "viewed", "cron": "@yearly", "enabled": False})
    assert status == 201, schedule
    open_console(page, console_stack, token=make_token(console_stack, "vera", "viewer"))
    expect(page.locator("#whoami")).to_have_text("vera \u00b7 viewer")
    expect(page.locator("#forget-token")).to_be_visible()
    expect(page.locator("#agents tbody tr[data-agent]")).to_have_count(3)  # reading is a viewer's
    expect_hidden(page.locator("#run-selected"))
    expect_hidden(page.locator("#nav-audit"))
    screenshot(page, "20-viewer-agents")

    page.goto(f"{console_stack.api.base}/#/task/{failed}")
    wait_task_done(page)
    expect(page.locator("#task-state")).to_have_text("FAILED")
    for control in ("#cancel-task", "#retry-task", "#rerun"):
        expect_hidden(page.locator(control))
    expect(page.locator("#view .role-note")).to_have_text(
        "Cancelling, retrying or running again needs the operator role.")

    page.goto(f"{console_stack.api.base}/#/run")
    expect(page.locator("#run-form-script")).to_be_visible()
    expect_hidden(page.locator("#run-form button[type=submit]"))
    expect(page.locator("#run-form .role-note")).to_have_text("Running a script needs the operator role.")
    page.goto(f"{console_stack.api.base}/#/schedules")
    row = page.locator(f"#schedules tr[data-schedule='{schedule['schedule_id']}']")
    for control in ("button.toggle-schedule", "button.delete-schedule"):
        expect_hidden(row.locator(control))
    expect_hidden(page.locator("#schedule-form"))
    expect_hidden(page.locator("#new-schedule-heading"))
    page.goto(f"{console_stack.api.base}/#/job/viewed")
    expect(page.locator("#version-script")).to_have_text("true")
    for control in ("#run-version", "#job-form", "#new-schedule"):
        expect_hidden(page.locator(control))
    expect(page.locator("#run-version-form .role-note")).to_have_text("Running a job needs the operator role.")
    screenshot(page, "21-viewer-job")
    page.goto(f"{console_stack.api.base}/#/jobs")
    expect_hidden(page.locator("#new-job"))

    # a call refused anyway still shows the master's 403, which says what role is needed
    page.goto(f"{console_stack.api.base}/#/audit")
    expect(page.locator("#view .error")).to_have_text("role: read needs the admin role; vera's token is viewer")


def test_an_operator_runs_and_disables_but_decides_no_key_and_the_admin_audits_it(stack, browser, page):
    stack.master(auto_accept=False)
    stack.web()
    stack.agents(1, wait=False, extra=("--hostname", "worker-{i}"))
    agent_id = wait_until(lambda: [k["agent_id"] for k in stack.api.get("/keys")[1] if k["state"] == "pending"],
                          20, what="a pending key")[0]
    assert stack.api.post(f"/keys/{agent_id}/accept")[0] == 200
    wait_until(lambda: agent_id in stack.online_agents(), 20, what="the accepted agent online")
    flood_pending_keys(stack, 1, "newcomer-{i}")
    assert stack.api.post("/job/deploy", {"script": "echo deploy", "targets": [agent_id]})[0] == 201
    status, schedule = stack.api.post("/schedules", {"job": "deploy", "cron": "@daily"})
    assert status == 201, schedule

    open_console(page, stack, token=make_token(stack, "otto", "operator"))
    expect(page.locator("#whoami")).to_have_text("otto \u00b7 operator")
    pending = page.locator("#pending-keys tr[data-key]")
    expect(pending).to_have_count(1)
    expect(pending).to_contain_text("newcomer-0")
    for control in ("button.accept", "button.reject", "#pending-accept-selected", "#pending-reject-selected"):
        expect_hidden(page.locator(f"#pending-keys {control}").first)
    expect(page.locator("#pending-keys .role-note")).to_have_text(
        "Accepting or rejecting a key needs the admin role.")
    expect_hidden(page.locator("#nav-audit"))
    screenshot(page, "22-operator-agents")

    tick(page, [agent_id])
    page.click("#run-selected")
    task_id = submit_run(page, "echo from-otto")
    wait_task_done(page)
    expect(page.locator("#task-state")).to_have_text("SUCCEED")
    expect(page.locator("#rerun")).to_be_visible()

    page.goto(f"{stack.api.base}/#/schedules")
    row = page.locator(f"#schedules tr[data-schedule='{schedule['schedule_id']}']")
    expect_hidden(row.locator("button.delete-schedule"))
    expect_hidden(page.locator("#schedule-form"))
    row.locator("button.toggle-schedule").click()  # enabling and disabling is an operator's
    expect(row.locator("td.enabled")).to_have_text("disabled")
    page.goto(f"{stack.api.base}/#/job/deploy")
    expect(page.locator("#run-version")).to_be_visible()
    expect_hidden(page.locator("#job-form"))
    expect_hidden(page.locator("#new-schedule"))

    # the admin's Audit view lists what otto did, newest first, and filters it
    context = browser.new_context(viewport={"width": 1300, "height": 850})
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        admin = context.new_page()
        open_console(admin, stack)
        expect(admin.locator("#whoami")).to_have_text("token-file \u00b7 admin")
        admin.click("#nav-audit")
        submitted = admin.locator("#audit tr[data-action='task.submit'][data-user='otto']")
        expect(submitted).to_have_count(1)
        expect(submitted.locator("td.object a")).to_have_text(task_id)
        expect(submitted).to_contain_text("operator")
        expect(submitted).to_contain_text("201")
        expect(submitted).to_contain_text("done")
        disabled = admin.locator("#audit tr[data-action='schedule.disable']")
        expect(disabled.locator("td.object a")).to_have_attribute("href", f"#/schedule/{schedule['schedule_id']}")
        expect(admin.locator("#audit tr[data-user='token-file']").first).to_be_visible()  # the keys, job, ...
        screenshot(admin, "23-audit")

        admin.fill("#audit-user", "otto")
        admin.press("#audit-user", "Tab")
        expect(admin.locator("#audit tr[data-user='token-file']")).to_have_count(0)
        otto = [e["action"] for e in stack.api.get("/audit?user=otto")[1]]
        assert otto == ["schedule.disable", "task.submit"], otto
        expect(admin.locator("#audit tbody td.action")).to_have_text(otto)  # newest first, as the API
        admin.select_option("#audit-action", "task.submit")
        expect(admin.locator("#audit tbody tr")).to_have_count(1)
        admin.fill("#audit-since", "2099-01-01T00:00")
        expect(admin.locator("#audit tbody")).to_have_text("No record matches.")

        # more than a page: "Load more" adds the records older than the last one shown, none twice
        for _ in range(105):
            assert stack.api.post("/task", {})[0] == 400  # refused by the master: recorded all the same
        admin.reload()  # the filters empty again (the token stays in this session)
        admin.click("#nav-audit")
        expect(admin.locator("#audit tbody tr")).to_have_count(100)
        admin.click("#audit-more")
        # by a cursor, not a longer list each time (which stopped at 1,000)
        expect(admin.locator("#view")).to_have_attribute("data-loaded", re.compile(r"(^|&)before=\d+"))
        total = len(stack.api.get("/audit?limit=1000")[1])
        expect(admin.locator("#audit tbody tr")).to_have_count(min(total, 200))
        seqs = [int(s) for s in admin.locator("#audit tbody tr").evaluate_all("rows => rows.map(r => r.dataset.seq)")]
        assert seqs == sorted(set(seqs), reverse=True), seqs  # newest first, each once
    finally:
        context.close()
