package harness

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// The node's network. Pods must reach the API server and nothing else, and
// two runs on one machine must not see each other. So each run takes one
// /24 out of nodeNetBase for itself:
//
//	.1    the host's end of the uplink veth: kube-apiserver listens here,
//	      on port 443, and it is also the ClusterIP of the kubernetes
//	      Service (the first address of the service range .0/28), so the
//	      in-cluster configuration that kubelet gives every pod
//	      (KUBERNETES_SERVICE_HOST/PORT) reaches the API server without
//	      kube-proxy
//	.2-.14 the rest of the service range (no kube-proxy: unreachable)
//	.16-.250 pods, on a bridge inside the sandbox's network namespace
//	.254  the node (kubelet) on that bridge
//
// The pods get no default route (nothing is routed anywhere else), the host
// does not forward what arrives on the veth, and the veth's host end goes
// away with the sandbox's network namespace. The host end is named after
// the subnet, so the kernel's refusal of a second link with the same name
// keeps two runs from taking the same subnet.
var nodeNetBase = netip.MustParsePrefix("10.244.0.0/16")

const (
	nodeLinkPrefix    = "konlease"
	apiServerNodePort = 443
	sandboxUplink     = "eth0"
	sandboxBridge     = "cni0"
)

// nodeNet is the network of one run.
type nodeNet struct {
	Subnet   netip.Prefix `json:"subnet"`
	HostLink string       `json:"hostLink"`
}

func newNodeNet(third byte) nodeNet {
	a := nodeNetBase.Addr().As4()
	a[2] = third
	return nodeNet{
		Subnet:   netip.PrefixFrom(netip.AddrFrom4(a), 24),
		HostLink: nodeLinkPrefix + strconv.Itoa(int(third)),
	}
}

func (n nodeNet) addr(last byte) netip.Addr {
	a := n.Subnet.Addr().As4()
	a[3] = last
	return netip.AddrFrom4(a)
}

// HostIP is where the API server listens; NodeIP is kubelet's.
func (n nodeNet) HostIP() netip.Addr { return n.addr(1) }
func (n nodeNet) NodeIP() netip.Addr { return n.addr(254) }

// ServiceRange holds the kubernetes Service's ClusterIP, HostIP.
func (n nodeNet) ServiceRange() netip.Prefix { return netip.PrefixFrom(n.Subnet.Addr(), 28) }
func (n nodeNet) PodRangeStart() netip.Addr  { return n.addr(16) }
func (n nodeNet) PodRangeEnd() netip.Addr    { return n.addr(250) }

// pickNodeNet returns a random subnet of nodeNetBase that no route or
// address of the host overlaps. Another run may pick the same one in the
// meantime; createUplink then fails and the caller picks again.
func pickNodeNet(exclude map[byte]bool) (nodeNet, error) {
	used, err := hostPrefixes()
	if err != nil {
		return nodeNet{}, err
	}
	var free []byte
	for third := 1; third < 255; third++ {
		n := newNodeNet(byte(third))
		if exclude[byte(third)] || slicesOverlap(used, n.Subnet) {
			continue
		}
		free = append(free, byte(third))
	}
	if len(free) == 0 {
		return nodeNet{}, fmt.Errorf("no free /24 in %s for the node network: every one overlaps a route or address of this machine", nodeNetBase)
	}
	i, err := rand.Int(rand.Reader, big.NewInt(int64(len(free))))
	if err != nil {
		return nodeNet{}, err
	}
	return newNodeNet(free[i.Int64()]), nil
}

func slicesOverlap(ps []netip.Prefix, p netip.Prefix) bool {
	for _, q := range ps {
		if q.Overlaps(p) {
			return true
		}
	}
	return false
}

// hostPrefixes lists the IPv4 routes (but the default route) and addresses
// of the host's network namespace.
func hostPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if p, err := netip.ParsePrefix(ipn.String()); err == nil && p.Addr().Is4() {
				out = append(out, p.Masked())
			}
		}
	}
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	defer f.Close()
	routes, err := parseProcNetRoute(bufio.NewScanner(f))
	if err != nil {
		return nil, err
	}
	return append(out, routes...), nil
}

// parseProcNetRoute reads /proc/net/route: a header, then per route the
// interface, destination, gateway, flags, ... and mask, each address printed
// as a 32-bit number in host byte order (little endian here), so its bytes
// come out reversed.
func parseProcNetRoute(sc *bufio.Scanner) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for first := true; sc.Scan(); first = false {
		f := strings.Fields(sc.Text())
		if first || len(f) < 8 {
			continue
		}
		dst, err1 := hex.DecodeString(f[1])
		mask, err2 := hex.DecodeString(f[7])
		if err1 != nil || err2 != nil || len(dst) != 4 || len(mask) != 4 {
			return nil, fmt.Errorf("malformed /proc/net/route line %q", sc.Text())
		}
		ones := bits.OnesCount32(binary.LittleEndian.Uint32(mask))
		if ones == 0 {
			continue // the default route overlaps everything
		}
		a := [4]byte{dst[3], dst[2], dst[1], dst[0]}
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(a), ones).Masked())
	}
	return out, sc.Err()
}

// errLinkExists says that the subnet's link is taken (by another run).
var errLinkExists = errors.New("link exists")

// createUplink creates the veth pair: the host end, with HostIP, in this
// network namespace; the other end, named sandboxUplink, in the one of the
// process sandboxPID. The host end neither forwards nor takes part in IPv6,
// so what arrives from the pods goes nowhere but to this host.
func (n nodeNet) createUplink(sandboxPID int) error {
	out, err := exec.Command("ip", "link", "add", "name", n.HostLink, "type", "veth",
		"peer", "name", sandboxUplink, "netns", strconv.Itoa(sandboxPID)).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "File exists") {
			return fmt.Errorf("%s: %w", n.HostLink, errLinkExists)
		}
		return fmt.Errorf("ip link add %s: %w: %s", n.HostLink, err, strings.TrimSpace(string(out)))
	}
	for _, kv := range [][2]string{
		{"net/ipv4/conf/" + n.HostLink + "/forwarding", "0"},
		{"net/ipv6/conf/" + n.HostLink + "/disable_ipv6", "1"},
	} {
		if err := os.WriteFile("/proc/sys/"+kv[0], []byte(kv[1]), 0o644); err != nil {
			return fmt.Errorf("set %s: %w", kv[0], err)
		}
	}
	for _, args := range [][]string{
		{"addr", "add", netip.PrefixFrom(n.HostIP(), n.Subnet.Bits()).String(), "dev", n.HostLink},
		{"link", "set", n.HostLink, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}
