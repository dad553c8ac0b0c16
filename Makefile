# The two commands of the README: `make run` and `make test`.
CARGO ?= cargo
CONFIG ?= connbeat.yml

.PHONY: run test build release lint clean

## Installs what is missing, builds, and runs the agent on connbeat.yml (console output).
run:
	@scripts/install-deps.sh run
	$(CARGO) build --release
	./target/release/connbeat -c $(CONFIG) -e

## Installs what is missing (Debian packages, test servers) and runs the whole test suite.
test:
	@scripts/install-deps.sh test
	tests/services/tansu.sh build
	$(CARGO) build --all-targets
	$(CARGO) test --all-targets --no-fail-fast

## Formatting and lints, as CI checks them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

build:
	$(CARGO) build

release:
	$(CARGO) build --release

clean:
	$(CARGO) clean
