# mechanic_rl_ros -- everyday commands. `make help` lists them.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
export MUJOCO_GL ?= egl
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: help setup run test test-fast bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup:  ## install everything (apt, .venv, pinned pip packages, messages, package); idempotent
	@scripts/setup.sh

run: setup  ## set up, then fine-tune the policy on the simulated FR3 with the whole node stack (Ctrl-C stops)
	@scripts/run_default.sh $(ARGS)

test: setup  ## set up, then run the whole test suite (unit + real-process integration)
	@$(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-fast: setup  ## the tests not marked slow
	@$(PY) -m pytest -m "not slow"

bench: setup  ## run the benchmarks in bench/ and print their figures
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:  ## remove build outputs (keeps .venv)
	rm -rf build install log .setup-stamps/msgs mechanic_rl_ros/msg mechanic_rl_ros/srv mechanic_rl_ros/*.so
