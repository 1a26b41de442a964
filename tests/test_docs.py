"""The documentation site: it builds with warnings as errors (a broken cross-reference, a missing page or a
tutorial script that fails is an error), every internal link and anchor of the built pages resolves, and in a
real headless browser search finds a page and the API reference renders.

The site is built once for the module, the way ``make docs`` builds it (``mkdocs build --strict``). The
browser test needs playwright (the ``docs`` extra) and a Chromium of the system (Debian's ``chromium``);
without either it skips, naming what is missing."""

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: where the site will live once published (mkdocs.yml's site_url): a link to it is a link into the built site
SITE_URL = re.search(r"^site_url: (\S+)$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.MULTILINE).group(1)

pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout[-4000:]}\n{run.stderr[-8000:]}"
    return out


class _Page(HTMLParser):
    """The links (``href``, ``src``) and the element ids of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            elif name in ("href", "src") and value:
                self.links.append(value)


@functools.cache
def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _target(site: Path, page: Path, link: str) -> tuple[Path, str] | None:
    """The file and fragment an internal link points to; None for a link that leaves the site."""
    home = urlsplit(SITE_URL)
    if link.startswith(SITE_URL):  # a canonical URL: the page it names must be built
        link = link[len(f"{home.scheme}://{home.netloc}"):]
    parts = urlsplit(link)
    if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:", "data:")):
        return None
    if not parts.path:
        path = page
    elif parts.path.startswith("/"):  # from the root of the site where it will be served (the 404 page's links)
        rooted = unquote(parts.path)
        rooted = rooted[len(home.path):] if rooted.startswith(home.path) else rooted.lstrip("/")
        path = (site / rooted).resolve()
    else:
        path = (page.parent / unquote(parts.path)).resolve()
    if path.is_dir() or parts.path.endswith("/"):
        path = path / "index.html"
    return path, unquote(parts.fragment)


def test_every_page_has_its_canonical_url_under_the_site_url(site):
    for page in (site / "index.html", site / "tutorials" / "custom_circuit" / "index.html"):
        html = page.read_text(encoding="utf-8")
        url = SITE_URL + page.parent.relative_to(site).as_posix() + "/" if page.parent != site else SITE_URL
        assert f'<link rel="canonical" href="{url}">' in html, page
    assert SITE_URL + "concepts/slots/" in (site / "sitemap.xml").read_text(encoding="utf-8")


def test_the_site_has_every_part(site):
    api = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("QELMConfig", "n_qubits", "build_circuit", "get_backend", "load_checkpoint"):
        assert f'id="qelm.{name}"' in api or f'id="qelm.QELMConfig.{name}"' in api, name
    assert "Examples:" in api or "Examples" in api
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "qelm train" in cli and "--n-qubits" in cli
    tutorial = (site / "tutorials" / "quickstart" / "index.html").read_text(encoding="utf-8")
    assert "matched classical baseline" in tutorial, "the tutorial shows what its script printed"
    assert list((site / "tutorials" / "compare_sizes").glob("*.png")), "a tutorial's figure is published"
    for page, figures in (("custom_circuit", {"xy.png", "ring.png", "wide.png"}), ("backends_noise", {"noise.png"}),
                          ("sweep", {"pareto.png"})):
        html = (site / "tutorials" / page / "index.html").read_text(encoding="utf-8")
        assert "It printed:" in html and "was not run" not in html, page  # run at build time
        assert {p.name for p in (site / "tutorials" / page).glob("*.png")} == figures, page
    assert (site / "gallery" / "angle.png").is_file() and (site / "changelog" / "index.html").is_file()


def test_every_internal_link_and_anchor_resolves(site):
    broken = []
    for page in sorted(site.rglob("*.html")):
        for link in _parse(page).links:
            target = _target(site, page, link)
            if target is None:
                continue
            path, fragment = target
            if site.resolve() not in path.resolve().parents and path.resolve() != site.resolve():
                broken.append(f"{page.relative_to(site)}: {link} (leaves the site)")
            elif not path.is_file():
                broken.append(f"{page.relative_to(site)}: {link} (no such file)")
            elif fragment and path.suffix == ".html" and fragment not in _parse(path).ids:
                broken.append(f"{page.relative_to(site)}: {link} (no such anchor)")
    assert not broken, f"{len(broken)} broken links:\n" + "\n".join(broken[:40])


@pytest.fixture(scope="module")
def served(site):
    """The site over HTTP on a free local port (search loads its index with fetch, which file:// refuses)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[docs]'")
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    if chromium is None:
        pytest.skip("no Chromium on PATH: apt-get install chromium (playwright's own browser download is not used)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_search_finds_a_page_in_a_browser(browser, served):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{served}/")
    query = page.locator("input.md-search__input")
    query.click()
    query.press_sequentially("matched", delay=30)  # typed: the theme searches on key events
    results = page.locator(".md-search-result__item")
    results.first.wait_for(timeout=30_000)
    text = page.locator(".md-search-result").inner_text()
    assert "twin" in text.lower(), text[:1000]
    assert not errors, errors
    page.close()


def test_the_api_reference_renders_in_a_browser(browser, served):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{served}/reference/api/")
    heading = page.locator('[id="qelm.QELMConfig"]')
    heading.wait_for(timeout=30_000)
    assert heading.is_visible()
    body = page.locator("article").inner_text()
    for text in ("QELMConfig", "n_qubits", "Examples", "Returns", "Circuit"):
        assert text in body, text
    page.goto(f"{served}/reference/cli/")
    assert page.locator("article").inner_text().count("qelm train") >= 1
    assert not errors, errors
    page.close()
