package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Attach reloads a local control plane started with Options.Detach from its
// directory, typically to stop it. Only opts.Logf, ReadyTimeout and StopGrace
// are used.
func Attach(dir string, opts Options) (*Env, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", dir, err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, fmt.Errorf("read control plane state: %w", err)
	}
	var st state
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Join(dir, stateFile), err)
	}
	if (st.Etcd == nil || st.APIServer == nil) && st.HA == nil {
		return nil, fmt.Errorf("%s: incomplete state", filepath.Join(dir, stateFile))
	}
	caPEM, err := os.ReadFile(st.CAFile)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	e := &Env{
		logf:       opts.logf(),
		readyWait:  opts.readyTimeout(),
		stopGrace:  opts.stopGrace(),
		local:      true,
		dir:        dir,
		kubeconfig: filepath.Join(dir, kubeconfigFile),
		detached:   st.Detached,
		etcdURL:    st.EtcdURL,
		etcd:       st.Etcd,
		apiserver:  st.APIServer,
		node:       st.Node,
		ha:         st.HA,
		admin: &rest.Config{
			Host:            st.Host,
			BearerToken:     st.AdminToken,
			TLSClientConfig: rest.TLSClientConfig{CAData: caPEM},
		},
	}
	if e.ha != nil {
		if err := e.haClients(); err != nil {
			return nil, err
		}
		return e, nil
	}
	if e.client, err = kubernetes.NewForConfig(e.Config()); err != nil {
		return nil, fmt.Errorf("admin client: %w", err)
	}
	return e, nil
}

func (e *Env) saveStateLocked() error {
	st := state{
		Detached:   e.detached,
		Host:       e.admin.Host,
		CAFile:     filepath.Join(e.dir, "ca.crt"),
		AdminToken: e.admin.BearerToken,
		EtcdURL:    e.etcdURL,
		Etcd:       e.etcd,
		APIServer:  e.apiserver,
		Node:       e.node,
		HA:         e.ha,
	}
	raw, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	// Write then rename so a concurrent reader never sees a partial file.
	tmp := filepath.Join(e.dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(e.dir, stateFile)); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// StateExists reports whether dir holds a control plane state file.
func StateExists(dir string) (bool, error) {
	_, err := os.Stat(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// freePorts returns n distinct free loopback TCP ports. All listeners are
// open at once so the kernel cannot hand out the same port twice; another
// process could still take one before the children bind, which a retry of
// Start resolves.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func loopbackURL(scheme string, port int) string {
	return scheme + "://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}
