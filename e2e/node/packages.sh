#!/usr/bin/env bash
# Installs what the local node of the e2e harness needs from the OS, when
# missing: containerd, its runc shim and runc, the CNI plugins bridge,
# host-local and loopback, iproute2 (ip), and a static busybox (the sh of
# the node tests' app image). On Debian it uses apt-get, as root; elsewhere,
# or without root, it says what to install and exits 0: the node tests then
# skip (no root) or fail saying what is missing.
#
# Debian's containerd package may enable a containerd service on a machine
# with systemd. The node never uses it: it runs its own containerd with all
# state and sockets in its own directory and namespaces.
set -euo pipefail

packages=()
need() { # need PACKAGE TEST...: PACKAGE is needed unless the test passes
	local pkg=$1
	shift
	"$@" >/dev/null 2>&1 || packages+=("$pkg")
}
has_cmd() { command -v "$1"; }
has_cni() { [ -x "/usr/lib/cni/$1" ] || [ -x "/opt/cni/bin/$1" ]; }
# Debian's busybox (not -static) also installs /bin/busybox, dynamically
# linked: it cannot run in an image without libc (mkimage refuses it).
has_static_busybox() {
	if command -v dpkg-query; then
		dpkg-query -W -f='${Status}' busybox-static | grep -qx 'install ok installed'
	else
		[ -x /bin/busybox ]
	fi
}

need containerd has_cmd containerd
need containerd has_cmd containerd-shim-runc-v2
need containerd has_cmd ctr
need runc has_cmd runc
need containernetworking-plugins has_cni bridge
need containernetworking-plugins has_cni host-local
need containernetworking-plugins has_cni loopback
need iproute2 has_cmd ip
need busybox-static has_static_busybox

if [ "${#packages[@]}" -eq 0 ]; then
	echo "node-packages: everything the node needs is installed"
	exit 0
fi
mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort -u)

if [ "$(id -u)" -ne 0 ]; then
	echo "node-packages: missing ${packages[*]}; the node needs root anyway: run this as root (or install them), or the node tests skip" >&2
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "node-packages: missing ${packages[*]} (Debian package names), and this is not a Debian-like system: install containerd 1.6 or later, runc, the CNI plugins (bridge, host-local, loopback in /usr/lib/cni or /opt/cni/bin), iproute2 and a static busybox with your package manager" >&2
	exit 1
fi
echo "node-packages: installing ${packages[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"
