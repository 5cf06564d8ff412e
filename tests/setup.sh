#!/usr/bin/env bash
# Installs what `cargo test` needs on a fresh Debian machine, and nothing when it is there:
# redis-server and redis-tools (every test starts its own servers on free loopback ports),
# prometheus (its `prometheus` and `promtool` check the shipped alert rules and dashboard),
# systemd's systemd-analyze (tests/it/deploy.rs verifies the unit file; no running systemd
# needed), and Python with Flask, Flask-Session and redis-py for the end-to-end session test
# and kubernetes-validate (it carries the Kubernetes schemas) for the manifests' test (into
# target/pyenv when the system Python lacks them and refuses a global install).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

packages=()
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || packages+=(redis-tools)
command -v systemd-analyze >/dev/null 2>&1 || packages+=(systemd)
command -v python3 >/dev/null 2>&1 || packages+=(python3)
command -v openssl >/dev/null 2>&1 || packages+=(openssl)   # benches/compare's TLS certificates
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  packages+=(prometheus)
fi
python_modules='import flask, flask_session, redis, kubernetes_validate, yaml'
if ! python3 -c "$python_modules" >/dev/null 2>&1 \
  && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  packages+=(python3-venv)
fi
if [ ${#packages[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq "${packages[@]}" >/dev/null
fi

# The Flask test and the manifests' test use target/pyenv/bin/python when it exists, else
# python3: whichever it is has every module.
if ! python3 -c "$python_modules" >/dev/null 2>&1; then
  if ! target/pyenv/bin/python -c "$python_modules" >/dev/null 2>&1; then
    python3 -m venv target/pyenv
    target/pyenv/bin/python -m pip install -q --disable-pip-version-check \
      flask flask-session redis kubernetes-validate
  fi
fi
