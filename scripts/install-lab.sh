#!/usr/bin/env bash
# Install what the migration lab needs on a Debian 12 machine, as root, idempotently:
# libvirt + QEMU + busybox packages, the libvirt-qemu user/group that libvirtd
# insists on, a Debian cloud kernel for the guests, a busybox initramfs built from
# lab/guest/ and the Debian 12 guests with systemd-networkd and with NetworkManager
# (scripts/build-guest-debian.sh networkd|nm, from
# lab/guest-debian/). All cached under /var/cache/bridge-migration/guest and rebuilt only
# when their inputs change.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

say() { printf '[install-lab] %s\n' "$*"; }

cache=/var/cache/bridge-migration/guest
apt_pkgs=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
  busybox-static cpio iputils-ping iproute2 util-linux kmod mmdebstrap e2fsprogs
  dnsmasq-base) # dnsmasq-base: net1's own DHCP server in lab/l2.py (the binary, no system service)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
export DEBIAN_FRONTEND=noninteractive
updated=0
if ((${#missing[@]})); then
  say "apt-get install ${missing[*]}"
  apt-get update -qq
  updated=1
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# libvirtd refuses to start without these (normally created by libvirt-daemon-system).
getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
getent passwd libvirt-qemu >/dev/null ||
  useradd --system --gid libvirt-qemu --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin libvirt-qemu

# --- Guest kernel: the versioned package behind linux-image-cloud-amd64, unpacked, never installed.
mkdir -p "$cache"
kpkg_of() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
kpkg=$(kpkg_of)
if [[ -z $kpkg && $updated == 0 ]]; then
  apt-get update -qq
  kpkg=$(kpkg_of)
fi
[[ -n $kpkg ]] || { say "cannot resolve the package behind linux-image-cloud-amd64"; exit 1; }
kver=${kpkg#linux-image-}
kdir=$cache/kernel-$kver
if [[ ! -f $kdir/.done ]]; then
  say "fetching guest kernel $kpkg"
  tmp=$(mktemp -d)
  chmod 0755 "$tmp" # apt downloads as _apt
  (cd "$tmp" && apt-get download -qq "$kpkg")
  rm -rf "$kdir"
  mkdir -p "$kdir"
  dpkg-deb -x "$tmp"/"$kpkg"_*.deb "$kdir"
  rm -rf "$tmp"
  touch "$kdir/.done"
fi
ln -sfn "$kdir/boot/vmlinuz-$kver" "$cache/vmlinuz"

# --- Guest initramfs: busybox + our init + the virtio modules, in the order they must load.
modules=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net)
busybox=/bin/busybox
inputs=$(
  {
    echo "$kver"
    sha256sum "$busybox"
    sha256sum lab/guest/* scripts/install-lab.sh
    printf '%s\n' "${modules[@]}"
  } | sha256sum | cut -c1-16
)
initrd=$cache/initramfs-$inputs.cpio.gz
if [[ ! -f $initrd ]]; then
  say "building guest initramfs ($inputs)"
  tmp=$(mktemp -d)
  mkdir -p "$tmp"/{bin,sbin,etc/udhcpc,proc,sys,dev,run,tmp,lib/modules,usr/bin,usr/sbin,usr/share/udhcpc}
  cp "$busybox" "$tmp/bin/busybox"
  install -m 0755 lab/guest/init "$tmp/init"
  install -m 0755 lab/guest/udhcpc.script "$tmp/etc/udhcpc/default.script"
  ln -s /etc/udhcpc/default.script "$tmp/usr/share/udhcpc/default.script"
  ln -s busybox "$tmp/bin/sh"
  : >"$tmp/lib/modules/order"
  for m in "${modules[@]}"; do
    f=$(find "$kdir/lib/modules/$kver" -name "$m.ko*" | sed -n 1p) # not head: SIGPIPE under pipefail
    [[ -n $f ]] || { say "module $m not found in $kdir"; exit 1; }
    case $f in
      *.ko.xz) xz -dc "$f" >"$tmp/lib/modules/$m.ko" ;;
      *.ko.zst) zstd -qdc "$f" >"$tmp/lib/modules/$m.ko" ;;
      *.ko) cp "$f" "$tmp/lib/modules/$m.ko" ;;
    esac
    echo "$m" >>"$tmp/lib/modules/order"
  done
  (cd "$tmp" && find . -print0 | cpio --null -o -H newc --quiet | gzip -9) >"$initrd.tmp"
  mv "$initrd.tmp" "$initrd"
  rm -rf "$tmp"
  # Older builds go once a day has passed, not at once: the cache is shared by every checkout
  # on the machine, and a running lab of another one may still boot or migrate a VM from one
  # (a migration's target QEMU opens the initramfs again).
  find "$cache" -maxdepth 1 -name 'initramfs-*.cpio.gz' ! -name "$(basename "$initrd")" -mmin +1440 -delete
fi
ln -sfn "$initrd" "$cache/initramfs.cpio.gz"
say "guest ready: $cache/vmlinuz $cache/initramfs.cpio.gz"

# --- The Debian 12 guest with systemd-networkd (guest type debian-networkd).
./scripts/build-guest-debian.sh networkd
# --- The Debian 12 guest with NetworkManager (guest type debian-nm).
./scripts/build-guest-debian.sh nm

# --- The lab's DHCP server: a stand-in for virt-launcher's (lab/dhcpd, Go, krolaw/dhcp4 as
# virt-launcher uses), built with the Go cache build-k8s.sh keeps, rebuilt when its source changes.
export GOMODCACHE=/var/cache/bridge-migration/go/mod GOCACHE=/var/cache/bridge-migration/go/build
export GOFLAGS="-buildvcs=false -trimpath -mod=readonly"
dhcpd_key=$(cat lab/dhcpd/go.mod lab/dhcpd/go.sum lab/dhcpd/main.go | sha256sum | cut -c1-16)
dhcpd=/var/cache/bridge-migration/bin/bml-dhcpd-$dhcpd_key
if [[ ! -x $dhcpd ]]; then
  # Any Go from 1.19 builds it (go.mod says 1.19): Debian 12's golang-go when none is on PATH,
  # so the demo needs no Go of its own.
  if ! command -v go >/dev/null; then
    say "no go on PATH: installing Debian's golang-go for lab/dhcpd"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends golang-go >/dev/null
    export PATH=$PATH:/usr/lib/go/bin
  fi
  say "building bml-dhcpd ($dhcpd_key)"
  mkdir -p "$(dirname "$dhcpd")"
  (cd lab/dhcpd && go build -o "$dhcpd.tmp" .)
  mv "$dhcpd.tmp" "$dhcpd"
  find /var/cache/bridge-migration/bin -maxdepth 1 -name 'bml-dhcpd-*' ! -name "$(basename "$dhcpd")" -delete
fi
ln -sfn "$dhcpd" /var/cache/bridge-migration/bin/bml-dhcpd
say "dhcp server ready: /var/cache/bridge-migration/bin/bml-dhcpd"
