"""The web console in a real browser: Debian's Chromium (over CDP) or Firefox ESR (over
WebDriver BiDi), driven by Playwright; nothing downloads a browser build. Playwright is
pinned to 1.57: later versions send Firefox BiDi commands ESR 153 does not know yet. Run by tests/it/console.rs against the real binary, which
prepared two tenants, their deliveries and a tenant key; the facts arrive as JSON on
stdin. Prints one JSON line of what it saw; exits non-zero on the first failed check.
Screenshots of each page go to the directory given (under target/)."""

import json
import os
import sys
import time
import urllib.request

from playwright.sync_api import expect, sync_playwright

facts = json.load(sys.stdin)
browser_name = facts.get("browser", "chromium")
shots = f"{facts['screenshots']}/{browser_name}"
os.makedirs(shots, exist_ok=True)
seen = {}
current = None


def check(condition, what):
    if not condition:
        print(json.dumps({"failed": what, "seen": seen}))
        sys.exit(1)


def to_hash(page, fragment):
    """A same-page navigation, as a link does it: Firefox (over BiDi) reports no navigation
    for a hash change, so `goto` would wait forever; the checks that follow wait instead."""
    page.evaluate("fragment => { location.hash = fragment; }", fragment)


def sign_in(page, token):
    page.goto(facts["console"])
    page.get_by_label("Admin token or tenant key").fill(token)
    page.get_by_role("button", name="Sign in").click()


def run(p):
    if browser_name == "firefox":
        browser = p.firefox.launch(channel="moz-firefox", executable_path="/usr/bin/firefox-esr")
    else:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    global current
    current = page
    csp_violations = []
    page.on("console", lambda m: csp_violations.append(m.text) if "Content Security Policy" in m.text else None)

    # A forged token is refused at the door.
    sign_in(page, "not-a-token")
    expect(page.get_by_role("alert")).to_have_text("That token is not valid.")
    page.screenshot(path=f"{shots}/sign-in.png")

    # The operator finds the call by the caller's number, then by its id, and sees every
    # attempt of every destination.
    sign_in(page, facts["admin_token"])
    expect(page.get_by_role("heading", name="Calls")).to_be_visible()
    page.get_by_label("Phone number").fill(facts["phone"])
    page.get_by_role("button", name="Search").click()
    expect(page.locator("tbody tr")).to_have_count(2)  # the same caller called both tenants
    page.get_by_label("Tenant").fill(facts["tenant"])
    page.get_by_role("button", name="Search").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.get_by_role("link", name=facts["call_id"])).to_be_visible()
    page.get_by_label("Phone number").fill("")
    page.get_by_label("Tenant").fill("")
    page.get_by_label("Call id").fill(facts["call_id"])
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=facts["call_id"]).first.click()
    expect(page.get_by_role("heading", name=f"Call {facts['call_id']}")).to_be_visible()
    for destination, attempts, last in facts["expected_attempts"]:
        card = page.locator(f"section.delivery[data-destination='{destination}']")
        expect(card).to_be_visible()
        expect(card.locator("tbody tr")).to_have_count(attempts)
        expect(card.locator("tbody tr").last).to_contain_text(last)
    seen["deliveries"] = page.locator("section.delivery").count()
    # The request each destination gets, secrets masked.
    helpdesk_request = page.locator(f"section.delivery[data-destination='{facts['dead_destination']}'] details.request")
    helpdesk_request.locator("summary").click()
    expect(helpdesk_request.locator("pre")).to_contain_text(f"x-api-key: ‹secret:{facts['dead_destination']}›")
    page.get_by_text("Payload as received").click()
    expect(page.locator("details.card pre")).to_contain_text(facts["call_id"])
    page.screenshot(path=f"{shots}/call.png", full_page=True)
    # At 200% zoom (half the width in CSS pixels) nothing runs off the side.
    page.set_viewport_size({"width": 640, "height": 900})
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    page.screenshot(path=f"{shots}/call-zoomed.png", full_page=True)
    check(overflow <= 0, f"the call page is {overflow}px wider than the window at 200% zoom")
    page.set_viewport_size({"width": 1280, "height": 900})
    check(facts["secret"] not in page.content(), "a secret value is in the call page")

    # A dead delivery replayed from the page reaches the receiver: its card turns delivered.
    dead = page.locator(f"section.delivery[data-destination='{facts['dead_destination']}']")
    expect(dead.locator(".state")).to_have_text("dead")
    dead.get_by_role("button", name="Replay").click()
    expect(dead.get_by_role("status")).to_have_text("Queued again.")
    # The page follows the delivery while it is pending: no reload (that would sign out).
    delivered = page.locator(f"section.delivery[data-destination='{facts['dead_destination']}'] .state")
    expect(delivered).to_have_text("delivered", timeout=20000)
    state = delivered.text_content()
    seen["replayed"] = state

    # Dead letters and destinations.
    page.get_by_role("link", name="Deliveries").click()
    expect(page.get_by_role("heading", name="Deliveries")).to_be_visible()
    page.screenshot(path=f"{shots}/deliveries.png", full_page=True)
    page.get_by_role("link", name="Destinations").click()
    row = page.locator(f"tr[data-destination='{facts['tenant']}/{facts['dead_destination']}']")
    row.get_by_role("button", name="Pause").click()
    expect(page.locator(f"tr[data-destination='{facts['tenant']}/{facts['dead_destination']}']")).to_contain_text("paused")
    page.screenshot(path=f"{shots}/destinations.png", full_page=True)
    page.locator(f"tr[data-destination='{facts['tenant']}/{facts['dead_destination']}']").get_by_role("button", name="Resume").click()
    expect(page.locator(f"tr[data-destination='{facts['tenant']}/{facts['dead_destination']}']")).to_contain_text("running")
    check(facts["secret"] not in page.content(), "a secret value is in the destinations page")

    # Health over the last hour: the crm destination's attempts all succeeded.
    crm = page.locator(f"tr[data-destination='{facts['tenant']}/crm']")
    expect(crm).to_contain_text("100% of 1")
    expect(crm.locator("svg.spark").first).to_be_visible()

    # Tenants: a new one written in the page; an error lands under the part it points to,
    # and nothing is created until it is fixed.
    page.get_by_role("link", name="Tenants").click()
    page.get_by_label("New tenant id").fill("initech")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name="Tenant initech")).to_be_visible()
    destination = page.get_by_label("destination crm")
    destination.fill(json.dumps({"id": "crm", "url": facts["receiver"] + "/initech", "timeout": "soon"}))
    page.get_by_role("button", name="Create").click()
    problem = page.locator("section.part[data-pointer='/destination/0'] ul.problems li")
    expect(problem).to_contain_text("/timeout")
    page.screenshot(path=f"{shots}/tenant-edit.png", full_page=True)
    destination.fill(json.dumps({"id": "crm", "url": facts["receiver"] + "/initech"}))
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status").filter(has_text="Saved")).to_contain_text("version 1")
    page.get_by_role("link", name="Tenants").click()
    expect(page.get_by_role("link", name="initech")).to_be_visible()
    page.screenshot(path=f"{shots}/tenants.png", full_page=True)

    # Follow: a callback sent now appears on the calls page without a reload.
    page.get_by_role("link", name="Calls").click()
    page.get_by_role("button", name="Search").click()
    page.get_by_label("Follow new events").check()
    urllib.request.urlopen(urllib.request.Request(facts["hook"], data=facts["follow_body"].encode(), headers={"content-type": "application/json"}))
    expect(page.get_by_role("link", name="follow-call-1")).to_be_visible(timeout=10000)

    # Live: a callback sent now shows as an event, then as its attempts.
    page.get_by_role("link", name="Live", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Watching")
    urllib.request.urlopen(urllib.request.Request(facts["hook"], data=facts["follow_body"].replace("follow-call-1", "live-call-1").encode(), headers={"content-type": "application/json"}))
    expect(page.locator("tr.live-event").first).to_contain_text("call live-call-1 from telecmi")
    expect(page.locator("tr.live-attempt").filter(has_text="crm: HTTP 200")).to_have_count(1)
    page.screenshot(path=f"{shots}/live.png", full_page=True)

    # Keyboard: the search form is reachable and usable without a mouse.
    page.get_by_role("link", name="Calls").click()
    page.get_by_label("Call id").focus()
    page.keyboard.type(facts["call_id"])
    page.keyboard.press("Enter")
    expect(page.get_by_role("link", name=facts["call_id"]).first).to_be_visible()

    # The playground renders a destination against this call's event, secrets masked, and
    # shows a template error at its place.
    to_hash(page, f"#/playground?tenant={facts['tenant']}&event_id={facts['event_id']}")
    page.get_by_label("Destination", exact=True).select_option(label=facts["dead_destination"])
    rendered = page.locator("pre.rendered")
    expect(rendered).to_contain_text(f"x-api-key: ‹secret:{facts['dead_destination']}›")
    expect(rendered).to_contain_text(facts["call_id"])
    page.get_by_label("Destination (JSON", exact=False).fill(
        json.dumps({"id": "draft", "url": "https://example.com/<<id>>", "body": "{\n  \"call\": <<nope>>\n}"}))
    problem = page.locator("ul.problems li").first
    expect(problem).to_contain_text("/body line 2, column 13")
    page.screenshot(path=f"{shots}/playground.png", full_page=True)
    check(facts["secret"] not in page.content(), "a secret value is in the playground")

    # A tenant key sees its own tenant only; another tenant's event is not found.
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, facts["tenant_key"])
    expect(page.get_by_role("heading", name="Calls")).to_be_visible()
    page.get_by_role("button", name="Search").click()
    expect(page.locator("tbody tr").first).to_be_visible()
    tenants = set(page.locator("tbody tr td:nth-child(2)").all_text_contents())
    seen["tenant_key_tenants"] = sorted(tenants)
    check(tenants == {facts["tenant"]}, "a tenant key saw another tenant's events")
    to_hash(page, f"#/events/{facts['other_event']}")
    expect(page.get_by_role("alert")).to_have_text("Not found.")
    page.get_by_role("link", name="Destinations").click()
    names = set(page.locator("tbody tr td:first-child").all_text_contents())
    check(all(n.startswith(f"{facts['tenant']}/") for n in names), "a tenant key saw another tenant's destinations")
    page.screenshot(path=f"{shots}/tenant-view.png", full_page=True)
    check(facts["secret"] not in page.content(), "a secret value is in the tenant view")

    # The portal: a portal token shows the tenant's view; a forged or expired one, nothing.
    page.goto(f"{facts['console']}portal?token={facts['portal_token']}#/calls")
    expect(page.get_by_role("heading", name="Calls")).to_be_visible()
    check("token=" not in page.url, "the portal token stayed in the address")
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    page.get_by_role("button", name="Search").click()
    expect(page.locator("tbody tr").first).to_be_visible()
    tenants = set(page.locator("tbody tr td:nth-child(2)").all_text_contents())
    check(tenants == {facts["tenant"]}, "the portal saw another tenant's events")
    page.screenshot(path=f"{shots}/portal.png", full_page=True)
    for name in ["forged_portal_token", "expired_portal_token"]:
        if name == "expired_portal_token":
            while time.time() < facts["expired_at"]:
                page.wait_for_timeout(100)
        page.goto(f"{facts['console']}portal?token={facts[name]}#/calls")
        expect(page.get_by_role("alert")).to_have_text("This portal link has expired or is not valid.")
        check(page.locator("tbody tr").count() == 0, f"a {name} saw something")

    check(not csp_violations, f"the page broke its own Content-Security-Policy: {csp_violations}")
    browser.close()


with sync_playwright() as p:
    try:
        run(p)
    except Exception:
        # The page as it was, for whoever reads the failure.
        current.screenshot(path=f"{shots}/failure.png", full_page=True)
        print(current.content(), file=sys.stderr)
        raise

print(json.dumps({"ok": True, "seen": seen}))
