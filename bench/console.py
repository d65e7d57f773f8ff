"""The console's first paint on the example fleet, in Chromium, against a live `hotswap up`.

Starts `hotswap up` on a copy of fleet-example (as tests/ui/browser/conftest.py does), signs a
browser context in once, then loads `/ui/#/fleet` `--loads` times in fresh pages (the session cookie
kept; the shell and its modules are revalidated, `Cache-Control: no-cache`, and the API answers fetched) and prints,
median and p99:
  - first contentful paint (the browser's own `paint` entry),
  - the fleet screen drawn with its data (the "needs attention" section present), measured in the page
    from navigation start;
and, as the baseline in the same run, the same page's load of a static file of the same size as
index.html (`/ui/style.css`), whose paint has no script and no API call in it.

    python bench/console.py [--loads 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stats import percentile
from tests.ui.browser.conftest import CHROMIUM, _start, stop

DRAWN = """() => new Promise((done) => {
    const check = () => document.querySelector('[data-testid="needs-attention"]')
        ? done(performance.now()) : requestAnimationFrame(check);
    check();
})"""
FCP = "() => (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime ?? null"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        console = _start(Path(tmp))
        try:
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                page.goto(console.login_link)
                page.wait_for_selector('[data-testid="needs-attention"]')
                page.close()
                paints: list[float] = []
                drawn: list[float] = []
                baseline: list[float] = []
                for _ in range(args.loads):
                    page = context.new_page()
                    page.goto(console.url + "/ui/#/fleet")
                    drawn.append(page.evaluate(DRAWN))
                    paints.append(page.evaluate(FCP))
                    page.close()
                    page = context.new_page()
                    page.goto(console.url + "/ui/style.css")
                    baseline.append(page.evaluate("() => performance.getEntriesByType('navigation')[0].duration"))
                    page.close()
                browser.close()
        finally:
            stop(console.process)
    where = "the browser tests' copy of fleet-example (2 nodes)"
    print(f"console first paint, {args.loads} loads of /ui/#/fleet on {where}, Chromium {CHROMIUM}")
    for name, values in (
        ("first contentful paint", paints),
        ("fleet screen drawn with data", drawn),
        ("baseline: a static file's load", baseline),
    ):
        print(f"  {name:32s} median {statistics.median(values):7.1f} ms   p99 {percentile(values, 0.99):7.1f} ms")


if __name__ == "__main__":
    main()
