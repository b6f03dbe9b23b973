#!/usr/bin/env bash
# Runs the contract test suite (unit, revert, fuzz and invariant tests) with forge, offline:
# forge cannot download a compiler here, so contracts/foundry.toml points `solc` at
# scripts/solc-shim (solc-js from node_modules). Extra arguments go to `forge test`
# (e.g. `bash scripts/forge-test.sh --gas-report` or `--match-contract Fuzz`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
forge="$root/node_modules/.bin/forge"
if [[ ! -x "$forge" ]]; then
    echo "forge-test: $forge not found; run 'make setup' (npm ci) first" >&2
    exit 2
fi
if ! command -v node >/dev/null 2>&1; then
    echo "forge-test: node is required by scripts/solc-shim" >&2
    exit 2
fi

cd "$root/contracts"
exec "$forge" test --offline "$@"
