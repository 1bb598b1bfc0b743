#!/usr/bin/env bash
# Runs every check kache has: formatting, lints, all tests, and script syntax.
# This is the README's test command; .ci/run calls it after installing what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --all-targets --locked
echo "== shell scripts parse"
for script in .ci/run scripts/*.sh bench/*.sh tests/k8s/*.sh; do
  bash -n "$script"
done
echo "== all checks passed"
