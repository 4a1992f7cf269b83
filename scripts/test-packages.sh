#!/usr/bin/env bash
# Tests what a user installs (run by scripts/test.sh):
# 1. the Debian package (scripts/package-deb.sh): unpacked into a scratch root, its binary runs
#    `codebeaker doctor` (a real box), its conffile is a valid configuration, and its systemd unit
#    passes `systemd-analyze verify`;
# 2. `cargo install --locked --path crates/cli` with a fresh CARGO_HOME, as docs/deploy.md says;
# 3. the container image (packaging/Containerfile), built and run with `doctor` when a Docker
#    daemon answers; without one this step says so and is not counted as tested.
set -euo pipefail
cd "$(dirname "$0")/.."

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

deb=$(scripts/package-deb.sh)
echo "packages: built $deb"
dpkg-deb -x "$deb" "$scratch/root"
bin=$scratch/root/usr/bin/codebeaker
"$bin" --version
"$bin" serve --config "$scratch/root/etc/codebeaker/config.toml" --print-config >/dev/null
"$bin" doctor >"$scratch/doctor.txt" || { cat "$scratch/doctor.txt"; exit 1; }
echo "packages: doctor from the package: ok"
# The unit as installed, pointed at the scratch root's files (verify checks that they exist).
unit=$scratch/codebeaker.service
sed -e "s|/usr/bin/codebeaker|$bin|" -e "s|/etc/codebeaker/|$scratch/root/etc/codebeaker/|" \
  "$scratch/root/lib/systemd/system/codebeaker.service" >"$unit"
if ! out=$(systemd-analyze verify "$unit" 2>&1) || [[ -n $out ]]; then
  echo "systemd-analyze verify found problems in packaging/codebeaker.service:"
  echo "$out"
  exit 1
fi
echo "packages: systemd-analyze verify: ok"

# A fresh CARGO_HOME, as a new user has; its own target directory, so that it neither reuses nor
# disturbs this checkout's builds.
CARGO_HOME=$scratch/cargo-home CARGO_TARGET_DIR=target/cargo-install \
  cargo install -q --locked --path crates/cli --root "$scratch/installed"
"$scratch/installed/bin/codebeaker" languages >/dev/null
echo "packages: cargo install --locked: ok"

if docker info >/dev/null 2>&1; then
  docker build -q -f packaging/Containerfile -t codebeaker:test . >/dev/null
  docker run --rm --privileged --cgroupns=host codebeaker:test doctor
  echo "packages: container image: ok"
else
  echo "packages: NOT TESTED: the container image (no Docker daemon answers here)"
fi
