package harness

import (
	"archive/tar"
	"bufio"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseProcNetRoute(t *testing.T) {
	const routes = `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth0	00000000	010200C0	0003	0	0	0	00000000	0	0	0
eth0	000200C0	00000000	0001	0	0	0	00FFFFFF	0	0	0
konlease7	0007F40A	00000000	0001	0	0	0	00FFFFFF	0	0	0
`
	got, err := parseProcNetRoute(bufio.NewScanner(strings.NewReader(routes)))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("10.244.7.0/24")}
	if !slices.Equal(got, want) {
		t.Errorf("parseProcNetRoute = %v, want %v (the default route left out)", got, want)
	}
	if _, err := parseProcNetRoute(bufio.NewScanner(strings.NewReader("h\neth0 zz 0 0 0 0 0 zz\n"))); err == nil {
		t.Error("malformed route: no error")
	}
}

// TestNodeNetPlan checks the address plan that in-cluster configuration
// relies on: the kubernetes Service's ClusterIP (the first address of the
// service range) is the host's address, where the API server listens, and
// pods and node are outside the service range.
func TestNodeNetPlan(t *testing.T) {
	n := newNodeNet(42)
	if n.Subnet.String() != "10.244.42.0/24" || n.HostLink != "konlease42" {
		t.Fatalf("newNodeNet(42) = %v %s", n.Subnet, n.HostLink)
	}
	if first := n.ServiceRange().Addr().Next(); first != n.HostIP() {
		t.Errorf("kubernetes Service ClusterIP %s, want the host's address %s", first, n.HostIP())
	}
	for _, a := range []netip.Addr{n.NodeIP(), n.PodRangeStart(), n.PodRangeEnd()} {
		if n.ServiceRange().Contains(a) || !n.Subnet.Contains(a) {
			t.Errorf("%s: want inside %s and outside the service range %s", a, n.Subnet, n.ServiceRange())
		}
	}
	if len(n.HostLink) > 15 {
		t.Errorf("link name %q longer than IFNAMSIZ allows", n.HostLink)
	}
}

func TestPickNodeNetExcludes(t *testing.T) {
	exclude := map[byte]bool{}
	for third := 1; third < 255; third++ {
		exclude[byte(third)] = third != 77
	}
	n, err := pickNodeNet(exclude)
	if err != nil {
		t.Skipf("10.244.77.0/24 is in use on this machine: %v", err)
	}
	if n.Subnet.String() != "10.244.77.0/24" {
		t.Errorf("pickNodeNet with one subnet left = %s, want 10.244.77.0/24", n.Subnet)
	}
	for third := range 255 {
		exclude[byte(third)] = true
	}
	if _, err := pickNodeNet(exclude); err == nil {
		t.Error("pickNodeNet with every subnet excluded: no error")
	}
}

func TestDedupePaths(t *testing.T) {
	got := dedupePaths([]string{"/b/pause.tar", "/b/a.tar", "/b/../b/pause.tar", "/b/c.tar"})
	if want := []string{"/b/pause.tar", "/b/a.tar", "/b/c.tar"}; !slices.Equal(got, want) {
		t.Errorf("dedupePaths = %v, want %v", got, want)
	}
}

func TestImageNames(t *testing.T) {
	tests := []struct {
		name, manifest string
		want           []string
		wantErr        string
	}{
		{name: "tagged", manifest: `[{"Config":"c","RepoTags":["konlease.test/pause:v1"],"Layers":[]}]`, want: []string{"konlease.test/pause:v1"}},
		{name: "untagged", manifest: `[{"Config":"c","RepoTags":[],"Layers":[]}]`, wantErr: "no name"},
		{name: "no manifest", wantErr: "no manifest.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "image.tar")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			tw := tar.NewWriter(f)
			if tt.manifest != "" {
				if err := tw.WriteHeader(&tar.Header{Name: "manifest.json", Mode: 0o644, Size: int64(len(tt.manifest))}); err != nil {
					t.Fatal(err)
				}
				if _, err := tw.Write([]byte(tt.manifest)); err != nil {
					t.Fatal(err)
				}
			}
			if err := errors.Join(tw.Close(), f.Close()); err != nil {
				t.Fatal(err)
			}
			got, err := ImageNames(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("ImageNames = %v, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("ImageNames = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}
