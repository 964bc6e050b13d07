# layerlink: `make run` serves the webhook locally; `make test` runs every test.
CARGO ?= cargo
CONFIG ?= examples/config.yaml

.PHONY: build run certs test test-unit graph lint e2e bench soak fuzz manifests image dist clean-certs

build:
	$(CARGO) build --release --bin layerlink

## Dev certificates for localhost/127.0.0.1 in certs/ (kept if present).
certs: certs/tls.crt
certs/tls.crt:
	$(CARGO) run --quiet --release --bin layerlink -- certs --out certs --dns localhost --dns 127.0.0.1 >/dev/null

## Serve the webhook with generated dev certs and an in-memory cache.
run: build certs
	./target/release/layerlink serve --config $(CONFIG)

## Unit, integration (real registry) and manifest tests.
test:
	hack/test-deps.sh
	$(CARGO) test --lib --bins --tests --no-fail-fast

## Unit and property tests only: no root, no network, no registry (a quick loop while coding).
test-unit:
	$(CARGO) test --lib --bins --test properties

## The library's modules form no import cycle (prints who uses whom).
graph:
	python3 hack/module-graph.py

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

## End-to-end against a real kube-apiserver and etcd (built from Debian's packages, cached).
e2e:
	hack/test-deps.sh
	bash tests/e2e/run.sh

## layerlink against the floor webhook: throughput, latency at a fixed rate, the cold path, cache memory.
bench:
	hack/test-deps.sh
	$(CARGO) bench --bench webhook

## 10 minutes at a fixed rate with cached, uncached, not-found and invalid reviews while the
## registry restarts twice (SOAK_SECS, SOAK_RATE).
soak: build
	hack/test-deps.sh
	$(CARGO) bench --bench soak

## Each cargo-fuzz target for FUZZ_SECS seconds (default 60); crashes are saved under fuzz/artifacts.
FUZZ_SECS ?= 60
fuzz:
	hack/fuzz.sh $(FUZZ_SECS)

## Render an install file per overlay into dist/ with `layerlink install` (self-signed ones with a
## freshly generated certificate; nothing is written into manifests/).
manifests:
	$(CARGO) build --quiet --release --bin layerlink
	mkdir -p dist
	./target/release/layerlink install > dist/layerlink-self-signed.yaml
	./target/release/layerlink install --certs cert-manager > dist/layerlink-cert-manager.yaml
	./target/release/layerlink install --mode cluster-wide > dist/layerlink-cluster-wide.yaml
	./target/release/layerlink install --mode audit-only > dist/layerlink-audit-only.yaml

## OCI image layout in dist/image without a container engine; REGISTRY=host:port pushes it.
image:
	hack/image.sh

## Release artifacts in dist/: static binaries (musl where available), kubectl-layerlink,
## install-<mode>.yaml, the OCI image layout and SHA256SUMS; then runs the binaries in an empty
## chroot (hack/dist-check.sh, needs root).
dist:
	hack/dist.sh

clean-certs:
	rm -f certs/ca.crt certs/tls.crt certs/tls.key
