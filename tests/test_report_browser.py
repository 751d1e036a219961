"""The report and the ``dvc plots show`` page in a real browser (headless Chromium), offline.

Each page is opened with every request sent to a local recording proxy (``--proxy-server``,
loopback included), with DNS answering nothing, so a request that would leave the machine is
seen and fails the test; a control page with one external image proves the proxy sees them.
A probe script, added to a copy of the page in the same folder, waits until the charts are
drawn and writes each chart's state and box into the DOM (``--dump-dom``); the screenshot is
then cropped to each box, which must not be blank.

CI runs these (``.ci/run`` installs Debian's ``chromium``): without Chromium they are skipped
on a workstation but fail when the environment variable ``CI`` is set.
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from report_data import build_fabricated_report, fabricate_results

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.browser

WIDTH = 1280  # window width; the height is the page's
VIRTUAL_TIME_MS = 20000  # virtual (not wall-clock) time the page gets to load and draw

#: Waits for every chart, then writes their state into <pre id="busseg-probe"> as JSON. A
#: chart is an <img> (the report's SVG/PNG, DVC's overlays) or a vega view (<canvas>/<svg>
#: inside a .vega-embed). Pixels of <img> and <canvas> are read back where the browser allows.
PROBE = """
<script>
(function () {
  function inkOf(el) {
    try {
      var w = el.naturalWidth || el.width, h = el.naturalHeight || el.height;
      var c = document.createElement('canvas'); c.width = w; c.height = h;
      var g = c.getContext('2d'); g.drawImage(el, 0, 0);
      var d = g.getImageData(0, 0, w, h).data, ink = 0;
      for (var i = 0; i < d.length; i += 4) {
        if (d[i + 3] > 0 && (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235)) ink++;
      }
      return ink;
    } catch (e) { return -1; }  // a tainted canvas (file:// image): the screenshot decides
  }
  function charts() {
    var out = [];
    document.querySelectorAll('img').forEach(function (el) {
      out.push({kind: 'img', el: el, ready: el.complete && el.naturalWidth > 0 && el.naturalHeight > 0});
    });
    document.querySelectorAll('.vega-embed').forEach(function (el) {
      var view = el.querySelector('canvas, svg.marks');
      out.push({kind: 'vega', el: view || el, ready: !!view && view.getBoundingClientRect().width > 0});
    });
    return out;
  }
  function report(tries) {
    var all = charts();
    var pending = all.filter(function (c) { return !c.ready; }).length;
    if (pending && tries < 100) { setTimeout(function () { report(tries + 1); }, 100); return; }
    var result = all.map(function (c) {
      var r = c.el.getBoundingClientRect();
      return {kind: c.kind, ready: c.ready, ink: c.ready ? inkOf(c.el) : 0,
              box: [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height],
              label: c.el.getAttribute('alt') || (c.el.closest('[id]') || {}).id || c.el.getAttribute('src')};
    });
    var pre = document.createElement('pre'); pre.id = 'busseg-probe'; pre.style.display = 'none';
    pre.textContent = JSON.stringify({charts: result, height: document.documentElement.scrollHeight});
    document.body.appendChild(pre);
  }
  window.addEventListener('load', function () { setTimeout(function () { report(0); }, 200); });
})();
</script>
"""


#: Debian's ``chromium`` is a shell wrapper that adds API keys and remote extensions, with
#: which the browser itself calls Google's update and sign-in services; the binary it wraps
#: runs with only the flags below.
DEBIAN_BINARY = Path("/usr/lib/chromium/chromium")


def chromium_binary() -> str | None:
    """The Chromium (or Chrome) executable: Debian's unwrapped binary, else one on PATH."""
    if DEBIAN_BINARY.is_file() and os.access(DEBIAN_BINARY, os.X_OK):
        return str(DEBIAN_BINARY)
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


#: Chromium's own service calls, which no flag turns off in every version (component and
#: extension updates, network time, sign-in): not the page's. They reach the recorder like
#: everything else and get its 502, so they do not leave the machine either.
BROWSER_SERVICE_HOSTS = frozenset({
    "update.googleapis.com",
    "clients2.google.com",
    "accounts.google.com",
    "clientservices.googleapis.com",
    "optimizationguide-pa.googleapis.com",
    "safebrowsing.googleapis.com",
    "edgedl.me.gvt1.com",
    "redirector.gvt1.com",
})


def page_requests(seen: list[str]) -> list[str]:
    """The recorded request lines, without :data:`BROWSER_SERVICE_HOSTS`' (``CONNECT host:443`` or
    ``GET http://host/...``)."""
    def host(line: str) -> str:
        target = line.split()[1] if len(line.split()) > 1 else line
        return re.sub(r"^[a-z]+://", "", target).split("/")[0].split(":")[0].lower()

    return [line for line in seen if host(line) not in BROWSER_SERVICE_HOSTS]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = chromium_binary()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed, and CI must run the browser tests (.ci/run installs Debian's chromium)")
        pytest.skip("Chromium not installed (Debian: apt-get install chromium); CI runs these tests")
    return path


class _Recorder(BaseHTTPRequestHandler):
    """Records the request line of every request it gets and answers 502 (nothing is fetched)."""

    seen: list[str]

    def _record(self) -> None:
        self.seen.append(self.requestline)
        self.send_error(502, "blocked by the test")

    do_GET = do_POST = do_HEAD = do_PUT = do_OPTIONS = do_CONNECT = _record  # noqa: N815

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def proxy() -> Iterator[tuple[int, list[str]]]:
    """A local HTTP proxy on a free port: ``(port, requests seen)``."""
    seen: list[str] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def open_page(chromium: str, page: Path, proxy_port: int, workdir: Path) -> tuple[dict, Image.Image]:
    """Open ``page`` (with the probe added) offline: the probe's JSON and the screenshot."""
    probe_page = page.with_name(f"probe-{page.name}")
    text = page.read_text(encoding="utf-8")
    # Before the page's own </body>, the last one: the inlined libraries' code has the string too.
    head, tag, tail = text.rpartition("</body>")
    probe_page.write_text(head + PROBE + tag + tail if tag else text + PROBE, encoding="utf-8")
    screenshot = workdir / f"{page.stem}.png"
    common = [
        chromium,
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--disable-quic",
        "--disable-client-side-phishing-detection",
        "--disable-domain-reliability",
        "--disable-field-trial-config",
        "--no-pings",
        "--disable-features=NetworkTimeServiceQuerying,MediaRouter,OptimizationHints,Translate,AutofillServerCommunication",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={workdir / 'chromium-profile'}",
        f"--proxy-server=http://127.0.0.1:{proxy_port}",
        "--proxy-bypass-list=<-loopback>",  # even localhost goes through the recorder
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--virtual-time-budget={VIRTUAL_TIME_MS}",
    ]
    url = probe_page.resolve().as_uri()

    def chromium_run(mode: str, height: int) -> str:
        proc = subprocess.run([*common, f"--window-size={WIDTH},{height}", mode, url], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"chromium {mode} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        return proc.stdout

    found = re.search(r'<pre id="busseg-probe"[^>]*>(.*?)</pre>', chromium_run("--dump-dom", 1000), re.S)
    assert found, "the page did not finish loading within the virtual time budget (no probe result)"
    probe = json.loads(html.unescape(found.group(1)))
    # The whole page in one screenshot: a window as tall as the page (same width, same layout).
    chromium_run(f"--screenshot={screenshot}", probe["height"])
    return probe, Image.open(screenshot).convert("RGB")


def assert_charts_drawn(probe: dict, shot: Image.Image, expected: int) -> None:
    """Every chart decoded or rendered, with ink, and its area of the screenshot not blank."""
    charts = probe["charts"]
    assert len(charts) == expected, f"expected {expected} charts, found {len(charts)}: {[c['label'] for c in charts]}"
    assert shot.height >= probe["height"], f"page taller ({probe['height']} px) than the screenshot ({shot.height})"
    pixels = np.asarray(shot).astype(int)
    for chart in charts:
        label = chart["label"]
        assert chart["ready"], f"{label}: not drawn (image not decoded / no vega view)"
        assert chart["ink"] != 0, f"{label}: drawn blank"
        x, y, w, h = (round(v) for v in chart["box"])
        assert w > 20 and h > 20, f"{label}: drawn at {w}x{h} px"
        crop = pixels[y : y + h, x : x + w].reshape(-1, 3)
        dark = (crop.min(axis=1) < 200).mean()
        assert crop.std() > 5 and dark > 0.002, f"{label}: its area of the screenshot is blank"


def test_the_proxy_sees_a_request_that_would_leave(chromium: str, proxy, tmp_path: Path) -> None:
    """Control: the way the tests below block and detect requests does see one."""
    port, seen = proxy
    page = tmp_path / "external.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://example.com/logo.png"></body></html>')
    open_page(chromium, page, port, tmp_path)
    assert any("example.com" in line for line in page_requests(seen)), seen


def test_report_renders_offline_with_every_chart(chromium: str, proxy, tmp_path: Path) -> None:
    port, seen = proxy
    page = tmp_path / "index.html"
    page.write_text(build_fabricated_report(tmp_path / "run"), encoding="utf-8")
    probe, shot = open_page(chromium, page, port, tmp_path)
    # 2 datasets x (warm-up, training, coverage, rounds) charts + 3 cases each
    assert_charts_drawn(probe, shot, expected=14)
    assert page_requests(seen) == [], f"the page made requests: {page_requests(seen)}"


def _dvc(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout


def test_dvc_plots_page_renders_offline_with_the_committed_template(chromium: str, proxy, tmp_path: Path) -> None:
    """``dvc plots show`` with the repository's dvc.yaml and .dvc/config, on fabricated results."""
    port, seen = proxy
    project = tmp_path / "project"
    project.mkdir()
    fabricate_results(project, ("alpha",))
    for overlays in ("reports/eval/alpha/overlays", "reports/pseudo/alpha/overlays"):
        shutil.copytree(project / "reports/eval/alpha/cases", project / overlays, ignore=shutil.ignore_patterns("*.json"))
    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"] = {"alpha": {"kind": "synthetic", "root": "src/busseg/data/synthetic.py"}}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _dvc(["git", "init", "-q"], project)
    _dvc(["dvc", "init", "-q"], project)
    shutil.copy(REPO / ".dvc/config", project / ".dvc/config")
    shutil.copytree(REPO / ".dvc/plots", project / ".dvc/plots", dirs_exist_ok=True)
    _dvc(["dvc", "plots", "show", "-o", "dvc_plots"], project)
    page = project / "dvc_plots" / "index.html"
    text = page.read_text(encoding="utf-8")
    assert "cdn.jsdelivr.net" not in text and "vegaEmbed" in text
    probe, shot = open_page(chromium, page, port, tmp_path)
    vega = [c for c in probe["charts"] if c["kind"] == "vega"]
    # The train and warm-up curves (one view per dvclive series) and the Dice-coverage curve.
    assert len(vega) >= 3, probe["charts"]
    assert_charts_drawn(probe, shot, expected=len(probe["charts"]))
    assert page_requests(seen) == [], f"the page made requests: {page_requests(seen)}"
