# The two commands a new user needs: `make demo` and `make test`. Both install what is
# missing first (scripts/setup.sh) and need root (XDP, AF_XDP and network namespaces).
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: demo test fuzz bench bench-publish pathcost setup build lint unit lab clean-lab

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --workspace

demo: build
	@bash scripts/demo.sh

# Every shell script under scripts/, and the CI entry point, for shellcheck in `lint`.
SHELL_SCRIPTS = $(sort $(shell find scripts -type f -name '*.sh')) .ci/run

# fuzz/ is a crate outside the workspace (scripts/fuzz.sh builds it): its formatting is
# checked on its own.
lint: setup
	shellcheck $(SHELL_SCRIPTS)
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: lint
	bash scripts/test-summary.sh
	@echo
	bash scripts/fuzz.sh
	@echo
	bash scripts/pathcost.sh

# The fuzz targets of fuzz/ (any bytes as a frame, through the datapath, as a config file
# through what `xlb check` runs) on the stable toolchain, FUZZ_SECONDS each (default 55:
# about 3 minutes for the three, after a first build of about 6 minutes on 2 idle cores).
# A crash fails it with the reproducer's path and the stack (inputs in
# target/fuzz-artifacts/). `make test` runs it after the tests; `FUZZ_SECONDS=600 make fuzz`
# fuzzes longer.
fuzz: setup
	bash scripts/fuzz.sh

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
