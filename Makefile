# Developer and CI entry points. `make test` is the one test command (README, .ci/run).
PY ?= .venv/bin/python
PYTEST = $(PY) -m pytest -q -p no:cacheprovider
ARGS ?=

.PHONY: test lint demo interop install dev setup

# Debian packages (root) and the development venv; both idempotent.
setup:
	scripts/setup-system
	@[ -x .venv/bin/vt ] || scripts/dev-install

dev install:
	scripts/dev-install

# pytest exit 5 means "no tests collected": that is a failure here, never a pass.
test: setup
	@$(PYTEST) $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5) -> failure"; fi; \
	exit $$rc

lint:
	.venv/bin/ruff check .

demo: setup
	$(PY) -m vtcore.demo

# Interop matrix (vt <-> vtund in network namespaces); needs root. Placeholder: every
# vtund-marked test until the full matrix lands.
interop: setup
	@$(PYTEST) -m vtund $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make interop: no tests collected (exit 5) -> failure"; fi; \
	exit $$rc

# vt against vtund (and raw veth, OpenVPN) in network namespaces; needs root.
# Results: bench/results/latest.md. Smoke run (< 2 min): make bench ARGS=--quick
.PHONY: bench
bench: setup
	$(PY) bench/run.py $(ARGS)
