# konlease developer entry points. `make test` is what CI runs (.ci/run) and
# what README tells contributors to run. `make help` lists the targets.
#
# Binaries go to bin/. Heavy things are built from nested Go modules so the
# library's go.mod stays small: e2e/controlplane (kube-apiserver and etcd for
# the e2e tests) and tools (staticcheck, kind). Each is rebuilt only when
# missing or older than its module's go.mod/go.sum.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build
MAKEFLAGS += --no-builtin-rules

GO ?= go
BIN := $(CURDIR)/bin
UNIT_TIMEOUT ?= 10m
E2E_TIMEOUT ?= 20m

CONTROLPLANE_MOD := e2e/controlplane/go.mod e2e/controlplane/go.sum
TOOLS_MOD := tools/go.mod tools/go.sum
CONTROLPLANE_BINS := $(BIN)/kube-apiserver $(BIN)/etcd

# The e2e suite never reads KUBECONFIG (see e2e/harness); dropping it from the
# environment also keeps CLIs started by tests from finding an ambient one.
E2E_TEST := env -u KUBECONFIG $(GO) test -race -tags e2e -count=1 -timeout $(E2E_TIMEOUT) ./e2e/...

.PHONY: help build controlplane tools unit fuzz e2e test lint up down status e2e-kind e2e-cluster demo image image-docker node node-packages node-images bench bench-build bench-quick chaos soak clean

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# The release koncli reports (koncli version), stamped by make build as by
# make image: the git description of the checkout, or VERSION=... given.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
VERSION_LDFLAGS := -X github.com/konlease/konlease/cmd/koncli/app.version=$(VERSION)

build: ## compile everything; binaries of ./cmd/... into bin/, version-stamped
	$(GO) build ./...
	@if [ -n "$$(find cmd -name '*.go' -print -quit 2>/dev/null)" ]; then \
		echo "$(GO) build -ldflags \"$(VERSION_LDFLAGS)\" -o $(BIN)/ ./cmd/..."; \
		$(GO) build -ldflags "$(VERSION_LDFLAGS)" -o $(BIN)/ ./cmd/...; \
	fi
	@# Invoked as kubectl-mutex, koncli is the kubectl plugin `kubectl mutex`;
	@# as kubectl_complete-mutex, it completes `kubectl mutex ...` for kubectl.
	@if [ -d cmd/koncli ]; then \
		ln -sfn koncli $(BIN)/kubectl-mutex; ln -sfn koncli $(BIN)/kubectl_complete-mutex; \
	fi

controlplane: $(CONTROLPLANE_BINS) ## build bin/kube-apiserver and bin/etcd (first time: minutes)

# The version stamps make /version report the real release (client-go and
# kubectl compare it); they are read from the nested module's go.mod.
# $(call build-k8s,CMD) builds k8s.io/kubernetes/cmd/CMD into $@.
define build-k8s
	cd e2e/controlplane && \
	v=$$($(GO) list -m -f '{{.Version}}' k8s.io/kubernetes) && \
	ver=$${v#v} && major=$${ver%%.*} && rest=$${ver#*.} && minor=$${rest%%.*} && \
	$(GO) build -trimpath -o $@ -ldflags "-s -w \
		-X k8s.io/component-base/version.gitVersion=$$v \
		-X k8s.io/component-base/version.gitMajor=$$major \
		-X k8s.io/component-base/version.gitMinor=$$minor \
		-X k8s.io/component-base/version.gitTreeState=clean" \
		k8s.io/kubernetes/cmd/$(1)
endef

$(BIN)/kube-apiserver: $(CONTROLPLANE_MOD)
	$(call build-k8s,kube-apiserver)

# etcd's main package is the module root go.etcd.io/etcd/server/v3.
$(BIN)/etcd: $(CONTROLPLANE_MOD)
	cd e2e/controlplane && $(GO) build -trimpath -o $@ -ldflags "-s -w" go.etcd.io/etcd/server/v3

tools: $(BIN)/staticcheck $(BIN)/kind ## build the developer tools into bin/

$(BIN)/staticcheck: $(TOOLS_MOD)
	cd tools && $(GO) build -o $@ honnef.co/go/tools/cmd/staticcheck

$(BIN)/kind: $(TOOLS_MOD)
	cd tools && $(GO) build -o $@ sigs.k8s.io/kind

unit: ## unit tests with the race detector
	$(GO) test -race -timeout $(UNIT_TIMEOUT) ./...
	cd tools/mkimage && $(GO) test -race -timeout $(UNIT_TIMEOUT) ./...
	cd bench && $(GO) test -race -timeout $(UNIT_TIMEOUT) ./...

# As root, the e2e suite includes the node tests (e2e/node), which need the
# node; elsewhere they skip, saying why.
NODE_IF_ROOT := $(if $(filter 0,$(shell id -u)),node)

e2e: controlplane $(NODE_IF_ROOT) ## e2e tests against a local etcd + kube-apiserver (and, as root, a node running pods)
	KONLEASE_E2E_KUBECONFIG= $(E2E_TEST)

test: lint unit fuzz e2e ## everything CI checks: lint, unit, a short fuzz run, e2e

# Each fuzz target runs for FUZZTIME from its committed seed corpus (go test
# -fuzz takes one target at a time, hence one line each).
FUZZTIME ?= 10s
fuzz: ## fuzz the TTL, Date and Lease-annotation parsers for FUZZTIME each
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./ttl/
	$(GO) test -run '^$$' -fuzz '^FuzzParseDate$$' -fuzztime $(FUZZTIME) ./ttl/
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./lock/

lint: $(BIN)/staticcheck ## gofmt, go vet and staticcheck, with and without the e2e tag
	@unformatted=$$(gofmt -l .); \
	if [ -n "$$unformatted" ]; then echo "gofmt -w needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./...
	$(BIN)/staticcheck ./...
	$(BIN)/staticcheck -tags e2e ./...
	cd bench && $(GO) vet ./... && $(BIN)/staticcheck ./...
	cd tools/mkimage && $(GO) vet ./... && $(BIN)/staticcheck ./...
	cd tools/krew && $(GO) vet ./... && $(BIN)/staticcheck ./...

up: controlplane $(if $(NODE),node) ## start a local control plane in the background (NODE=1: with a node, as root; HA=1: 3 etcd members, 2 API servers, a balancer); prints export KUBECONFIG=...
	@$(GO) run ./e2e/cmd/controlplane up $(if $(NODE),--node)$(if $(HA),--ha)

status: ## show the control plane started by make up
	@$(GO) run ./e2e/cmd/controlplane status

down: ## stop the control plane started by make up and remove its state
	@$(GO) run ./e2e/cmd/controlplane down

e2e-kind: $(BIN)/kind node-images ## e2e tests against a throwaway kind cluster (needs Docker), node tests included
	KIND=$(BIN)/kind IMAGES="$(IMAGES)/koncli.tar $(IMAGES)/e2e-app.tar $(IMAGES)/example-with.tar $(IMAGES)/pause.tar" e2e/kind/run.sh $(E2E_TEST)

# The cluster must be named on the command line: an exported KUBECONFIG (a
# developer's everyday, maybe production, context) is never used implicitly.
e2e-cluster: ## e2e tests against an existing cluster: make e2e-cluster KUBECONFIG=path
ifneq ($(origin KUBECONFIG),command line)
	$(error usage: make e2e-cluster KUBECONFIG=/path/to/kubeconfig (on the command line; an exported KUBECONFIG is ignored on purpose))
endif
	KONLEASE_E2E_KUBECONFIG="$(abspath $(KUBECONFIG))" $(E2E_TEST)

# The demo starts its own control plane (not the one of make up) and stops
# it on every way out, Ctrl-C included; see examples/demo.
demo: build controlplane ## workers contending for one mutex through koncli, on a throwaway local control plane
	@env -u KUBECONFIG $(GO) run ./examples/demo --koncli $(BIN)/koncli

# `make image` builds the koncli image offline, with no container engine and
# nothing pulled: a static koncli on an empty base, with the CA certificates
# (CA_CERTS) and the nonroot user 65532 that the Dockerfile's distroless
# base provides, the same entrypoint and user. tools/mkimage (a nested
# module: go-containerregistry stays out of the library's go.mod) writes it
# as bin/images/koncli.tar in the docker save format; it is loaded into
# Docker when a Docker daemon answers. `make image-docker` builds the
# Dockerfile instead (BuildKit; pulls golang and distroless).
IMAGE ?= konlease/koncli:dev
IMAGES := $(BIN)/images
IMAGE_ROOT := $(BIN)/image-root
MKIMAGE := $(BIN)/mkimage
CA_CERTS ?= /etc/ssl/certs/ca-certificates.crt
STATIC_GO_BUILD := CGO_ENABLED=0 $(GO) build -trimpath

$(MKIMAGE): tools/mkimage/go.mod tools/mkimage/go.sum tools/mkimage/main.go
	cd tools/mkimage && $(GO) build -o $@ .

image: $(MKIMAGE) ## build the koncli image offline into bin/images/koncli.tar (docker load-ed if Docker runs): make image [IMAGE=name:tag]
	@mkdir -p $(IMAGES) $(IMAGE_ROOT)
	$(STATIC_GO_BUILD) -ldflags "-s -w $(VERSION_LDFLAGS)" \
		-o $(IMAGE_ROOT)/koncli ./cmd/koncli
	$(MKIMAGE) -o $(IMAGES)/koncli.tar -tag $(IMAGE) -nonroot -ca-certs $(CA_CERTS) \
		-add $(IMAGE_ROOT)/koncli=/usr/local/bin/koncli -entrypoint /usr/local/bin/koncli
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then docker load -i $(IMAGES)/koncli.tar; \
	else echo "make image: no Docker daemon; load $(IMAGES)/koncli.tar with docker load -i, ctr images import or kind load image-archive"; fi

image-docker: ## build the Dockerfile with Docker (BuildKit; pulls golang and distroless): make image-docker [IMAGE=name:tag]
	@command -v docker >/dev/null 2>&1 || { \
		echo "make image-docker needs Docker: no docker command on PATH (make image needs none)."; exit 1; }
	@docker info >/dev/null 2>&1 || { \
		echo "make image-docker needs Docker: the docker command is here but no Docker daemon answers (docker info fails). Start it, or point DOCKER_HOST at one."; exit 1; }
	DOCKER_BUILDKIT=1 docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) .

# The local node of the e2e harness (harness.NodeOptions; make up NODE=1):
# kubelet, kube-controller-manager and kube-scheduler built from
# e2e/controlplane like kube-apiserver; the sandbox init and the pause
# program are our own; containerd, runc and the CNI plugins are Debian's
# (e2e/node/packages.sh). The images are built like `make image`: the pause
# image, the app image of the node tests (the koncli image plus their
# stand-ins for ./migrate, run-daily-job and maintain-node, and busybox's sh for the
# lock/unlock CronJob's script), and examples/with.
NODE_K8S_BINS := $(BIN)/kubelet $(BIN)/kube-controller-manager $(BIN)/kube-scheduler
BUSYBOX ?= /bin/busybox

node: node-packages $(NODE_K8S_BINS) node-images ## the local node that runs pods: binaries, images, OS packages (as root)
	$(STATIC_GO_BUILD) -o $(BIN)/nodesandbox ./e2e/cmd/nodesandbox

node-packages: ## install what the node needs from the OS (containerd, runc, CNI plugins, busybox-static) when missing
	e2e/node/packages.sh

$(NODE_K8S_BINS): $(CONTROLPLANE_MOD)
	$(call build-k8s,$(@F))

node-images: image ## the images of the node tests into bin/images
	$(STATIC_GO_BUILD) -ldflags "-s -w" -o $(IMAGE_ROOT)/ ./e2e/cmd/pause ./e2e/node/workload ./examples/with
	$(MKIMAGE) -o $(IMAGES)/pause.tar -tag konlease.test/pause:v1 \
		-add $(IMAGE_ROOT)/pause=/pause -entrypoint /pause -user 65535:65535
	$(MKIMAGE) -o $(IMAGES)/e2e-app.tar -tag konlease.test/e2e-app:v1 -base $(IMAGES)/koncli.tar -workdir /app \
		-add $(IMAGE_ROOT)/workload=/app/migrate -add $(IMAGE_ROOT)/workload=/usr/local/bin/run-daily-job \
		-add $(IMAGE_ROOT)/workload=/usr/local/bin/maintain-node -add $(BUSYBOX)=/bin/sh
	$(MKIMAGE) -o $(IMAGES)/example-with.tar -tag konlease.test/example-with:v1 -nonroot \
		-add $(IMAGE_ROOT)/with=/usr/local/bin/with -entrypoint /usr/local/bin/with

# The benchmark is a nested module (bench/) so that its baselines (etcd's
# client, leader election) never enter the library's go.mod. It starts its
# own control plane, like the e2e suite.
BENCH := $(BIN)/konlease-bench
bench-build:
	cd bench && $(GO) build -o $(BENCH) .

bench: controlplane bench-build ## konlease vs floors, leader election and etcd's mutex; writes docs/benchmarks.md (~5 min)
	@mkdir -p docs
	env -u KUBECONFIG $(BENCH) -markdown docs/benchmarks.md -json docs/benchmarks.json

bench-quick: controlplane bench-build ## a shorter benchmark for development (under a minute); writes nothing
	env -u KUBECONFIG $(BENCH) -quick

# The chaos checker starts its own control plane (it kills and restarts
# its components) and a proxy in front of it; see e2e/chaos and
# docs/reliability.md. CHAOS_SEED=0 picks a seed from the time; the run
# prints it. A short run is part of the e2e suite (e2e/chaos_test.go).
# CHAOS_TOPOLOGY=ha runs it on the HA topology of make up HA=1 (three etcd
# members, two API servers behind a round-robin balancer), with its own
# faults besides (etcd leader and follower crashes, a member partitioned
# from its peers, each API server crashed in turn, clients moved).
CHAOS_DURATION ?= 3m
CHAOS_SEED ?= 0
CHAOS_TOPOLOGY ?= single
CHAOS_FLAGS ?=
chaos: build controlplane ## workers contending under faults for CHAOS_DURATION (3m; CHAOS_TOPOLOGY=ha: on 3 etcd members, 2 API servers); fails on any mutual-exclusion violation
	env -u KUBECONFIG -u KONLEASE_E2E_KUBECONFIG $(GO) run ./e2e/chaos -koncli $(BIN)/koncli \
		-duration $(CHAOS_DURATION) -seed $(CHAOS_SEED) -topology $(CHAOS_TOPOLOGY) $(CHAOS_FLAGS)

# The soak starts its own control plane (it reads its API server's process)
# and puts it under sustained load from SOAK_WORKERS processes; see
# e2e/soak and docs/soak.md. SOAK_FLAGS scales it (-held, -waiters, ...).
# A one-minute, smaller run is part of the e2e suite (e2e/soak_test.go).
SOAK_DURATION ?= 5m
SOAK_WORKERS ?= 4
SOAK_FLAGS ?=
soak: controlplane ## sustained load on one API server for SOAK_DURATION (5m): requests/s, CPU, memory, heap, goroutines, handoff latency; fails on a lost or duplicated hold or a leak
	env -u KUBECONFIG -u KONLEASE_E2E_KUBECONFIG $(GO) run ./e2e/soak \
		-duration $(SOAK_DURATION) -workers $(SOAK_WORKERS) $(SOAK_FLAGS)

clean: ## stop a control plane from make up; remove bin/ and .controlplane/
	$(GO) run ./e2e/cmd/controlplane down
	rm -rf bin .controlplane

# `make release` builds the koncli release with GoReleaser (.goreleaser.yaml)
# into bin/dist: static (CGO_ENABLED=0) koncli binaries for linux and darwin
# on amd64 and arm64, a tar.gz of each, checksums.txt, and the krew manifest
# of `kubectl mutex` (bin/dist/krew/mutex.yaml). It publishes nothing and
# needs no network once the modules are in the module cache. koncli version
# prints $(VERSION), as after make build. GoReleaser is built from the nested
# module tools/release and krew's validate-krew-manifest from tools/krew
# (its old client-go must not meet GoReleaser's), so that neither enters the
# library's go.mod. The release is then checked: krew's validation of the
# manifest, and tools/krew's tests of the archives it names.
.PHONY: release
RELEASE_MOD := tools/release/go.mod tools/release/go.sum
KREW_MOD := tools/krew/go.mod tools/krew/go.sum
GORELEASER := $(BIN)/goreleaser
KREW_VALIDATE := $(BIN)/validate-krew-manifest
DIST := $(BIN)/dist
# The snapshot's commit, for its semver version: g, the short hash, and
# .dirty when tracked files have changes not committed.
RELEASE_COMMIT = g$(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD 2>/dev/null || echo .dirty)

$(GORELEASER): $(RELEASE_MOD)
	cd tools/release && $(GO) build -o $@ github.com/goreleaser/goreleaser/v2

$(KREW_VALIDATE): $(KREW_MOD)
	cd tools/krew && $(GO) build -o $@ sigs.k8s.io/krew/cmd/validate-krew-manifest

release: $(GORELEASER) $(KREW_VALIDATE) ## koncli for linux and darwin (amd64, arm64): archives, checksums, krew manifest into bin/dist; publishes nothing
	KONCLI_VERSION=$(VERSION) KONCLI_COMMIT=$(RELEASE_COMMIT) $(GORELEASER) release --snapshot --clean
	$(KREW_VALIDATE) -manifest $(DIST)/krew/mutex.yaml -skip-install
	cd tools/krew && KONLEASE_RELEASE_DIST=$(DIST) KREW_VALIDATE=$(KREW_VALIDATE) KONCLI_VERSION=$(VERSION) $(GO) test -count=1 ./...
	@ls -l $(DIST)/*.tar.gz $(DIST)/checksums.txt $(DIST)/krew/mutex.yaml
