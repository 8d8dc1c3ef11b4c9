# Every target goes through tools/harness.py, which sets up what it needs first.
PYTHON ?= python3

.PHONY: test setup engine images lint unit molecule package demo demo-down bench

JOBS ?=
JOBS_ARG = $(if $(JOBS),-j $(JOBS))

test:  ## setup + engine + images, then lint, unit tests, every Molecule scenario and the package test, side by side (JOBS=N)
	$(PYTHON) tools/harness.py test $(JOBS_ARG)

setup:  ## .venv with the pinned toolchain (no-op when up to date)
	$(PYTHON) tools/harness.py setup

engine:  ## a Docker engine that answers (installed/started only when needed, as root)
	$(PYTHON) tools/harness.py engine

images:  ## the systemd test images (rebuilt only when their recipe changes)
	$(PYTHON) tools/harness.py images

lint:  ## yamllint, ansible-lint (production profile), ruff, ansible-test sanity on the built collection
	$(PYTHON) tools/harness.py lint

unit:  ## pytest unit tests, no containers
	$(PYTHON) tools/harness.py unit

molecule:  ## one or more scenarios, side by side: make molecule SCENARIO="supervisor certbot" (JOBS=N)
	$(PYTHON) tools/harness.py molecule $(JOBS_ARG) $(SCENARIO)

package:  ## build the collection, install it offline elsewhere, converge a container with its site playbook
	$(PYTHON) tools/harness.py package

demo:  ## the example site on a local systemd container, proven over HTTPS (run again: nothing changes)
	$(PYTHON) tools/harness.py demo

demo-down:  ## remove the demo container
	$(PYTHON) tools/harness.py demo-down

bench:  ## benchmark: the stacks against Django's own cost and the alternatives (docs/benchmarks/latest.md)
	$(PYTHON) bench/run.py $(BENCH_ARGS)
