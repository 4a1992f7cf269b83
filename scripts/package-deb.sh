#!/usr/bin/env bash
# Builds the Debian package of CodeBeaker: the release binary as /usr/bin/codebeaker, the systemd
# unit (packaging/codebeaker.service), the default configuration as the conffile
# /etc/codebeaker/config.toml and the user docs under /usr/share/doc/codebeaker. Prints the path
# of the .deb. Usage: scripts/package-deb.sh [OUT_DIR]   (default target/debian)
#
# Built with dpkg-deb from Debian's own dpkg, so that nothing beyond the toolchain is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-target/debian}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
cargo build --release --locked -q -p codebeaker

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/codebeaker_${version}_$arch
install -D -m 0755 target/release/codebeaker "$root/usr/bin/codebeaker"
install -D -m 0644 packaging/codebeaker.service "$root/lib/systemd/system/codebeaker.service"
install -D -m 0644 packaging/config.toml "$root/etc/codebeaker/config.toml"
install -d "$root/usr/share/doc/codebeaker"
install -m 0644 README.md LICENSE docs/*.md "$root/usr/share/doc/codebeaker/"
install -d "$root/DEBIAN"
echo /etc/codebeaker/config.toml >"$root/DEBIAN/conffiles"
size=$(du -sk "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: codebeaker
Version: $version
Architecture: $arch
Maintainer: CodeBeaker developers <codebeaker@localhost>
Installed-Size: $size
Depends: libc6 (>= 2.31), libgcc-s1
Recommends: python3, nodejs
Suggests: golang-go, gcc, g++, default-jdk-headless, mono-mcs, ruby, rustc
Section: devel
Priority: optional
Homepage: https://github.com/codebeaker/codebeaker
Description: runs untrusted code in many languages, fast and isolated
 CodeBeaker runs programs it did not write (LLM-generated code, agents' cells, judges'
 submissions) in sandbox boxes built from Linux namespaces, cgroups and seccomp, and serves
 them over JSON-RPC, REST and the APIs of E2B, Judge0 and Piston. One binary, no daemon but
 itself; the toolchains it finds on the host are the languages it runs.
CONTROL
# After an upgrade, a running service picks up the new binary; nothing starts by itself on
# install (the operator sets up authentication first, see docs/deploy.md).
cat >"$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
  systemctl try-restart codebeaker.service || true
fi
POSTINST
cat >"$root/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl stop codebeaker.service || true
fi
PRERM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm"
mkdir -p "$out"
dpkg-deb --root-owner-group --build "$root" "$out" >/dev/null
echo "$out/codebeaker_${version}_$arch.deb"
