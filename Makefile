# The two commands a new user needs: `make demo` and `make test`. Both install what is
# missing first (scripts/setup.sh) and need root (XDP, AF_XDP and network namespaces).
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: demo test bench bench-publish pathcost setup build lint unit lab clean-lab

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --workspace

demo: build
	@bash scripts/demo.sh

# Every shell script under scripts/, and the CI entry point, for shellcheck in `lint`.
SHELL_SCRIPTS = $(sort $(shell find scripts -type f -name '*.sh')) .ci/run

lint: setup
	shellcheck $(SHELL_SCRIPTS)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: lint
	bash scripts/test-summary.sh
	@echo
	bash scripts/pathcost.sh

# Instructions per packet on each datapath path (callgrind; exact, so `make test` prints it
# as a report). `scripts/pathcost.sh --publish` also writes the table into
# docs/benchmarks.md.
pathcost: setup
	bash scripts/pathcost.sh

# The end-to-end benchmark: xlb against the AF_XDP ceiling and nftables, one load-balancer
# core each, pktgen against trafgen, on the netns lab (results in target/bench/). Not part of
# `make test`; about 5 minutes on 2 cores.
bench: build
	@bash scripts/setup.sh bench
	python3 bench/harness.py $(BENCH_ARGS)

# The same run, published: it also rewrites docs/benchmarks.md and docs/bench.svg (keeping
# the "Instructions per packet" section that scripts/pathcost.sh fills). Commit both.
bench-publish: build
	@bash scripts/setup.sh bench
	python3 bench/harness.py --publish $(BENCH_ARGS)
	bash scripts/pathcost.sh --publish

# Removes lab namespaces left behind by a killed test run (names start with xl-).
clean-lab:
	@for ns in $$(ip netns list | awk '/^xl-/{print $$1}'); do ip netns del $$ns; done
