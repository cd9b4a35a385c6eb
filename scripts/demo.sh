#!/usr/bin/env bash
# `make demo`: the main job end to end (see scripts/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" scripts/demo.py
