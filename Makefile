# mlfn: every target creates .venv and installs from pyproject.toml when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2  # pytest-xdist processes; files stay whole on one worker (their fixtures)
CHROMIUM := /usr/bin/chromium
SUDO   := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)

.DEFAULT_GOAL := help
.PHONY: help venv browser load-tools dev test test-fast lint docs grpc-stubs bench render build deploy undeploy produce status clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-10s %s\n",$$1,$$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,torch]'
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install mlfn with its dev and torch extras

dev: venv ## start the whole platform locally on the embedded broker
	$(BIN)/mlfn dev

browser: ## Debian's chromium for the console's browser test (installed only when missing)
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

test: venv browser ## run the whole suite (unit, integration on the real broker, end to end)
	$(BIN)/python -m pytest -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: venv ## unit tests only
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

lint: venv ## ruff, mypy --strict on the packages, and the import contract (the floors)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

docs: venv ## regenerate the reference pages in docs/ (settings, spec, pipeline graph) from the code
	$(BIN)/python -m mlfn.reference docs
	$(BIN)/mlfn graph --format markdown -o docs/graph.md

grpc-stubs: venv ## regenerate the committed gRPC stubs from runtime/server/grpc/*.proto
	$(BIN)/python -m runtime.server.grpc.generate

load-tools: ## wrk and h2load, the C load generators the benchmarks use (installed only when missing)
	@command -v wrk >/dev/null && command -v h2load >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk nghttp2-client; }

bench: venv load-tools ## benchmarks; each prints a table
	$(BIN)/python -m bench

render: venv ## print Knative manifests rendered from the function specs
	$(BIN)/mlfn render

build: venv ## build and push images (docker, podman or buildah)
	$(BIN)/mlfn build

deploy: venv ## apply the manifests to the current kube context (FUNCTION=name for one)
	$(BIN)/mlfn deploy $(if $(FUNCTION),--function $(FUNCTION))

undeploy: venv ## delete what deploy applied
	$(BIN)/mlfn undeploy $(if $(FUNCTION),--function $(FUNCTION))

produce: venv ## stream the example dataset into the raw topic
	$(BIN)/mlfn produce --dataset digits --rate 200

status: venv ## functions, revisions, sources and triggers of the running platform
	$(BIN)/mlfn status

clean: ## remove the virtualenv and local state
	rm -rf $(VENV) .mlfn .pytest_cache .mypy_cache .ruff_cache
