package sandbox

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func validSpec() Spec {
	return Spec{
		Hostname:  "node",
		Network:   Network{Uplink: "eth0", Bridge: "cni0", Address: "10.244.1.254/24"},
		Masks:     []string{"/run", "/var/lib"},
		Overrides: map[string]string{"/proc/sys/kernel/panic": "10"},
		StateDir:  "/tmp/cp/node",
		Processes: []Process{{
			Name: "kubelet", Path: "/bin/kubelet", Log: "/tmp/cp/kubelet.log",
			WaitFor: []Endpoint{{Network: "unix", Address: "/tmp/cp/node/containerd.sock"}},
		}},
	}
}

func TestSpecValidate(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*Spec)
		wantErr string
	}{
		{name: "valid", change: func(*Spec) {}},
		{name: "relative state", change: func(s *Spec) { s.StateDir = "node" }, wantErr: "stateDir"},
		{name: "no network", change: func(s *Spec) { s.Network = Network{} }, wantErr: "network"},
		{name: "no processes", change: func(s *Spec) { s.Processes = nil }, wantErr: "no processes"},
		{name: "mask hides the state", change: func(s *Spec) { s.Masks = []string{"/tmp"} }, wantErr: "would hide /tmp/cp/node"},
		{name: "mask of /", change: func(s *Spec) { s.Masks = []string{"/"} }, wantErr: "other than /"},
		{name: "override outside /proc/sys", change: func(s *Spec) { s.Overrides = map[string]string{"/etc/passwd": "x"} }, wantErr: "only files under /proc/sys/"},
		{name: "bad endpoint", change: func(s *Spec) { s.Processes[0].WaitFor[0].Network = "udp" }, wantErr: "unix or tcp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validSpec()
			tt.change(&s)
			err := s.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestSpecRoundTrip(t *testing.T) {
	s := validSpec()
	path := filepath.Join(t.TempDir(), "spec.json")
	if err := s.Write(path); err != nil {
		t.Fatal(err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Network != s.Network || got.StateDir != s.StateDir || !slices.Equal(got.Masks, s.Masks) || len(got.Processes) != 1 {
		t.Errorf("Read(Write(s)) = %+v, want %+v", got, s)
	}
	if err := os.WriteFile(path, []byte(`{"stateDir": "/x", "unknown": 1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path); err == nil || !strings.Contains(err.Error(), "unknown") {
		t.Errorf("Read of a spec with an unknown field: %v, want an error naming it", err)
	}
}

func TestReadMountInfo(t *testing.T) {
	const info = `22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 22 0:40 / /tmp/cp/node/kubelet/pods/x/volumes/a\040b rw - tmpfs tmpfs rw
`
	got, err := readMountInfo(strings.NewReader(info))
	if err != nil {
		t.Fatal(err)
	}
	want := []mountPoint{{"/", "ext4"}, {"/sys/fs/cgroup/memory", "cgroup"}, {"/tmp/cp/node/kubelet/pods/x/volumes/a b", "tmpfs"}}
	if !slices.Equal(got, want) {
		t.Errorf("readMountInfo = %v, want %v", got, want)
	}
	if _, err := readMountInfo(strings.NewReader("garbage\n")); err == nil {
		t.Error("readMountInfo of a malformed line: no error")
	}
}

func TestWithin(t *testing.T) {
	tests := []struct {
		path, dir string
		want      bool
	}{
		{"/tmp/cp/node", "/tmp", true},
		{"/tmp", "/tmp", true},
		{"/tmpx/a", "/tmp", false},
		{"/var/lib", "/var/lib/cni", false},
	}
	for _, tt := range tests {
		if got := within(tt.path, tt.dir); got != tt.want {
			t.Errorf("within(%q, %q) = %v, want %v", tt.path, tt.dir, got, tt.want)
		}
	}
}
