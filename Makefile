# Developer and CI entry points. `make test` is the one test command (README, .ci/run).
PY ?= .venv/bin/python
PYTEST = $(PY) -m pytest -q -p no:cacheprovider --durations=30
ARGS ?=

.PHONY: test lint demo interop install dev setup flakes man faults dist

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

# The netns/vtund tests N times over (default 3): names every test that did not pass each
# time (flaky) or never did; exit 1 if any.  make flakes N=5 ARGS="-k multi"
N ?= 3
flakes: setup
	@VT_REQUIRE_NETNS=1 $(PY) scripts/flakes.py -n $(N) -- $(ARGS)

# The fault suite at full size (tests/faults/run.py; needs root): handshake fuzz, frame
# fuzz, kill -9, SIGSTOP, loss, broken-config SIGHUPs, churn; vt and vtund. Under 15 min;
# writes bench/results/faults-<stamp>.md and .json. `make test` runs its CI sizes
# (tests/faults/test_faults.py). Smoke run: make faults ARGS=--quick
faults: setup
	@$(PY) tests/faults/run.py $(ARGS)

lint:
	.venv/bin/ruff check .

# The man pages (man/), after a command, an option or a config keyword changed.
man:
	$(PY) -m vtcore.manpages man

# Wheels and sdists of every distribution (vtcore with its man pages and systemd units as
# data files, vt-api, vt-devices, the plugins) into dist/; tests/test_packaging.py installs
# them into a clean venv and with pipx.  DIST=elsewhere to change the directory.
DIST ?= dist
DISTRIBUTIONS = . api devices $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
dist:
	@mkdir -p $(DIST)
	@for d in $(DISTRIBUTIONS); do \
	  $(PY) -m build --no-isolation --outdir $(abspath $(DIST)) $$d >/dev/null || exit 1; \
	done
	@ls $(DIST)

demo: setup
	$(PY) -m vtcore.demo

# Full interop matrix (vt <-> vtund, vt <-> vt in network namespaces; needs root):
# every transport x type for every compression/cipher setting, iperf3 both ways.
# tests/INTEROP.md explains the matrix; `make test` runs its CI-sized subset.
INTEROP_TESTS = tests/test_interop_tunnel.py tests/test_interop_modules.py
interop: setup
	@VT_INTEROP_FULL=1 VT_REQUIRE_NETNS=1 $(PYTEST) $(INTEROP_TESTS) $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make interop: no tests collected (exit 5) -> failure"; fi; \
	exit $$rc

# vt against vtund (and raw veth, OpenVPN) in network namespaces; needs root.
# Results: bench/results/latest.md. Smoke run (< 2 min): make bench ARGS=--quick
.PHONY: bench
bench: setup
	@dpkg-query -W -f='$${Status}' openvpn 2>/dev/null | grep -q "install ok installed" || \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openvpn
	@$(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install -q 'matplotlib>=3.7'
	$(PY) bench/run.py $(ARGS)
