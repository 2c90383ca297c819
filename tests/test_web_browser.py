"""The review page in a real browser: `tagger web` in a process of its own on a loopback
port, Debian's chromium driven by Playwright. A reviewer filters the queue to
low-confidence dresses, opens one, logs in, corrects its product type with one click;
then a roll-out (a second version activated, `tagger retag --all`, a real worker) re-tags
the catalogue, and the correction is still what the page shows.

TAGGER_SCREENSHOTS=<dir> saves full-page screenshots of the grid and of the item page."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

from tagger.db import Item, current_tags
from tagger.tags import save_batch
from tagger.web import auth
from tests.factories import GENDERS, PRODUCTS, jpeg_bytes, scored_prediction
from tests.processes import start_worker, stop, wait_for_job
from tests.services import free_port

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("TAGGER_TEST_CHROMIUM", "/usr/bin/chromium"))
PASSWORD = "a reviewer's passphrase"
SECRET = "browser-test-session-key"
# v1's tags: (gender, product type, product score, margin). Registration stores the
# default thresholds (a product margin under 0.2 needs review).
TAGS = {
    "d1": ("WOMEN", "Dresses", 0.52, 0.04),  # low-confidence dresses, closest call first
    "d2": ("WOMEN", "Dresses", 0.50, 0.02),
    "d3": ("WOMEN", "Dresses", 0.93, 0.85),  # a confident dress: not in the queue
    "p1": ("MEN", "Pants", 0.55, 0.01),  # a close call, but not a dress
    "t1": ("MEN", "Tees_Tanks", 0.90, 0.70),
    "s1": ("WOMEN", "Shorts", 0.60, 0.15),
}


@pytest.fixture
def browser():
    """Debian's chromium under Playwright (never a downloaded browser)."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'"
    )
    if not CHROMIUM.exists():
        pytest.skip(f"no browser at {CHROMIUM}: `make browser` installs Debian's chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()


def _serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """`tagger web` on a free loopback port, once it answers."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tagger.cli", "web", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"tagger web exited:\n{log.read_text()}"
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.3)
    stop([proc])
    raise AssertionError(f"tagger web did not answer:\n{log.read_text()}")


def _shown(engine, item_id: str):
    with engine.connect() as conn:
        return conn.execute(
            sa.select(
                current_tags.c.product_type, current_tags.c.source, current_tags.c.model_version
            ).where(current_tags.c.item_id == item_id)
        ).one()


def test_a_correction_made_in_the_browser_survives_a_roll_out(
    db, session_factory, settings_env, tagger_cli, artifact, tmp_path, browser
):
    """Filter to low-confidence dresses, open the closest call, log in, correct it to
    Pants: current_tags says human; after v2 is activated and every item re-tagged by a
    real worker, the page still shows Pants from a human over v2's tag."""
    users = tmp_path / "users"
    auth.add_user(users, "ana", PASSWORD, iterations=1000)
    env = {
        **os.environ,
        "TAGGER_WEB_USERS_FILE": str(users),
        "TAGGER_WEB_SECRET": SECRET,
        "TAGGER_LOG_LEVEL": "INFO",
        "TAGGER_REVIEW_PRODUCT_MARGIN": "0.2",
        "TAGGER_REVIEW_GENDER_SCORE": "0.6",
    }
    for version, extra in (("v1", ["--activate"]), ("v2", [])):
        reg = tagger_cli(env, "model", "register", artifact, "--version", version, *extra)
        assert reg.returncode == 0, reg.stderr
    # The catalogue as v1's workers left it (their tags, written as a worker writes them).
    folder = tmp_path / "images"
    folder.mkdir()
    with session_factory.begin() as s:
        for n, item_id in enumerate(TAGS):
            path = folder / f"{item_id}.jpg"
            path.write_bytes(jpeg_bytes(seed=n, size=(96, 128)))
            s.add(Item(item_id=item_id, image_uri=str(path), title=f"catalogue item {item_id}"))
        s.flush()
        preds = {
            i: scored_prediction(g, p, product_score=ps, margin=m)
            for i, (g, p, ps, m) in TAGS.items()
        }
        save_batch(session=s, job_id=None, model_version="v1", predictions=preds, failures={})

    shots = os.environ.get("TAGGER_SCREENSHOTS")
    shots_dir = Path(shots) if shots else None
    if shots_dir:
        shots_dir.mkdir(parents=True, exist_ok=True)
    web_log = tmp_path / "web.log"
    server, url = _serve(env, web_log)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url + "/")
        page.select_option("select[name=product_type]", "Dresses")
        page.click("form.filters button[type=submit]")
        page.wait_for_url("**/?*product_type=Dresses*")
        cards = page.locator("li.card").evaluate_all("cs => cs.map(c => c.dataset.item)")
        assert cards == ["d2", "d1"]
        # The image came through the page's own route (a local file, found by item id).
        page.wait_for_function(
            "() => [...document.querySelectorAll('li.card img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        if shots_dir:
            page.screenshot(path=str(shots_dir / "review-grid.png"), full_page=True)

        page.click("li.card[data-item=d2] a")
        page.wait_for_url("**/item?id=d2*")
        # Every class of both heads has its bar, each with its probability.
        labels = page.locator("svg.bars text.label").all_text_contents()
        assert sorted(labels) == sorted([*GENDERS, *PRODUCTS])
        assert len(page.locator("svg.bars text.value").all_text_contents()) == len(labels)
        page.click("header a:text('Log in')")
        page.fill("input[name=name]", "ana")
        page.fill("input[name=password]", PASSWORD)
        page.click("form.login button[type=submit]")
        page.wait_for_url("**/item?id=d2*")
        page.click("form[aria-label='Product type'] button[value=Pants]")
        page.wait_for_url("**/item?id=d2*")
        assert "Saved: product type Pants (by ana)." in page.inner_text("main")
        assert page.inner_text("td.source") == "human"
        assert _shown(db, "d2") == ("Pants", "human", "v1")
        if shots_dir:
            page.screenshot(path=str(shots_dir / "review-item.png"), full_page=True)

        # The roll-out: v2 active, every item queued again, a real worker tags them. Forced:
        # v2 has no comparison against v1 (`tagger model compare`), and what this test is
        # about is the label outliving the roll-out, not the gate before it.
        activated = tagger_cli(env, "model", "activate", "v2", "--force")
        assert activated.returncode == 0, activated.stderr
        retag = tagger_cli({**env, "TAGGER_BATCH_SIZE": "3"}, "retag", "--all")
        assert retag.returncode == 0, retag.stderr
        worker = start_worker(env, "web", tmp_path / "worker.log")
        try:
            job = wait_for_job(db, int(retag.stdout.split()[-1]), [worker])
        finally:
            stop([worker])
        assert (job.total, job.done) == (len(TAGS), len(TAGS))
        assert _shown(db, "d1")[1:] == ("v2", "v2")  # re-tagged and shown
        assert _shown(db, "d2") == ("Pants", "human", "v2")

        page.reload()
        assert page.inner_text("td.source") == "human"
        assert "Product type\tPants" in page.inner_text("table.current")
        assert "The model's probabilities (v2)" in page.inner_text("main")
        page.goto(url + "/?queue=all&source=human")
        assert page.locator("li.card").evaluate_all("cs => cs.map(c => c.dataset.item)") == ["d2"]
    finally:
        stop([server])
    served = web_log.read_text()
    assert "GET /item?id=d2" in served  # the access log is there, and holds no secret
    assert SECRET not in served and PASSWORD not in served
