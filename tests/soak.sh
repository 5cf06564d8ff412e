#!/usr/bin/env bash
# Runs the soak test (tests/it/soak.rs) longer than CI does, on a release build:
#   tests/soak.sh          # 10 minutes
#   tests/soak.sh 3600     # an hour
# It prints the operation count, upstream errors seen during the restart, and RSS samples.
set -euo pipefail
cd "$(dirname "$0")/.."
REKEY_SOAK_SECS="${1:-600}" cargo test --release --test it soak:: -- --nocapture
