#!/usr/bin/env bash
# Compares two benchmark runs written by `codebeaker bench --suite all --json` (or any suite) and
# prints the figures that moved by more than 10 % (or --threshold PERCENT): by their ratio to the
# baseline measured in the same run where they have one, else by value. Reports, never fails on
# what moved: the machines are noisy.
#   scripts/bench-compare.sh OLD.json NEW.json [--threshold 10]
set -euo pipefail
cd "$(dirname "$0")/.."
if (($# != 2 && $# != 4)); then
  echo "usage: scripts/bench-compare.sh OLD.json NEW.json [--threshold PERCENT]" >&2
  exit 2
fi
old=$(realpath "$1") new=$(realpath "$2")
shift 2
exec cargo run -q --release -p codebeaker -- bench --compare "$old" "$new" "$@"
