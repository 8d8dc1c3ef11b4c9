# Every target goes through tools/harness.py, which sets up what it needs first.
PYTHON ?= python3

.PHONY: test setup engine images lint unit molecule

test:  ## setup + engine + images, then lint, unit tests and every Molecule scenario
	$(PYTHON) tools/harness.py test

setup:  ## .venv with the pinned toolchain (no-op when up to date)
	$(PYTHON) tools/harness.py setup

engine:  ## a Docker engine that answers (installed/started only when needed, as root)
	$(PYTHON) tools/harness.py engine

images:  ## the systemd test images (rebuilt only when their recipe changes)
	$(PYTHON) tools/harness.py images

lint:  ## yamllint + ansible-lint (production profile)
	$(PYTHON) tools/harness.py lint

unit:  ## pytest unit tests, no containers
	$(PYTHON) tools/harness.py unit

molecule:  ## one or more scenarios: make molecule SCENARIO="supervisor"
	$(PYTHON) tools/harness.py molecule $(SCENARIO)
