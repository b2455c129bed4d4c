#!/usr/bin/env bash
# Hostile input, at volume: every property test of tests/it/robustness.rs
# (frames, every body reader, message and trace records, broker config
# text, configuration files, API query strings) with MQAUDIT_PROPERTY_CASES
# cases per property, in a release build. The default, 800,000, tries more
# than 10 million inputs in all; any panic fails the run.
#
#   scripts/fuzz.sh [CASES]
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-800000}
started=$SECONDS
log=$(mktemp "${TMPDIR:-/tmp}/mqaudit-fuzz.XXXXXX")
trap 'rm -f "$log"' EXIT
set +e
MQAUDIT_PROPERTY_CASES=$cases cargo test --release --test it -- robustness:: --nocapture --test-threads 2 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
total=$(grep -E "^(frame|JSON|message|trace|configuration|API)" "$log" |
  grep -oE "[0-9]+ (random/mutated|cases|round trips|mutations|mutated)" | awk '{ s += $1 } END { print s + 0 }')
if [[ $status -ne 0 ]]; then
  echo "fuzz: FAILED (cargo test exit $status) after $total inputs in $((SECONDS - started)) s" >&2
  exit 1
fi
echo "fuzz: $total inputs tried in $((SECONDS - started)) s, no panic"
