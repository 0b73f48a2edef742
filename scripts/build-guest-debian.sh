#!/usr/bin/env bash
# Build one of the lab's Debian 12 guests, as root, idempotently:
#   scripts/build-guest-debian.sh [networkd|nm]     (default: networkd)
# networkd: guest type "debian-networkd"; nm: guest type "debian-nm".
# A minbase bookworm made by mmdebstrap with systemd, udev, dbus, iproute2, iputils-ping and
# qemu-guest-agent, and the flavour's network stack in its stock configuration: networkd,
# systemd-networkd enabled with one stock-like .network file (lab/guest-debian/50-dhcp.network);
# nm, network-manager (its internal DHCP client) with no configuration at all, so its default
# "Wired connection" profile does DHCP on every NIC. qemu-guest-agent as Debian ships it, nothing
# enabled or configured by us: the package's udev rule pulls its unit in when
# /dev/virtio-ports/org.qemu.guest_agent.0 appears (the domain's agent channel, lab/domain.py),
# once udev has loaded virtio_console from the kernel modules copied into the root. Both get the
# lab's observer service (reports only, lab/guest-debian/lab-observer, told the flavour by
# /etc/lab-guest) and the modules of the lab's guest kernel. It becomes an ext4 image made
# without loop mounts (mke2fs -d), attached read-only to the domain, and a small busybox
# initramfs that loads virtio_blk and overlay and switch_roots into systemd over a tmpfs overlay.
# Needs the unpacked guest kernel of scripts/install-lab.sh (which calls this script).
# Output, keyed on the inputs: /var/cache/bridge-migration/guest/debian-<flavour>-<key>/{root.img,initrd.cpio.gz},
# and the link .../guest/debian-<flavour> to it. Debian package updates on the mirror are not an
# input: delete the directory to rebuild with today's packages.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

flavour=${1:-networkd}
case $flavour in
  networkd | nm) ;;
  *)
    echo "usage: $0 [networkd|nm]" >&2
    exit 2
    ;;
esac
guest=debian-$flavour
say() { printf '[build-guest-debian %s] %s\n' "$flavour" "$*"; }

cache=/var/cache/bridge-migration/guest
kernel=$(readlink -f "$cache/vmlinuz" 2>/dev/null || true)
[[ -f $kernel ]] || { say "no guest kernel in $cache: run scripts/install-lab.sh"; exit 1; }
kver=${kernel##*/vmlinuz-}
kdir=$cache/kernel-$kver
[[ -f $kdir/.done ]] || { say "kernel package not unpacked in $kdir: run scripts/install-lab.sh"; exit 1; }

for tool in mmdebstrap:mmdebstrap mke2fs:e2fsprogs cpio:cpio depmod:kmod; do
  if ! command -v "${tool%%:*}" >/dev/null; then
    say "apt-get install ${tool#*:}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${tool#*:}" >/dev/null
  fi
done

suite=bookworm
packages=(systemd systemd-sysv udev dbus iproute2 iputils-ping) # systemd brings systemd-networkd
# The guest agent the fixer asks through libvirt (issue 23): Debian's package, stock config.
packages+=(qemu-guest-agent)
# mmdebstrap installs no recommends: no wpasupplicant, modemmanager, ppp or dnsmasq-base.
if [[ $flavour == nm ]]; then packages+=(network-manager); fi
# What the initramfs loads, in order; ext4 and crc32c are built into the cloud kernel.
initrd_modules=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk overlay)
busybox=/bin/busybox
key=$(
  {
    echo "$suite $kver"
    printf '%s\n' "${packages[@]}" "${initrd_modules[@]}"
    echo "flavour $flavour"
    sha256sum "$busybox" scripts/build-guest-debian.sh lab/guest-debian/*
  } | sha256sum | cut -c1-16
)
out=$cache/$guest-$key
if [[ -f $out/.done ]]; then
  ln -sfn "$out" "$cache/$guest"
  say "guest ready: $out"
  exit 0
fi

say "building the Debian guest $guest ($key)"
work=$(mktemp -d "/var/tmp/bml-guest-$guest.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
include=$(
  IFS=,
  echo "${packages[*]}"
)
# No docs, manuals or translations: the guest is read by nobody. The hook is single-quoted on
# purpose: mmdebstrap runs it with the rootfs as "$1".
# shellcheck disable=SC2016
mmdebstrap --quiet --variant=minbase --format=directory --include="$include" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
  "$suite" "$rootfs"

# The guest kernel's modules (udev loads virtio_net and friends from them), with their index.
mkdir -p "$rootfs/lib/modules"
cp -a "$kdir/lib/modules/$kver" "$rootfs/lib/modules/"
depmod -b "$rootfs" "$kver"
# Fail the build rather than boot a guest whose agent never starts: the package's udev rule for
# the channel's port, its unit, and virtio_console (a module of the cloud kernel, not in the
# initramfs) indexed for udev to load when the virtio-serial device shows up.
grep -qs 'org.qemu.guest_agent.0' "$rootfs"/lib/udev/rules.d/*qemu-guest-agent.rules || {
  say "no udev rule of qemu-guest-agent for org.qemu.guest_agent.0"
  exit 1
}
[[ -f $rootfs/lib/systemd/system/qemu-guest-agent.service ]] || { say "no qemu-guest-agent.service"; exit 1; }
grep -q ' virtio_console$' "$rootfs/lib/modules/$kver/modules.alias" || {
  say "virtio_console is not in the guest's modules.alias"
  exit 1
}

install -m 0755 lab/guest-debian/lab-observer "$rootfs/usr/local/sbin/lab-observer"
install -m 0644 lab/guest-debian/lab-observer.service "$rootfs/etc/systemd/system/lab-observer.service"
if [[ $flavour == networkd ]]; then
  # Networking as a Debian cloud image has it: systemd-networkd, one .network file.
  install -m 0644 lab/guest-debian/50-dhcp.network "$rootfs/etc/systemd/network/50-dhcp.network"
  systemctl --root="$rootfs" enable systemd-networkd.service lab-observer.service >/dev/null 2>&1
else
  # NetworkManager as the package installs it: /etc/NetworkManager/NetworkManager.conf untouched
  # (plugins=ifupdown,keyfile, no no-auto-default), no profile written: NM makes its in-memory
  # "Wired connection N" (ipv4.method=auto) for each NIC. networkd stays disabled.
  systemctl --root="$rootfs" disable systemd-networkd.service systemd-networkd.socket \
    systemd-networkd-wait-online.service >/dev/null 2>&1 || true
  systemctl --root="$rootfs" enable NetworkManager.service lab-observer.service >/dev/null 2>&1
  # Fail the build rather than boot a guest with two DHCP clients, or none (-L: the links are
  # absolute, into the guest's tree, not the host's).
  [[ ! -L $rootfs/etc/systemd/system/multi-user.target.wants/systemd-networkd.service ]] || {
    say "systemd-networkd still enabled"
    exit 1
  }
  [[ -L $rootfs/etc/systemd/system/multi-user.target.wants/NetworkManager.service ]] || {
    say "NetworkManager not enabled"
    exit 1
  }
  ! grep -rqs '^no-auto-default' "$rootfs/etc/NetworkManager" || {
    say "no-auto-default set in the package's configuration"
    exit 1
  }
fi
echo "$guest" >"$rootfs/etc/lab-guest" # which stack the observer reads its leases and logs from
# The serial console carries the LAB lines: no login prompt on it. Nothing in the guest may
# wait for a human or do periodic housekeeping that competes for the shared TCG CPU.
systemctl --root="$rootfs" mask serial-getty@ttyS0.service getty@tty1.service systemd-firstboot.service \
  apt-daily.timer apt-daily-upgrade.timer fstrim.timer >/dev/null 2>&1
# Machine id and host name come from the kernel command line (systemd.machine_id=, systemd.hostname=).
: >"$rootfs/etc/machine-id"
: >"$rootfs/etc/fstab"
echo "debian" >"$rootfs/etc/hostname"

# ext4 from the directory, no loop mount; no journal (the guest never writes it).
size_mb=$(($(du -sm "$rootfs" | cut -f1) * 115 / 100 + 32))
mke2fs -q -t ext4 -O ^has_journal -L bml-root -d "$rootfs" "$work/root.img" "${size_mb}M" >/dev/null

# The initramfs: busybox, the modules for the root disk, the init that switch_roots.
ird=$work/initrd
mkdir -p "$ird"/{bin,proc,sys,dev,lib/modules}
cp "$busybox" "$ird/bin/busybox"
ln -s busybox "$ird/bin/sh"
install -m 0755 lab/guest-debian/initrd-init "$ird/init"
: >"$ird/lib/modules/order"
for m in "${initrd_modules[@]}"; do
  f=$(find "$kdir/lib/modules/$kver" -name "$m.ko*" | sed -n 1p)
  [[ -n $f ]] || { say "module $m not found in $kdir"; exit 1; }
  case $f in
    *.ko.xz) xz -dc "$f" >"$ird/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" >"$ird/lib/modules/$m.ko" ;;
    *.ko) cp "$f" "$ird/lib/modules/$m.ko" ;;
  esac
  echo "$m" >>"$ird/lib/modules/order"
done
(cd "$ird" && find . -print0 | cpio --null -o -H newc --quiet | gzip -9) >"$work/initrd.cpio.gz"

rm -rf "$out"
mkdir -p "$out"
mv "$work/root.img" "$work/initrd.cpio.gz" "$out/"
touch "$out/.done"
ln -sfn "$out" "$cache/$guest"
# Older builds go once a day has passed: a lab of another checkout may still run one (and a
# migration's target QEMU opens the image again).
find "$cache" -maxdepth 1 -name "$guest-*" -type d ! -name "$(basename "$out")" -mmin +1440 \
  -exec rm -rf {} +
say "guest ready: $out ($(du -sh "$out/root.img" | cut -f1) root image)"
