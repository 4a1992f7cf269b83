#!/usr/bin/env bash
# The whole test suite: installs the toolchains the tests need when they are missing, then runs
# rustfmt, clippy and every test (and the cgroup tests again on a pure cgroup v2 guest, see
# test-v2.sh), and finally checks that no box was left behind.
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
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
# The same cgroup code on a pure cgroup v2 host: a Debian kernel under qemu.
scripts/test-v2.sh

# Nothing of any box may remain: no cgroup, no process in the boxes' uid range (4096 slots of 65536
# ids from 100000000).
leaks=0
for dir in /sys/fs/cgroup/*/codebeaker /sys/fs/cgroup/codebeaker; do
  [[ -d $dir ]] || continue
  for group in "$dir"/cb-*; do
    [[ -d $group ]] || continue
    owner=${group##*/cb-}; owner=${owner%%-*}
    if ! kill -0 "$owner" 2>/dev/null; then echo "leaked cgroup: $group"; leaks=$((leaks + 1)); fi
  done
done
if ps -eo uid= | awk '$1 >= 100000000 && $1 < 368435456 { found=1 } END { exit !found }'; then
  echo "leaked processes:"; ps -eo pid,uid,args | awk 'NR==1 || ($2 >= 100000000 && $2 < 368435456)'
  leaks=$((leaks + 1))
fi
if grep -q ' /run/codebeaker/root ' /proc/self/mountinfo; then echo "leaked mount on /run/codebeaker/root"; leaks=$((leaks + 1)); fi
if ((leaks)); then echo "leak check failed"; exit 1; fi
echo "leak check: no box left behind"
