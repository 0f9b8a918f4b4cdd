"""The HTML reports as a person sees them: rendered in headless Chromium (Debian's chromium and
chromium-driver, driven with Selenium) with the network cut off. The timeline is drawn for every
node, the page needs nothing from outside, its tables have headers, and a 200-node run report fits
1280 px without scrolling sideways. Screenshots go to tests/output/browser/ (git-ignored) to be
looked at. Without Chromium the tests say so and skip (`make browser` installs it; CI does)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
from pathlib import Path

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _history, _report
from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v

from ..webhook import Receiver
from .helpers import REPO
from .test_runbook import small_pool  # noqa: F401  (the fixture: a pool of our own with faulty nodes and a Runbook)
from .test_ticket_lifecycle import receiver  # noqa: F401  (the fixture: a webhook receiver on loopback)

SHOTS = REPO / "tests" / "output" / "browser"
WIDTH = 1280
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, 1280 px wide, offline: no request may leave the machine."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.exists(p) or shutil.which(p))]
    if missing:
        pytest.skip(f"Chromium is not installed here ({', '.join(missing)} missing): the reports cannot be checked in "
                    "a browser; `make browser` installs Debian's chromium and chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:
        pytest.skip(f"selenium is not installed ({err}); it is in requirements-test.txt")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--hide-scrollbars",
                f"--window-size={WIDTH},1000", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws://*", "wss://*"]})
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        yield driver
    finally:
        driver.quit()


LOOK = """
const bars = {}, widths = [];
for (const bar of document.querySelectorAll('svg.timeline rect.bar')) {
  const node = bar.getAttribute('data-node');
  bars[node] = (bars[node] || 0) + 1;
  widths.push(bar.getBoundingClientRect().width);
}
const svg = document.querySelector('svg.timeline');
const external = [];
for (const el of document.querySelectorAll('[src],[href],[srcset],[poster],[data]')) {
  for (const name of ['src', 'href', 'srcset', 'poster', 'data', 'xlink:href']) {
    const value = el.getAttribute(name);
    if (value && !/^(#|data:)/.test(value.trim())) external.push(el.tagName + ' ' + name + '=' + value);
  }
}
for (const style of document.querySelectorAll('style')) {
  if (/url\\(|@import/.test(style.textContent)) external.push('style: ' + style.textContent.match(/(url\\(|@import)[^;]*/)[0]);
}
return {
  title: document.title,
  scrollWidth: document.documentElement.scrollWidth,
  scrollHeight: document.documentElement.scrollHeight,
  bars: bars,
  barWidths: widths,
  slowest: document.querySelectorAll('svg.timeline rect.bar.slowest').length,
  waits: document.querySelectorAll('svg.timeline g.wait').length,
  svgWidth: svg ? svg.getBoundingClientRect().width : 0,
  tables: Array.from(document.querySelectorAll('table')).map(t => ({
    headers: Array.from(t.querySelectorAll('tr:first-child th')).map(th => th.textContent.trim()),
    rows: t.querySelectorAll('tr').length})),
  scripts: document.querySelectorAll('script').length,
  external: external,
  resources: performance.getEntriesByType('resource').map(e => e.name),
};
"""


def look(driver, page: Path, shot: str) -> dict:
    """Open the page, read what is on it and what it asked for, and keep two screenshots: the top as a person first
    sees it at 1280 px, and the whole page."""
    driver.get_log("performance")  # drop what earlier pages logged
    driver.get(page.resolve().as_uri())
    seen = driver.execute_script(LOOK)
    requested = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if not url.startswith(("file:", "data:", "about:")):
                requested.append(url)
    seen["requested"] = requested + [r for r in seen["resources"] if not r.startswith(("file:", "data:"))]
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{shot}.png"))
    full = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": WIDTH, "height": min(seen["scrollHeight"], 16000), "scale": 1}})
    (SHOTS / f"{shot}-full.png").write_bytes(base64.b64decode(full["data"]))
    return seen


def readable(seen: dict) -> None:
    """What every report page must be: nothing from outside, no script, tables with headers, no sideways scroll."""
    assert seen["external"] == [], seen["external"]
    assert seen["requested"] == [], seen["requested"]
    assert seen["scripts"] == 0
    assert seen["tables"] and all(t["headers"] for t in seen["tables"]), seen["tables"]
    assert seen["scrollWidth"] <= WIDTH, f"the page is {seen['scrollWidth']} px wide at {WIDTH} px"


def test_the_checks_catch_a_page_that_needs_the_network_or_overflows(browser, tmp_path):
    """The checks can fail: a page with an external image, stylesheet and font, a table without headers and a
    wide element is refused on each count."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="stylesheet" href="https://cdn.example.invalid/x.css">'
                    '<style>@font-face{font-family:x;src:url(https://fonts.example.invalid/x.woff2)}</style></head>'
                    '<body><img src="http://img.example.invalid/x.png"><table><tr><td>no header</td></tr></table>'
                    '<div style="width:2000px">wide</div></body></html>')
    seen = look(browser, page, "self-check")
    assert len(seen["external"]) == 3 and any("img.example.invalid" in e for e in seen["external"])
    assert any("cdn.example.invalid" in url for url in seen["requested"])
    assert seen["tables"] == [{"headers": [], "rows": 1}] and seen["scrollWidth"] > WIDTH
    with pytest.raises(AssertionError):
        readable(seen)


STEPS = (("isolated", 0.02, 0.9), ("drained", 1.0, 25.0), ("workloads_recovered", 1.0, 12.0),
         ("handed_off", 0.05, 0.6))


def two_hundred_nodes(started: dt.datetime) -> list[dict]:
    """200 report entries as run_entries makes them: most handed off after four steps, some kept in service at the
    card level, some rebooted, a few left alone; long names and notes from the cluster included."""
    def at(seconds: float) -> str:
        return (started + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    nodes = []
    for i in range(200):
        name = f"gpu-h100-rack{i // 8:02d}-slot{i % 8}-node-{i:04d}" + ("-with-a-very-long-suffix" if i % 37 == 0 else "")
        fault_age = 60 + (i * 97) % 1800
        timeline = [{"step": "detected", "at": at(-fault_age), "seconds": None, "min_duration": 60,
                     "note": "NT_NPU_ECC_COUNT -> repair"}]
        clock = 1.0 + (i % 16) * 0.5  # batches of 16 start one after the other
        if i % 50 == 7:
            entry = {"outcome": "healthy now: nothing to do", "timeline": []}
        elif i % 10 == 3:
            clock += 3.0 + i % 5
            timeline.append({"step": "card_level", "at": at(clock), "seconds": 3.0 + i % 5, "note": "1 card lost"})
            entry = {"outcome": "kept in service, card level: 1 card lost", "timeline": timeline}
        else:
            for index, (step, low, high) in enumerate(STEPS):
                took = round(low + (high - low) * (((i + 1) * (index + 3) * 7919) % 1000) / 1000, 3)
                clock += took
                timeline.append({"step": step, "at": at(clock), "seconds": took,
                                 "note": f"node '{name}' {step}: taint node-recovery.ai-infra.io/faulty="
                                         "NT_NPU_ECC_COUNT:NoSchedule,NT_NPU_CARD_LOSE:NoSchedule"})
            if i % 25 == 11:  # a reboot carries no duration of its own: counted from the step before it
                timeline.append({"step": "rebooted", "at": at(clock + 40), "seconds": None, "note": "reboot: ok"})
            entry = {"outcome": "handed off to repair", "timeline": timeline}
        nodes.append(dict(entry, name=name, pool=f"gpu-h100-{i // 50}", faults=["NT_NPU_ECC_COUNT", "NT_NPU_CARD_LOSE"],
                          action="repair", failed=False,
                          details=[f"repair ticket NR-20261129T100000Z-{name} (files, http://127.0.0.1:9/)"]))
    return nodes


def test_a_200_node_run_report_is_drawn_for_every_node_and_fits_1280_px(browser, tmp_path):
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(seconds=90)
    nodes = two_hundred_nodes(started)
    report = _report.build("recover", "20261129T100000Z-b200", nodes, {"act": [], "skip": []},
                           started.strftime("%Y-%m-%dT%H:%M:%SZ"), False)
    paths = _report.write(report, str(tmp_path))
    seen = look(browser, Path(paths["html"]), "run-report-200-nodes")
    readable(seen)
    expected = {n["name"]: sum(1 for s in n["timeline"] if s["step"] != "detected") for n in nodes if n["timeline"]}
    assert len(expected) == 196 and seen["bars"] == expected  # every node that did something, every step of it
    assert seen["slowest"] == 1 and min(seen["barWidths"]) >= 1  # each bar visible on the screen
    assert seen["waits"] == 196 and seen["svgWidth"] > WIDTH * 0.8  # the drawing uses the page's width
    headers = seen["tables"][0]["headers"]
    assert headers[:5] == ["node", "pool", "faults", "action", "outcome"] and "time to recover" in headers
    assert seen["tables"][0]["rows"] == 201


def test_a_real_run_report_and_the_fleet_report_in_the_browser(api, small_pool, receiver, browser):  # noqa: F811
    """A recover run on the local cluster (two nodes whose fault began ten minutes before it, tickets to a webhook on
    loopback), then the history playbook: both pages as a person sees them."""
    names, runbook = small_pool(10, faulty=2)
    run = runbook.run("recover", extra={"repair_handoff_webhook_url": f"{receiver}/tickets"})
    assert run.returncode == 0, run.stdout[-4000:]
    reports = runbook.tmp / "reports"
    report = json.loads((reports / "latest-recover.json").read_text())
    acted = {n["name"]: n for n in report["nodes"] if n["name"] in names[:2]}
    assert len(acted) == 2
    for entry in acted.values():
        assert entry["outcome"] == "handed off to repair", entry
        # The fault's ten minutes are the wait before the run, not the isolation's duration.
        assert 590 <= entry["wait"]["seconds"] <= 900, entry["wait"]
        isolated = next(s for s in entry["timeline"] if s["step"] == "isolated")
        assert isolated["seconds"] < 60 and entry["in_run_seconds"] < entry["recover_seconds"]
    keys = {r["headers"]["Idempotency-Key"] for r in Receiver.received}
    assert len(keys) == 2 and {u["idempotency_key"] for u in report["ticket_updates"]} == keys
    assert report["mttr"]["nodes"] == 2 and report["slowest_step"]["node"] in acted

    seen = look(browser, reports / "latest-recover.html", "run-report-real")
    readable(seen)
    expected = {name: sum(1 for s in n["timeline"] if s["step"] != "detected") for name, n in acted.items()}
    assert {name: seen["bars"].get(name) for name in acted} == expected and min(expected.values()) >= 3
    assert seen["slowest"] == 1 and seen["waits"] == 2
    ticket_table = next(t for t in seen["tables"] if "idempotency key" in t["headers"])
    assert ticket_table["rows"] == 3

    history = runbook.run("history")
    assert history.returncode == 0, history.stdout[-4000:]
    fleet = look(browser, reports / "latest-history.html", "fleet-report-real")
    readable(fleet)
    assert fleet["title"].startswith("Fleet history")
    assert any(t["headers"][:3] == ["step", "nodes", "median"] for t in fleet["tables"])


def test_a_fleet_report_of_many_runs_and_nodes_fits_1280_px(browser, tmp_path):
    """The fleet report over many 200-node runs, built by the same pure code the history playbook runs."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    runs = []
    for r in range(5):
        started = now - dt.timedelta(days=5 - r)
        run = _report.build("recover", f"run-{r}", two_hundred_nodes(started), {"act": []},
                            started.strftime("%Y-%m-%dT%H:%M:%SZ"), False)
        runs.append(dict(run, finished=(started + dt.timedelta(seconds=150)).strftime("%Y-%m-%dT%H:%M:%SZ")))
    facts = []
    for i, node in enumerate(runs[0]["nodes"]):
        isolations = [_history.rfc3339(now - dt.timedelta(days=d, hours=i % 24)) for d in range(1 + i % 4)]
        facts.append({"name": node["name"], "pool": node["pool"], "state": "repair-pending" if i % 9 == 0 else "none",
                      "isolations": isolations, "card_losses": [], "fault_history": {"NT_NPU_ECC_COUNT": isolations},
                      "actions": 1, "repeat_offender": None, "ticket": f"NR-{i}" if i % 9 == 0 else None,
                      "times": {v.REPAIR_REQUESTED_AT: isolations[0]} if i % 9 == 0 else {}, "lost_cards": i % 3})
    history = _history.build_history(facts, runs, now, runs=50, window=90 * 86400, top=10, warnings=[])
    paths = _history.write(history, str(tmp_path))
    seen = look(browser, Path(paths["html"]), "fleet-report-200-nodes")
    readable(seen)
    assert len(seen["tables"]) >= 5 and seen["bars"] == {}
