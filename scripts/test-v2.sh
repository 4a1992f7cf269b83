#!/usr/bin/env bash
# The pure cgroup v2 leg: boots a Debian kernel under qemu with `cgroup_no_v1=all`, the host's `/`
# shared read-only over 9p under a tmpfs overlay, and runs the tests that exercise cgroups in it
# (the sandbox crate's real-cgroup tests, the box containment tests, and the attack classes that end
# runs through cgroups and give boxes their own ids), with the binaries built on the host; then the
# container layouts (container mode, a read-only cgroup2) and rootless boxes (an ordinary user with
# subordinate ids, then with its own ids only, with and without a delegated group).
#
# The end-to-end tests are one binary; the guest runs the areas above by their module paths.
#
# Installs what it needs from Debian's packages: qemu's libraries, busybox-static and cpio with
# apt-get; qemu itself and the kernel are fetched with `apt-get download` and unpacked in the build
# directory (installing Debian 12's qemu-system-x86 would replace a newer qemu-utils). Uses KVM when
# /dev/kvm boots a stock kernel, TCG otherwise. Prints a line per test binary and fails when any
# fails or the guest does not finish.
set -euo pipefail
cd "$(dirname "$0")/.."
work=target/v2-guest
mkdir -p "$work"
work=$(cd "$work" && pwd)
repo=$(pwd)

debs=(qemu-system-x86 qemu-system-common qemu-system-data)
libs=(busybox-static cpio seabios ipxe-qemu libbrlapi0.8 libcacard0 libcapstone4 libdaxctl1
  libepoxy0 libexecs0 libfdt1 libibverbs1 libndctl6 libpmem1 librdmacm1 libslirp0 libsndio7.0
  libspice-server1 libusb-1.0-0 libusbredirparser1 libvdeplug2 libgstreamer-plugins-base1.0-0)
qemu=$work/root/usr/bin/qemu-system-x86_64
if [[ ! -x $qemu || ! -f $work/kernel ]]; then
  echo "v2 leg: fetching qemu, its libraries and a kernel"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${libs[@]}" >/dev/null
  kernel_pkg=$(apt-cache search --names-only '^linux-image-[0-9.]+-[0-9]+-amd64-unsigned$' | awk '{print $1}' | sort -V | tail -1)
  [[ -n $kernel_pkg ]] || { echo "v2 leg: no linux-image-*-amd64-unsigned package found"; exit 1; }
  rm -rf "$work/debs" "$work/root" && mkdir -p "$work/debs" "$work/root"
  (cd "$work/debs" && apt-get download "${debs[@]}" "$kernel_pkg" >/dev/null)
  for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/root"; done
  cp "$(ls "$work"/root/boot/vmlinuz-* | head -1)" "$work/kernel"
fi
if ldd "$qemu" | grep -q 'not found'; then
  echo "v2 leg: qemu misses libraries:"; ldd "$qemu" | grep 'not found'; exit 1
fi

# The initramfs: busybox, the modules for virtio, 9p and overlayfs, and an init that mounts the
# host's root read-only under a tmpfs overlay and switches to it.
modules=(virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache
  9pnet 9pnet_virtio 9p overlay)
initrd=$work/initrd
rm -rf "$initrd" && mkdir -p "$initrd"/{bin,proc,sys,dev,lower,upper,newroot,modules}
cp /bin/busybox "$initrd/bin/busybox"
for m in "${modules[@]}"; do
  cp "$(find "$work"/root/lib/modules -name "$m.ko" | head -1)" "$initrd/modules/"
done
cat >"$initrd/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Three rounds: a module whose dependency comes later in the list loads in the next one.
for round in 1 2 3; do
  for m in ${modules[*]}; do
    grep -q "^\$m " /proc/modules || insmod /modules/\$m.ko 2>/dev/null || [ \$round -lt 3 ] || echo "V2-RESULT insmod-\$m rc=1"
  done
done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /lower || poweroff -f
mount -t tmpfs -o size=8g tmpfs /upper
mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot || poweroff -f
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /bin/sh $work/guest.sh
EOF
chmod +x "$initrd/init"
(cd "$initrd" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >"$work/initrd.gz")

# The binaries, built here.
executables() { cargo test --no-run --message-format=json "$@" 2>/dev/null | grep -o '"executable":"[^"]*/deps/[^"]*"' | cut -d'"' -f4; }
sandbox_tests=$(executables -p codebeaker-sandbox --lib)
e2e_tests=$(executables -p codebeaker --test tests)
cargo build -p codebeaker 2>/dev/null
for bin in "$sandbox_tests" "$e2e_tests"; do
  [[ -n $bin && $bin != *$'\n'* && -x $bin ]] || { echo "v2 leg: a test binary was not built ($bin)"; exit 1; }
done

# container.sh <rw|ro> <group> <command...>: runs <command> as a container runtime lays a container
# out, as the only process of <group> (a new group), which is the root of its own cgroup
# namespace, with cgroup2 mounted <rw|ro> in its own mount namespace.
cat >"$work/container.sh" <<'EOF'
#!/bin/sh
mode=$1 group=$2
shift 2
mkdir "$group" && echo $$ >"$group/cgroup.procs" || exit 1
exec unshare --cgroup --mount sh -c 'umount /sys/fs/cgroup && mount -t cgroup2 -o "$0" cgroup2 /sys/fs/cgroup && exec "$@"' "$mode" "$@"
EOF
chmod +x "$work/container.sh"

# rootless.sh <group|-> <command...>: runs <command> as the ordinary user nobody (65534), as the
# only process of <group>, a new group delegated to that user as an administrator (or systemd's
# Delegate=yes) delegates one; with "-" it stays in the root group, which is not delegated.
cat >"$work/rootless.sh" <<'EOF'
#!/bin/sh
group=$1
shift
if [ "$group" != - ]; then
  mkdir "$group" && chown 65534:65534 "$group" "$group/cgroup.procs" "$group/cgroup.subtree_control" \
    "$group/cgroup.threads" && echo $$ >"$group/cgroup.procs" || exit 1
fi
mkdir -p /tmp/rootless-home && chown 65534:65534 /tmp/rootless-home
exec setpriv --reuid 65534 --regid 65534 --clear-groups env -i PATH="$PATH" HOME=/tmp/rootless-home \
  TMPDIR=/tmp/rootless-home TEST_SLOWDOWN="$TEST_SLOWDOWN" "$@"
EOF
chmod +x "$work/rootless.sh"

accel=tcg,thread=multi
# KVM only with hardware virtualisation (VT-x or AMD-V): a /dev/kvm without it (PVM, nested
# virtualisation without VT-x) boots no stock kernel.
if [[ -w /dev/kvm ]] && grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; then accel=kvm; fi
# Wall-clock bounds that only keep a test from hanging are this many times longer in the guest
# (tests/common: patient); bounds a test is about stay as they are. Software emulation runs
# 5-30 times slower than the host.
slowdown=2
[[ $accel == kvm ]] || slowdown=10
cb=$repo/target/debug/codebeaker
cat >"$work/guest.sh" <<EOF
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /run
# /tmp stays the overlay's: the checkout itself may live under it.
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
export TEST_SLOWDOWN=$slowdown
ip link set lo up
cd $repo
echo "V2-INFO kernel \$(uname -r), cgroup2 controllers: \$(cat /sys/fs/cgroup/cgroup.controllers)"
step() {
  name=\$1; shift; "\$@" >/tmp/out 2>&1; rc=\$?
  grep -E '^test .*FAILED|panicked|^test result' /tmp/out | sed 's/^/  /'
  [ \$rc = 0 ] || tail -n 15 /tmp/out | sed 's/^/  | /'
  echo "V2-RESULT \$name rc=\$rc"
}
step doctor sh -c 'target/debug/codebeaker doctor >/tmp/doctor; s=\$?; cat /tmp/doctor; [ \$s = 0 ] && grep -q "cgroup v2" /tmp/doctor'
step sandbox-crate $sandbox_tests --test-threads 2
step containment $e2e_tests --test-threads 2 sandbox::
step attacks $e2e_tests --test-threads 2 attacks::survivors:: attacks::kernel_accounting:: attacks::warm_state:: attacks::lifetimes::processes_cannot_outlive
# The container layouts (docs/operations.md, "Where CodeBeaker runs"); the root delegates the box
# controllers to the containers' groups, as a runtime's parent group does.
echo '+memory +pids +cpu' >/sys/fs/cgroup/cgroup.subtree_control
step container-moves-itself sh -c "$work/container.sh rw /sys/fs/cgroup/ctr-1 $cb --log info doctor >/tmp/c 2>&1; s=\\\$?; cat /tmp/c; [ \\\$s = 0 ] && grep -q 'container mode' /tmp/c && [ -d /sys/fs/cgroup/ctr-1/codebeaker-server ]"
step container-limits-hold sh -c "$work/container.sh rw /sys/fs/cgroup/ctr-2 $cb run --lang python --memory 64M -c 'x = bytearray(256 << 20)'; s=\\\$?; echo exit \\\$s; [ \\\$s = 137 ]"
step container-mode-off sh -c "CODEBEAKER_SANDBOX__MOVE_TO_LEAF=false timeout 120 $work/container.sh rw /sys/fs/cgroup/ctr-3 $cb serve --listen 127.0.0.1:0 >/tmp/c 2>&1; s=\\\$?; cat /tmp/c; [ \\\$s != 0 ] && [ \\\$s != 124 ] && grep -q EBUSY /tmp/c"
step container-read-only sh -c "$work/container.sh ro /sys/fs/cgroup/ctr-4 $cb doctor >/tmp/c 2>&1; s=\\\$?; cat /tmp/c; [ \\\$s = 2 ] && grep -q 'mounted read-only' /tmp/c && grep -q '^box  *ok' /tmp/c"
# Rootless (docs/operations.md): nobody may reach the checkout's binaries (in the guest's overlay
# only), and has a range of subordinate ids, then only its own ids.
d=$repo; while [ "\$d" != / ]; do chmod o+rx "\$d"; d=\$(dirname "\$d"); done
echo 'nobody:200000000:65536' >>/etc/subuid && echo 'nobody:200000000:65536' >>/etc/subgid
step rootless-not-delegated sh -c "$work/rootless.sh - $cb doctor >/tmp/c 2>&1; s=\\\$?; cat /tmp/c; [ \\\$s = 2 ] && grep -q 'subordinate ids' /tmp/c && grep -q 'systemd-run --user' /tmp/c && grep -q '^box  *ok' /tmp/c"
step rootless-delegated sh -c "$work/rootless.sh /sys/fs/cgroup/user-1 $cb --log info doctor >/tmp/c 2>&1; s=\\\$?; cat /tmp/c; [ \\\$s = 0 ] && grep -q 'subordinate ids' /tmp/c && [ -d /sys/fs/cgroup/user-1/codebeaker-server ]"
step rootless-limits-hold sh -c "$work/rootless.sh /sys/fs/cgroup/user-2 $cb run --lang python --memory 64M -c 'x = bytearray(256 << 20)'; s=\\\$?; echo exit \\\$s; [ \\\$s = 137 ]"
step rootless-containment $work/rootless.sh /sys/fs/cgroup/user-3 $e2e_tests --test-threads 2 sandbox::
sed -i '/^nobody:/d' /etc/subuid /etc/subgid
step rootless-own-ids sh -c "$work/rootless.sh /sys/fs/cgroup/user-4 $cb doctor >/tmp/c 2>&1; s=\\\$?; cat /tmp/c; [ \\\$s = 0 ] && grep -q 'own uid 65534' /tmp/c"
step rootless-own-ids-containment $work/rootless.sh /sys/fs/cgroup/user-5 $e2e_tests --test-threads 2 sandbox::
echo V2-DONE
echo o >/proc/sysrq-trigger
EOF

echo "v2 leg: booting ($accel; bounds that only keep tests from hanging x$slowdown)"
start=$SECONDS
timeout 1800 "$qemu" -L "$work/root/usr/share/qemu" -L /usr/share/seabios -accel "$accel" -smp 2 -m 6G \
  -nographic -no-reboot -kernel "$work/kernel" -initrd "$work/initrd.gz" \
  -append "console=ttyS0 cgroup_no_v1=all panic=-1 quiet" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap \
  -nic none </dev/null | tr -d '\r' | grep -E '^(V2-|  )' | tee "$work/log" || true
echo "v2 leg: $((SECONDS - start)) s"
grep -q '^V2-DONE' "$work/log" || { echo "v2 leg: the guest did not finish"; exit 1; }
if grep -E '^V2-RESULT .* rc=[1-9]' "$work/log"; then echo "v2 leg failed"; exit 1; fi
echo "v2 leg: every step passed on pure cgroup v2"
