"""How fast the console's pages come up against a large store under load: the calls page
(first paint, then the newest 50 events), a search by call id and by phone number, and a
call's page with its deliveries. Run by benches/load/console.sh; prints markdown rows.
Usage: console_paint.py CONSOLE_URL TOKEN CALL_ID PHONE"""

import sys
import time

from playwright.sync_api import expect, sync_playwright

console, token, call_id, phone = sys.argv[1:5]
rows = []


def timed(what, action):
    started = time.perf_counter()
    action()
    rows.append((what, (time.perf_counter() - started) * 1000))


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    for attempt in range(3):
        page.goto("about:blank")
        started = time.perf_counter()
        page.goto(console)
        page.get_by_label("Admin token or tenant key").wait_for()
        paint = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1")
        rows.append((f"first contentful paint of the console (navigation {attempt + 1})", paint))
        page.get_by_label("Admin token or tenant key").fill(token)
        timed(f"sign in → the newest 50 events shown (run {attempt + 1})", lambda: (
            page.get_by_role("button", name="Sign in").click(),
            expect(page.locator("tbody tr")).to_have_count(50, timeout=30000)))
        page.get_by_label("Call id").fill(call_id)
        timed(f"search by call id (run {attempt + 1})", lambda: (
            page.get_by_role("button", name="Search").click(),
            expect(page.get_by_role("link", name=call_id).first).to_be_visible(timeout=30000)))
        timed(f"a call's page with its deliveries (run {attempt + 1})", lambda: (
            page.get_by_role("link", name=call_id).first.click(),
            expect(page.locator("section.delivery").first).to_be_visible(timeout=30000)))
        page.get_by_role("link", name="Calls").click()
        page.get_by_label("Phone number").fill(phone)
        timed(f"search by phone number, newest 50 of its calls (run {attempt + 1})", lambda: (
            page.get_by_role("button", name="Search").click(),
            expect(page.locator("tbody tr")).to_have_count(50, timeout=30000)))
    browser.close()

for what, ms in rows:
    print(f"| {what} | {ms:.0f} ms |")
