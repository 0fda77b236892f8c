# The two commands a new user needs: `make demo` (install everything, train Pong on this machine)
# and `make test` (everything CI runs). Caches live under ~/.cache/rljob so a fresh clone reuses them.
SHELL := /bin/bash
PY := .venv/bin/python
RLJOB := .venv/bin/rljob
export RLJOB_CACHE ?= $(HOME)/.cache/rljob
# Unit and integration tests run in this many pytest-xdist workers, each with its own control plane and operator:
# the integration tests wait on the API server and the operator about half the time (2 cores: ~47% idle with one).
TEST_WORKERS ?= 2

.PHONY: help venv cluster-bins test unit-integration unit integration lint crd demo dev-cluster e2e-cluster \
	e2e-prepare e2e-prereqs e2e-bins e2e-images e2e-release e2e-preload e2e clean

help:
	@echo "make demo          install everything and train Pong on this machine (CPU, bounded time)"
	@echo "make test          lint + unit + integration (real API server) + end-to-end (two real nodes) tests"
	@echo "make unit          unit tests only (no cluster, about a minute)"
	@echo "make integration   integration tests against a real local control plane (builds it first)"
	@echo "make e2e           end-to-end tests on two real nodes (root, Docker's daemon, ~30 GB of disk);"
	@echo "                   make e2e REGISTRY=... KUBECONFIG=...: the same tests against your cluster"
	@echo "make lint          ruff over the package, the tests and the benchmarks"
	@echo "make images        build the operator and runtime images (hack/images.sh; REGISTRY=... PUSH=1 pushes, multi-arch)"
	@echo "make release       the wheel, the images and the chart package of this version (hack/release.sh)"
	@echo "make dev-cluster   a local control plane with fake nodes and the operator, in the foreground"
	@echo "make crd           regenerate crds/ and the chart's copy from the API models"

venv:
	@bash hack/python-env.sh

cluster-bins:
	@bash hack/cluster-bins.sh

lint: venv
	$(PY) -m ruff check operator tests benchmarks

crd: venv
	$(RLJOB) crd > crds/rltrainingjobs.rljob.dev.yaml
	$(RLJOB) crd --reference > docs/spec-reference.md
	@if [ -d charts/rljob/crds ]; then cp crds/rltrainingjobs.rljob.dev.yaml charts/rljob/crds/; fi

unit: venv
	$(PY) -m pytest tests/unit -q

integration: venv cluster-bins
	$(PY) -m pytest tests/integration -q -n $(TEST_WORKERS)

# The end-to-end tests need root, Docker's daemon (installed and started by hack/e2e-cluster.sh prereqs) and
# ~30 GB of disk. They run in a pytest run of their own (it moves into the node's network namespace), at the same
# time as the unit and integration tests once their binaries and images are ready: their pods mostly wait (about
# half of the CPU idles in them), and each run goes on when the other fails. What each step needs is built first, in
# TEST_JOBS parallel make jobs where one step does not need another: the control plane's Go builds (CPU) beside the
# Python environment, Debian's packages and the images (mostly downloads and disk); the e2e binaries and the images'
# import into the nodes beside the unit and integration tests. So each test's time limit covers the test alone.
# The two runs share the terminal: each line of theirs starts with the run's name. README.md has the figures.
TEST_JOBS ?= 4
test:
	@$(MAKE) --no-print-directory -k -j$(TEST_JOBS) unit-integration e2e REGISTRY= TAG_LINES=1

# $(call tagged,COMMAND,NAME): COMMAND, its output lines prefixed with [NAME] when TAG_LINES is set (make test).
tagged = $(if $(TAG_LINES),set -o pipefail; $(1) 2>&1 | sed -u 's/^/[$(2)] /',$(1))

unit-integration: venv cluster-bins lint
	$(call tagged,$(PY) -m pytest tests/unit tests/integration -q -n $(TEST_WORKERS),unit+integration)

demo: venv
	$(RLJOB) run -f examples/pong-local.yaml --max-duration $${DEMO_SECONDS:-600} --resume

dev-cluster: venv cluster-bins
	$(PY) -m tests.cluster

clean:
	rm -rf .venv .pytest_cache .ruff_cache runs build

# Images and the end-to-end cluster (images/README.md). `make e2e` needs root, Docker's daemon (started if
# installed), ~15 GB of disk; it installs missing Debian packages and builds what is missing, all cached.
# `make images` builds FROM a public Python image where a registry answers, else offline (IMAGE_BASE);
# REGISTRY=ghcr.io/you PUSH=1 pushes them (linux/amd64 and linux/arm64 from the public base).
.PHONY: images release
images:
	@bash hack/images.sh

# One version's wheel (dist/), images and chart package (dist/rljob-VERSION.tgz); PUSH=1 pushes the images and the
# chart (oci://$$REGISTRY). IMAGES=0 leaves the images out, DRY_RUN=1 prints their commands and the pushes.
release:
	@bash hack/release.sh

e2e-cluster: venv cluster-bins
	@bash hack/e2e-cluster.sh up

# Each step is skipped when its output is there (cached under $(RLJOB_CACHE)); `make -j4 e2e-prepare` runs them in
# parallel. The preload imports the operator and runtime images into both nodes' containerd (minutes for a changed
# runtime image, mostly disk), so the cluster the tests start finds them there.
e2e-prepare: e2e-prereqs e2e-bins e2e-images e2e-release e2e-preload

e2e-prereqs:
	@bash hack/e2e-cluster.sh prereqs

e2e-bins: cluster-bins
	@bash hack/e2e-cluster.sh bins

e2e-images: venv e2e-prereqs
	@bash hack/e2e-cluster.sh images

e2e-release: venv e2e-images
	@$(PY) -m tests.e2e.releases

e2e-preload: venv e2e-prereqs e2e-images
	@bash hack/e2e-cluster.sh preload

# `make e2e`: this machine's two real nodes. `make e2e REGISTRY=ghcr.io/you KUBECONFIG=~/.kube/config`: the same tests
# against your cluster, its nodes pulling REGISTRY/operator and REGISTRY/runtime (pushed by `REGISTRY=... PUSH=1
# make images`); the tests that read this machine's node skip. Needs kubectl and helm on PATH, a default
# StorageClass and a network plugin that enforces NetworkPolicies (tests/e2e/target.py).
ifeq ($(strip $(REGISTRY)),)
e2e: venv cluster-bins e2e-prepare
	$(call tagged,RLJOB_E2E=1 $(PY) -m pytest tests/e2e -v -p no:cacheprovider,e2e)
else
e2e: venv
	RLJOB_E2E=1 RLJOB_E2E_REGISTRY=$(REGISTRY) RLJOB_E2E_KUBECONFIG=$(KUBECONFIG) $(PY) -m pytest tests/e2e -v -p no:cacheprovider
endif
