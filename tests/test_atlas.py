"""`deepatlas atlas`: the site is built into a temporary folder and every page is opened in a real headless browser
(Debian's chromium, driven by playwright): no console error, no failed or network request, no broken link or image,
and the index's map reaches every entry page."""
import os
import re
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from deepatlas import catalog, cli
from deepatlas.tools import leaderboard

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium, installed with apt-get when missing; a machine where it cannot be is a failure, not a skip:
    the atlas is checked in a browser or not at all."""
    if not CHROMIUM.exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"],
                        ["apt-get", "install", "-y", "chromium"]):
            if CHROMIUM.exists():
                break
            try:
                done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
                why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            except (OSError, subprocess.TimeoutExpired) as err:
                why = str(err)
        if not CHROMIUM.exists():
            pytest.fail(f"the atlas browser test needs Debian's chromium at {CHROMIUM}, and `apt-get install -y "
                        f"chromium` could not install it ({why}); install it and run the test again")
    return CHROMIUM


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("atlas") / "site"
    start = time.perf_counter()
    assert cli.run(["atlas", "--out", str(out)]) == 0
    seconds = time.perf_counter() - start
    assert seconds < 30, f"the atlas took {seconds:.1f} s to build (the issue's limit: 30 s)"
    return out


@pytest.fixture(scope="session")
def browser(chromium):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the atlas browser test needs playwright (pip install -e '.[dev]')")
    with sync_playwright() as p:
        found = p.chromium.launch(executable_path=str(chromium), args=["--disable-gpu"])
        yield found
        found.close()


def test_the_site_has_every_page(site):
    names = [c.name for c in catalog.cards()]
    assert sorted(p.stem for p in (site / "entries").glob("*.html")) == sorted(names)
    tasks = {r["task"] for r in leaderboard.rows()}
    assert {p.stem for p in (site / "leaderboards").glob("*.html")} == tasks
    assert (site / "index.html").is_file() and (site / "guide.html").is_file()
    for page in [*(site / "leaderboards").glob("*.html"), site / "guide.html"]:
        assert leaderboard.MEASURED_ON in page.read_text().replace("&#x27;", "'"), page.name
    for name in names:
        text = (site / "entries" / f"{name}.html").read_text()
        assert f"deepatlas train {name} --out runs/{name}" in text and f"deepatlas eval runs/{name}" in text
        has_rows = any(r["name"] == name for r in leaderboard.rows())
        assert (leaderboard.MEASURED_ON in text.replace("&#x27;", "'")) == has_rows, name
    vae = (site / "entries" / "vae.html").read_text()
    assert "ELBO" in vae and 'class="eq"' in vae and "deepatlas sample runs/vae" in vae
    assert "https://arxiv.org/abs/1312.6114" in vae and "data_shape" in vae and "../assets/vae.png" in vae
    assert (site / "assets" / "vae.png").is_file()


def _local_target(page_file: Path, href: str) -> Path | None:
    """The file a relative link points to, or None for a link off the site (a paper) or within the page."""
    parsed = urlparse(href)
    if parsed.scheme or href.startswith("#"):
        return None
    return (page_file.parent / unquote(parsed.path)).resolve()


def test_every_page_opens_cleanly_in_a_browser(site, browser):
    pages = sorted(site.rglob("*.html"))
    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console error: {m.text}"))
    page.on("pageerror", lambda err: problems.append(f"script error: {err}"))
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url} ({r.failure})"))
    page.on("request", lambda r: r.url.startswith(("file:", "data:")) or problems.append(f"network request: {r.url}"))
    for path in pages:
        page.goto(path.as_uri())
        where = path.relative_to(site)
        hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.getAttribute('href'))")
        assert hrefs, where
        for href in hrefs:
            target = _local_target(path, href)
            if target is None:
                assert href.startswith(("https://", "#")), f"{where}: {href}"
                continue
            if not target.is_file():
                problems.append(f"broken link: {href}")
            fragment = urlparse(href).fragment
            if fragment and target.is_file() and f'id="{fragment}"' not in target.read_text():
                problems.append(f"broken anchor: {href}")
        images = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.getAttribute('src'), i.naturalWidth])")
        problems += [f"broken image: {src}" for src, width in images if not width]
        assert not problems, f"{where}:\n" + "\n".join(problems)
    context.close()


def test_the_index_map_reaches_every_entry_page(site, browser):
    page = browser.new_page()
    page.goto((site / "index.html").as_uri())
    links = page.eval_on_selector_all("svg a", "links => links.map(a => [a.dataset.name, a.getAttribute('href')])")
    names = [c.name for c in catalog.cards()]
    assert sorted(links) == sorted([name, f"entries/{name}.html"] for name in names)
    assert all((site / href).is_file() for _, href in links)
    page.click('svg a[data-name="resnet"]')  # a real click on the drawn entry
    page.wait_for_load_state()
    assert page.url.endswith("/entries/resnet.html")
    assert page.inner_text("h1") == catalog.card("resnet").title
    neighbourhood = page.eval_on_selector_all("svg a", "links => links.map(a => a.getAttribute('href'))")
    assert "resnet.html" in neighbourhood and all(re.fullmatch(r"\w+\.html", h) for h in neighbourhood)
    page.close()


def test_atlas_refuses_a_file_as_its_folder(refused, tmp_path):
    (tmp_path / "cwd").mkdir(exist_ok=True)
    (tmp_path / "cwd" / "taken").write_text("x")
    refused("atlas", "--out", "taken", message="--out taken: is a file; give a folder")
