// Package sandbox runs the processes of a local Kubernetes node (containerd
// and kubelet) as the init process of new PID, mount, network and UTS
// namespaces, so that everything the node creates can be taken away again:
//
//   - processes: when the init of a PID namespace exits, the kernel kills
//     every process left in it, containers and containerd shims included;
//   - mounts: they are made in a private mount namespace, so none reaches
//     the host, and they disappear with the namespace;
//   - network devices: the bridge, the pods' veths and the sandbox end of the
//     uplink live in the sandbox's network namespace and disappear with it,
//     which also removes the host end of the uplink;
//   - state: at exit the init removes its state directory and the cgroups
//     of the processes it killed (cgroupfs is global to the machine).
//
// The harness (package e2e/harness) writes a Spec, starts the init
// (e2e/cmd/nodesandbox) with a parent-death signal of SIGTERM, and moves one
// end of a veth pair into the new network namespace. SIGTERM, from the
// harness or on its death, stops the processes in reverse order and cleans
// up.
package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Spec is what the init sets up and runs. It is written by the harness as
// JSON; every path is absolute.
type Spec struct {
	// Hostname is set in the new UTS namespace.
	Hostname string `json:"hostname"`
	// Network is the network inside the new network namespace.
	Network Network `json:"network"`
	// Masks are directories covered with an empty tmpfs inside the
	// sandbox, so that defaults the node's programs write to without a
	// setting to move them (containerd's shim sockets under /run, CNI's
	// cache under /var/lib, kubelet's /var/log/containers) stay private
	// to the sandbox and vanish with it.
	Masks []string `json:"masks,omitempty"`
	// Overrides are files (under /proc/sys) covered, inside the sandbox,
	// with a read-only file of the given content. kubelet writes some
	// kernel tunables that are global to the machine (kernel.panic,
	// vm.overcommit_memory, ...); showing it the values it wants keeps it
	// from changing the host's.
	Overrides map[string]string `json:"overrides,omitempty"`
	// CgroupParents are cgroups (relative to each hierarchy's root) that
	// the node's programs create as parents of the containers' cgroups
	// and never remove (containerd's runc shim: /k8s.io, after the CRI's
	// namespace); removed at exit if empty, that is, if no other run's
	// containers are in them.
	CgroupParents []string `json:"cgroupParents,omitempty"`
	// StateDir holds the processes' state (containerd's content and
	// snapshots, kubelet's root directory); unmounted and removed at exit.
	StateDir string `json:"stateDir"`
	// Processes are started in order and stopped in reverse order.
	Processes []Process `json:"processes"`
}

// Network describes the sandbox's network: lo, and a bridge that holds the
// node's address, to which the pods and the uplink are attached.
type Network struct {
	// Uplink is the interface, moved into the sandbox by the harness, that
	// is attached to the bridge; its peer in the host's namespace carries
	// the address the API server listens on.
	Uplink string `json:"uplink"`
	// Bridge is the name of the bridge (the CNI bridge plugin's "bridge").
	Bridge string `json:"bridge"`
	// Address is the node's address on the bridge, in CIDR notation.
	Address string `json:"address"`
}

// Process is one program of the node.
type Process struct {
	Name string   `json:"name"`
	Path string   `json:"path"`
	Args []string `json:"args,omitempty"`
	// Log receives the process's standard output and error (appended).
	Log string `json:"log"`
	// WaitFor are endpoints that must accept a connection before the
	// process is started (containerd's socket before kubelet).
	WaitFor []Endpoint `json:"waitFor,omitempty"`
}

// Endpoint is an address to dial: network "unix" or "tcp".
type Endpoint struct {
	Network string `json:"network"`
	Address string `json:"address"`
}

// Validate checks that the spec is complete and consistent.
func (s *Spec) Validate() error {
	var errs []error
	if s.StateDir == "" || !filepath.IsAbs(s.StateDir) {
		errs = append(errs, fmt.Errorf("stateDir %q: want an absolute path", s.StateDir))
	}
	if s.Network.Uplink == "" || s.Network.Bridge == "" || s.Network.Address == "" {
		errs = append(errs, errors.New("network: uplink, bridge and address are all required"))
	}
	if len(s.Processes) == 0 {
		errs = append(errs, errors.New("no processes"))
	}
	for _, m := range s.Masks {
		if !filepath.IsAbs(m) || filepath.Clean(m) == "/" {
			errs = append(errs, fmt.Errorf("mask %q: want an absolute path other than /", m))
			continue
		}
		// A mask over the state directory or a log would hide them from
		// the processes that need them.
		hidden := []string{s.StateDir}
		for _, p := range s.Processes {
			hidden = append(hidden, p.Log, p.Path)
		}
		for _, h := range hidden {
			if within(h, m) {
				errs = append(errs, fmt.Errorf("mask %s would hide %s", m, h))
			}
		}
	}
	for path := range s.Overrides {
		if !strings.HasPrefix(filepath.Clean(path), "/proc/sys/") {
			errs = append(errs, fmt.Errorf("override %q: only files under /proc/sys/ may be overridden", path))
		}
	}
	for _, p := range s.Processes {
		if p.Name == "" || !filepath.IsAbs(p.Path) || !filepath.IsAbs(p.Log) {
			errs = append(errs, fmt.Errorf("process %q: name, absolute path and absolute log are required", p.Name))
		}
		for _, ep := range p.WaitFor {
			if ep.Network != "unix" && ep.Network != "tcp" {
				errs = append(errs, fmt.Errorf("process %s: wait for %s %s: network must be unix or tcp", p.Name, ep.Network, ep.Address))
			}
		}
	}
	return errors.Join(errs...)
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// Write stores the spec as JSON at path.
func (s *Spec) Write(path string) error {
	raw, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode sandbox spec: %w", err)
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		return fmt.Errorf("write sandbox spec: %w", err)
	}
	return nil
}

// Read loads and validates a spec written by Write.
func Read(path string) (*Spec, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read sandbox spec: %w", err)
	}
	var s Spec
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("parse sandbox spec %s: %w", path, err)
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("sandbox spec %s: %w", path, err)
	}
	return &s, nil
}
