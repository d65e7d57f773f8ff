"""The console as people use it, in Chromium, on a live `hotswap up` (see conftest.py).

Each test signs in the way a person does (the login link `up` prints, or a pasted token), then
watches the page change by itself: nothing here reloads a page to see a change, and every wait is
for something the page shows, with a deadline.
"""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Browser, Page, expect

from tests.git.gitutil import git
from tests.ui.browser.conftest import WAIT_MS, Console, sign_in

ROLLOUT_DONE = re.compile(r"Promoted|RolledBack|Failed")


def open_rollout(page: Page, module: str, version: str) -> None:
    """From the rollouts list, as a person would: wait for the row, follow its link."""
    page.goto(page.url.split("#")[0] + "#/rollouts")
    row = page.get_by_role("row").filter(has_text=module).filter(has_text=version)
    row.get_by_role("link").first.click()
    page.wait_for_url(re.compile(r"#/rollouts/[^/?]+$"))
    expect(page.get_by_role("heading", name=re.compile("^Rollout "))).to_be_visible()
    expect(page.get_by_test_id("rollout-phase")).to_be_visible()


def remember_steps(page: Page) -> None:
    """Record in the page every text the current-step marker shows, and mark the document: a reload
    would lose both."""
    page.evaluate(
        """() => {
            window.__stillHere = true;
            window.__steps = [];
            const note = () => {
                const step = document.querySelector('[data-testid="current-step"]');
                const text = step ? step.textContent.trim() : null;
                if (text && window.__steps[window.__steps.length - 1] !== text) window.__steps.push(text);
            };
            note();
            new MutationObserver(note).observe(document.body, {subtree: true, childList: true, characterData: true});
        }"""
    )


def test_sign_in_with_the_login_link_then_with_a_pasted_token(page: Page, console: Console, screenshots: Path) -> None:
    page.goto(console.login_link)
    expect(page.get_by_role("navigation", name="Screens")).to_be_visible()
    expect(page.locator("#user")).to_contain_text("admin")
    cookie = next(c for c in page.context.cookies() if c["name"] == "hotswap_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "hotswap_session" not in page.evaluate("document.cookie")  # out of scripts' reach
    expect(page.get_by_test_id("needs-attention")).to_be_visible()
    author = git(console.repo.root, "log", "-1", "--format=%an", "main").strip()
    expect(page.locator("main")).to_contain_text(author)  # the followed commit, by whom
    page.screenshot(path=str(screenshots / "console-fleet.png"), full_page=True)  # README shows it

    # The link was for one sign-in only.
    again = page.context.browser.new_context()  # type: ignore[union-attr]
    try:
        second = again.new_page()
        answer = second.goto(console.login_link)
        assert answer is not None and answer.status == 401
        expect(second.get_by_text("used already or has expired")).to_be_visible()
    finally:
        again.close()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API token")).to_be_visible()
    sign_in(page, console, console.token("viewer", "vera"))
    expect(page.locator("#user")).to_contain_text("vera (viewer)")


def test_a_live_refresh_that_finds_the_session_gone_asks_to_sign_in_again(page: Page, console: Console) -> None:
    sign_in(page, console, console.token("viewer", "vera"))
    expect(page.get_by_test_id("needs-attention")).to_be_visible()
    page.context.clear_cookies()  # the session ends under the open page; its live stream stays open
    node = console.url + "/api/v1/wasm/nodes/edge-us-east-01/drain"
    admin = {"Authorization": f"Bearer {console.admin_token}"}
    assert page.request.post(node, headers=admin).ok  # a node change: the fleet screen refreshes ...
    try:
        expect(page.get_by_role("alert")).to_contain_text("Your session ended; sign in again.")  # ... and is told
        expect(page.get_by_label("API token")).to_be_visible()
    finally:
        assert page.request.delete(node, headers=admin).ok
    # and the page logged no error (the fixture checks): a 401 on a refresh is not a script error


def test_a_canary_advances_step_by_step_without_reloading(page: Page, console: Console, screenshots: Path) -> None:
    sign_in(page, console, console.admin_token)
    console.set_module("greeter", "1.1.0", "greeter-1.1.0.wat")
    open_rollout(page, "greeter", "1.1.0")
    remember_steps(page)
    page.wait_for_function("() => window.__steps.length >= 2", timeout=WAIT_MS * 2)  # not eval: CSP
    page.screenshot(path=str(screenshots / "console-rollout.png"), full_page=True)  # README shows it
    expect(page.get_by_test_id("rollout-phase")).to_have_text(ROLLOUT_DONE, timeout=WAIT_MS * 2)
    expect(page.get_by_test_id("rollout-phase")).to_contain_text("Promoted")
    steps = page.evaluate("window.__steps")
    assert page.evaluate("window.__stillHere") is True, "the page reloaded"
    assert len(steps) >= 2, f"the page showed the current step as {steps}: not step by step"
    # The strategy's own steps and thresholds, from the fleet: 25, 50, 100 %, error rate 5 %, p99 200 ms.
    expect(page.get_by_test_id("steps").locator("li")).to_have_count(4)  # three weights, then Promote
    expect(page.get_by_test_id("analysis")).to_contain_text("error rate at most 5.0%")
    expect(page.get_by_test_id("analysis")).to_contain_text("p99 at most 200 ms")
    traffic = page.get_by_test_id("traffic").get_by_role("figure")  # the share of each version over time
    expect(traffic).to_contain_text("1.0.0")
    expect(traffic).to_contain_text("1.1.0")


def test_a_faulty_version_rolls_back_with_the_module_error_shown(page: Page, console: Console) -> None:
    sign_in(page, console, console.admin_token)
    console.set_module("calc", "1.2.0", "calc-1.2.0-faulty.wat")
    open_rollout(page, "calc", "1.2.0")
    expect(page.get_by_test_id("rollout-phase")).to_contain_text("RolledBack", timeout=WAIT_MS * 2)
    expect(page.get_by_test_id("last-error")).to_contain_text(re.compile("trap|unreachable", re.IGNORECASE))


def test_an_admin_approves_a_waiting_rollout_and_a_viewer_sees_no_button(
    page: Page, console: Console, browser: Browser
) -> None:
    console.set_module("wc", "1.1.0", "wc-1.1.0.wat")
    viewer = browser.new_context()
    try:
        seen = viewer.new_page()
        sign_in(seen, console, console.token("viewer", "vera"))
        open_rollout(seen, "wc", "1.1.0")
        expect(seen.get_by_test_id("rollout-phase")).to_contain_text("WaitingApproval")
        expect(seen.get_by_test_id("approve")).to_have_count(0)
        expect(seen.get_by_role("button", name="Pause")).to_have_count(0)
    finally:
        viewer.close()

    sign_in(page, console, console.admin_token)
    open_rollout(page, "wc", "1.1.0")
    expect(page.get_by_test_id("rollout-phase")).to_contain_text("WaitingApproval")
    expect(page.get_by_text("hotswap approve wc@1.1.0")).to_be_visible()
    page.get_by_test_id("approve").click()
    expect(page.get_by_test_id("rollout-phase")).to_have_text(ROLLOUT_DONE, timeout=WAIT_MS * 2)
    expect(page.get_by_test_id("rollout-phase")).to_contain_text("Promoted")
    approval = git(console.repo.root, "log", "-1", "--format=%B", "main")
    assert "Hotswap-Approve: wc@1.1.0" in approval and "Hotswap-Approved-By: admin" in approval


def test_the_diff_of_a_branch_shows_what_merging_it_would_roll_out(page: Page, console: Console) -> None:
    main = git(console.repo.root, "rev-parse", "main").strip()
    branch = console.set_module("calc", "1.1.0", "calc-1.1.0.wat", branch="try-calc-1.1.0")
    assert git(console.repo.root, "rev-parse", "main").strip() == main
    sign_in(page, console, console.token("viewer", "vera"))
    page.get_by_role("navigation", name="Screens").get_by_role("link", name="Diff").click()
    page.get_by_label(re.compile("Branch, tag or commit")).fill("try-calc-1.1.0")
    page.get_by_role("button", name="Show diff").click()
    expect(page.get_by_test_id("diff-actions")).to_contain_text("calc")
    expect(page.get_by_test_id("diff-actions")).to_contain_text("1.1.0")
    expect(page.get_by_text(branch[:10]).first).to_be_visible()
    assert "ref=try-calc-1.1.0" in page.url  # the view can be shared as a link
    assert git(console.repo.root, "rev-parse", "main").strip() == main  # looking changed nothing


def test_drain_and_undrain_a_node(page: Page, console: Console) -> None:
    sign_in(page, console, console.admin_token)
    page.get_by_role("navigation", name="Screens").get_by_role("link", name="Nodes").click()
    row = page.locator('[data-testid="node-row"][data-node="edge-us-east-01"]')
    row.get_by_role("link", name="edge-us-east-01").click()
    page.get_by_test_id("drain").click()
    expect(page.get_by_test_id("node-status")).to_contain_text(re.compile("Drain"))
    page.get_by_test_id("undrain").click()
    expect(page.get_by_test_id("node-status")).to_contain_text("Healthy")


def test_a_malformed_address_shows_a_screen_not_a_broken_page(page: Page, console: Console) -> None:
    sign_in(page, console, console.token("viewer", "vera"))
    page.goto(console.url + "/ui/#/modules/%E0")  # not UTF-8 once decoded
    expect(page.locator("main h1").first).to_be_visible()
    page.get_by_role("navigation", name="Screens").get_by_role("link", name="Fleet").click()
    expect(page.get_by_test_id("needs-attention")).to_be_visible()


def test_modules_are_searched_on_the_server_and_one_version_shows_its_digest(page: Page, console: Console) -> None:
    sign_in(page, console, console.token("viewer", "vera"))
    page.get_by_role("navigation", name="Screens").get_by_role("link", name="Modules").click()
    expect(page.get_by_test_id("module-row").first).to_be_visible()
    page.get_by_test_id("module-search").fill("wc")
    rows = page.get_by_test_id("module-row")
    expect(rows.first).to_have_attribute("data-module", re.compile("^wc-v"))
    for module in rows.evaluate_all("rows => rows.map(r => r.dataset.module)"):
        assert module.startswith("wc-v"), module
    rows.first.get_by_role("link").first.click()
    expect(page.get_by_test_id("module-digest")).to_contain_text("sha256:")
