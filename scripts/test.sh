#!/usr/bin/env bash
# The whole test suite: installs the toolchains the tests need when they are missing, then runs
# rustfmt, clippy and every test (and the cgroup tests again on a pure cgroup v2 guest, see
# test-v2.sh) and the install paths (test-packages.sh), and finally checks that no box was left
# behind.
# Needs root (boxes use uid maps and cgroups) on a Debian machine with Rust.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
need() { # need <command-or-path> <debian-package>
  if [[ $1 == /* ]]; then [[ -x $1 ]] || missing+=("$2"); else command -v "$1" >/dev/null || missing+=("$2"); fi
}
need /usr/bin/python3 python3
need /usr/bin/node nodejs
need bwrap bubblewrap
need go golang-go
need mcs mono-mcs
need ruby ruby
need gcc gcc
need g++ g++
need javac default-jdk-headless
# newuidmap/newgidmap: rootless boxes with subordinate ids (the v2 leg runs them as a user).
need newuidmap uidmap
need /usr/lib/python3/dist-packages/numpy python3-numpy # a host package that boxes must see
# Contexts' rich results: a matplotlib figure comes back as a PNG.
need /usr/lib/python3/dist-packages/matplotlib python3-matplotlib
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# What boxes have on the host before the run, for the leak check at the end.
census=$(mktemp --suffix=.codebeaker-census.json)
trap 'rm -f "$census"' EXIT
cargo run -q -p codebeaker -- doctor --leaks --record "$census"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
scripts/compat-clients.sh # the pinned E2B SDKs the e2b test drives
cargo test --workspace
# The same cgroup code on a pure cgroup v2 host: a Debian kernel under qemu.
scripts/test-v2.sh
# What users install: cargo install, the Debian package and its unit, the container image.
scripts/test-packages.sh

# Nothing a box of this run made may remain: no cgroup, no process in the boxes' id range, no mount
# on the sandbox's root mount point. `doctor --leaks` finds them as the sandbox does (cgroups
# through mountinfo) and counts only what was not there when the run started and whose owner is
# gone, so another CodeBeaker on this host cannot fail the check (docs/operations.md).
cargo run -q -p codebeaker -- doctor --leaks --since "$census"
