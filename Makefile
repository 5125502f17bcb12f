# Two commands do all the set-up on a fresh machine (see README):
#   make demo   - create .venv if missing, install, run `medcap demo` on synthetic data
#   make test   - create .venv if missing, install, run the default test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch/torchvision: a pinned pair that installs from this machine's local wheels; elsewhere
# pip fetches it (pyproject.toml only declares ranges, so users can take newer releases).
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint test-slow test-all install browser clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e '.[app,dicom,dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/medcap demo

# The browser test drives Debian's chromium. As root with apt-get (CI, these machines) it
# is installed when missing; elsewhere the browser test skips and says how to install it.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "could not install chromium: the browser test will be skipped"

# Style (ruff: pycodestyle, pyflakes, isort, bugbear) and the import contract (import-linter:
# layers, no cycles; both configured in pyproject.toml). `make test` runs it before pytest.
lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports

test: install browser lint
	$(PY) -m pytest -q -p no:cacheprovider --timeout=600

test-slow: install
	$(PY) -m pytest -q -p no:cacheprovider -m slow --timeout=3600

test-all: install
	$(PY) -m pytest -q -p no:cacheprovider -m '' --timeout=3600

clean:
	rm -rf medcap-demo synth-data .pytest_cache
