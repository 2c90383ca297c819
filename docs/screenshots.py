"""The README's pictures of the review page and of a model comparison, from a real run on
`make demo`'s catalogue. Not a test.

    make demo && .venv/bin/python docs/screenshots.py     # writes docs/review-*.png,
                                                          # docs/compare-heatmap.png

On the demo's SQLite database (the demo model active, its 48 tags): a reviewer labels the
first 8 items with the catalogue's true values (`tagger labels set`), a second model is
trained on the demo's training set with another seed, registered and
compared with the active one in-process (`tagger model compare --in-process`, whose heat
map is kept), then `tagger web` serves the page and Debian's chromium, driven by
Playwright, logs in and photographs the review queue and the first item in it. The login
is throttled through Redis, so Redis must answer at TAGGER_BROKER_URL (by default the
local one the tests use).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(env: dict[str, str], *args: str) -> str:
    print("$", " ".join(args), flush=True)
    done = subprocess.run(args, env=env, text=True, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({done.returncode}):\n{done.stderr}")
    print(done.stdout, end="", flush=True)
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=ROOT / "demo")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    demo = args.demo.resolve()
    db = demo / "tagger.db"
    if not db.exists():
        raise SystemExit(f"no {db}: run `make demo` first")
    work = Path(tempfile.mkdtemp(prefix="tagger-shots-"))
    users = work / "users"
    env = {
        **os.environ,
        "TAGGER_DATABASE_URL": f"sqlite:///{db}",
        "TAGGER_WEB_USERS_FILE": str(users),
        "TAGGER_WEB_SECRET": "screenshots-only",
        "TAGGER_METRICS_PORT": "0",
    }
    tagger = str(BIN / "tagger")

    # A reviewer's corrections: the catalogue's truth for its first 8 items.
    with open(demo / "catalogue" / "labels_front.csv", newline="") as f:
        truth = list(csv.DictReader(f))[:8]
    for row in truth:
        run(env, tagger, "labels", "set", row["image_id"], "--by", "ana",
            "--product-type", row["product_type"], "--gender", row["gender"])  # fmt: skip

    model2 = demo / "model2"
    if not model2.exists():
        run(env, str(BIN / "python"), "-m", "train", "fit",
            "--data", str(demo / "train" / "labels_front.csv"), "--out", str(model2),
            "--image-size", "64", "--backbone-weights", "none", "--epochs", "10",
            "--learning-rate", "0.003", "--lr-schedule", "cosine", "--seed", "11",
            "--name", "demo2")  # fmt: skip
    run(env, tagger, "model", "register", str(model2), "--version", "demo2")
    run(env, tagger, "model", "compare", "demo2", "--in-process", "--out", str(work))
    (heatmap,) = work.glob("*.png")
    shutil.copy(heatmap, args.out / "compare-heatmap.png")

    subprocess.run(
        [tagger, "web", "add-user", "ana", "--password-stdin"],
        input="demo-password\n",
        env=env,
        text=True,
        check=True,
    )
    port = free_port()
    web = subprocess.Popen([tagger, "web", "--port", str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=2).read()
                break
            except OSError:
                time.sleep(0.1)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base + "/login")
            page.fill("input[name=name]", "ana")
            page.fill("input[name=password]", "demo-password")
            page.click("form.login button[type=submit]")
            # networkidle: the grid's images have arrived before the picture is taken
            page.goto(base + "/", wait_until="networkidle")
            page.screenshot(path=str(args.out / "review-grid.png"))
            page.locator(".card a").first.click()
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(args.out / "review-item.png"), full_page=True)
            browser.close()
    finally:
        web.terminate()
        web.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}/review-grid.png, review-item.png, compare-heatmap.png")


if __name__ == "__main__":
    main()
