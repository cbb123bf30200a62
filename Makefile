# Winston — every check and every local environment behind one target.
# `make test` is what CI runs (.ci/run); `make demo` is the guided tour.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

LOCAL      := $(CURDIR)/.local
CLUSTER    := $(LOCAL)/controlplane
KUBECONFIG_FILE := $(LOCAL)/kubeconfig
CARGO      ?= cargo

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: prereqs
prereqs: ## Check (and where possible install) what the build needs
	@scripts/prereqs

.PHONY: controlplane
controlplane: ## Build kube-apiserver + etcd from Go modules (cached in ~/.cache/winston)
	@tests/controlplane/build.sh >/dev/null

.PHONY: cluster-up
cluster-up: controlplane ## Start a local kube-apiserver + etcd; kubeconfig in .local/kubeconfig
	@if [ -f $(CLUSTER)/pids ] && kill -0 $$(head -n1 $(CLUSTER)/pids) 2>/dev/null; then \
	  echo "control plane already running (make cluster-down to stop)"; else \
	  rm -rf $(CLUSTER); tests/controlplane/up.sh $(CLUSTER) >/dev/null; fi
	@cp $(CLUSTER)/kubeconfig $(KUBECONFIG_FILE)
	@echo "export KUBECONFIG=$(KUBECONFIG_FILE)"

.PHONY: cluster-down
cluster-down: ## Stop the local control plane and remove its data
	@tests/controlplane/down.sh $(CLUSTER)
	@rm -f $(KUBECONFIG_FILE)

.PHONY: build
build: ## Build the winston binary (debug)
	$(CARGO) build

.PHONY: crds
crds: ## Regenerate crds/ from the Rust types (and their copies in the chart and manifests/)
	$(CARGO) run --quiet -- crds --out-dir crds
	@scripts/gen-manifests

.PHONY: fmt-check
fmt-check:
	$(CARGO) fmt --all -- --check

.PHONY: clippy
clippy:
	$(CARGO) clippy --all-targets -- -D warnings

.PHONY: deps-check
deps-check: ## Fail on a declared crate nothing uses (cargo-machete, built once and cached in ~/.cache/winston)
	@"$$(scripts/cargo-machete-path)"

.PHONY: crds-check
crds-check: ## Fail when crds/ differs from `winston crds`
	@tmp=$$(mktemp -d); $(CARGO) run --quiet -- crds --out-dir $$tmp; \
	  if ! diff -r $$tmp crds >/dev/null; then diff -r $$tmp crds || true; rm -rf $$tmp; \
	  echo "crds/ is stale: run 'make crds' and commit"; exit 1; fi; rm -rf $$tmp; echo "crds/ is up to date"

.PHONY: helm
helm: ## Build Helm from its Go module unless installed (cached in ~/.cache/winston)
	@scripts/helm-path >/dev/null

.PHONY: helm-lint
helm-lint: helm ## helm lint --strict the chart (values.schema.json included), defaults and every option on
	@"$$(scripts/helm-path)" lint --strict charts/winston
	@"$$(scripts/helm-path)" lint --strict charts/winston --set controller.watchNamespace=tenants \
	  --set proxy.autoscaling.enabled=true --set serviceMonitor.enabled=true --set platforms.baseUrls.neon=http://emulator:8081 \
	  --set platforms.vercelTeamId=team_1 --set 'controller.frontendGithubOrgs={acme,bella-bistro}' \
	  --set 'controller.outboundAllowCidrs={127.0.0.0/8}'
	@"$$(scripts/helm-path)" lint --strict charts/winston --set 'controller.tenantNamespaces={shop-a,shop-b}'
	@"$$(scripts/helm-path)" lint --strict charts/winston --set intake.enabled=true --set intake.prices.price_1=starter \
	  --set intake.namespace=shop --set intake.onCancel=Pause
	@"$$(scripts/helm-path)" lint --strict charts/winston --set serviceMonitor.enabled=true \
	  --set monitoring.prometheusRule.enabled=true --set monitoring.grafanaDashboard.enabled=true

.PHONY: manifests
manifests: ## Regenerate manifests/ and charts/winston/crds/ from the chart and crds/
	@scripts/gen-manifests

.PHONY: manifests-check
manifests-check: helm ## Fail when manifests/ or charts/winston/crds/ differ from what the chart generates
	@scripts/gen-manifests --check
.PHONY: demo
demo: ## The whole system locally: control plane, PostgreSQL, emulator, controller, proxy, a Tenant to Ready (DEMO_EXIT=1 to exit after the summary)
	@scripts/demo

.PHONY: demo-checkout
demo-checkout: ## A customer's life from a Stripe checkout: emulated checkout -> Tenant -> Ready -> welcome email -> upgrade -> cancellation (DEMO_EXIT=1 to exit)
	@scripts/demo-checkout

.PHONY: bench
bench: controlplane ## Benchmarks (release build, not tests): proxy latency/throughput/RSS; provisioning of 1/100/1,000 tenants; agent chat round trip and transcript ingest
	WINSTON_PG_DURABLE=1 $(CARGO) bench --bench proxy
	WINSTON_PG_DURABLE=1 $(CARGO) bench --bench provisioning
	WINSTON_PG_DURABLE=1 $(CARGO) bench --bench agent
	$(CARGO) bench --bench analyzer

.PHONY: test
test: prereqs fmt-check deps-check clippy crds-check helm-lint manifests-check controlplane ## Every check CI runs: fmt, unused crates, clippy, CRD drift, chart lint, manifests drift, all tests
	$(CARGO) test --all-targets

.PHONY: emulator
emulator: ## Serve the local platform + LLM emulators on 127.0.0.1:4010 (prints the base URLs)
	$(CARGO) run --quiet -- emulator
