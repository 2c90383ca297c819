# The README's commands. `make demo` runs the main job on the embedded default (SQLite,
# local files, no servers); `make test` runs the tests (needs Postgres and Redis on
# 127.0.0.1, see README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= demo

.PHONY: venv browser demo test test-fast lint format clean

$(BIN)/tagger: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/tagger

# Debian's chromium for tests/test_web_browser.py (Playwright drives it; `playwright install`
# would download a browser from a CDN). Needs root; `make test` tolerates a failure here and
# the browser test then skips, saying why.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
		apt-get install -y --no-install-recommends chromium \
		|| { apt-get update && apt-get install -y --no-install-recommends chromium; }; }
	@test -x $(CHROMIUM) && echo "browser: $(CHROMIUM)"

demo: venv
	rm -rf $(DEMO)
	$(BIN)/python -m train synthetic --out $(DEMO)/train --n 408 --seed 7 --image-size 64
	$(BIN)/python -m train fit --data $(DEMO)/train/labels_front.csv --out $(DEMO)/model \
		--image-size 64 --backbone-weights none --epochs 10 --learning-rate 0.003 --lr-schedule cosine \
		--name demo
	$(BIN)/python -m train synthetic --out $(DEMO)/catalogue --n 48 --seed 8 --image-size 64
	TAGGER_DATABASE_URL=sqlite:///$(DEMO)/tagger.db $(BIN)/tagger run $(DEMO)/catalogue/catalogue.csv --model $(DEMO)/model
	@# the item ids are the labels file's image ids: count the tags that match them
	TAGGER_DATABASE_URL=sqlite:///$(DEMO)/tagger.db $(BIN)/tagger tags --format csv \
		| $(BIN)/python -m train score-tags - --labels $(DEMO)/catalogue/labels_front.csv

test: venv
	-@$(MAKE) --no-print-directory browser
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

test-fast: venv
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not slow"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache build *.egg-info
