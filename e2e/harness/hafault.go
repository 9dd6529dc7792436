package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// Fault control of the HA topology, one member at a time. On a single
// etcd and kube-apiserver these fail with errNotHA.

var errNotHA = errors.New("needs the HA topology (Options.HA)")

// APIServerCount is the number of kube-apiservers (1 unless HA).
func (e *Env) APIServerCount() int {
	if e.ha == nil {
		return 1
	}
	return len(e.ha.APIServers)
}

// EtcdMemberCount is the number of etcd members (1 unless HA).
func (e *Env) EtcdMemberCount() int {
	if e.ha == nil {
		return 1
	}
	return len(e.ha.Members)
}

// Balancer is the HA topology's balancer, in front of its API servers;
// nil unless HA, and with Detach (it is then a process of its own).
func (e *Env) Balancer() *Balancer {
	if e.ha == nil {
		return nil
	}
	return e.ha.balancer
}

// APIServerConfig returns the admin configuration of kube-apiserver i
// alone, past the balancer (i is 0 unless HA).
func (e *Env) APIServerConfig(i int) (*rest.Config, error) {
	if e.ha == nil {
		if i != 0 {
			return nil, checkIndex("kube-apiserver", i, 1)
		}
		return e.Config(), nil
	}
	if err := checkIndex("kube-apiserver", i, len(e.ha.APIServers)); err != nil {
		return nil, err
	}
	cfg := e.Config()
	cfg.Host = e.ha.APIServers[i].Host
	return cfg, nil
}

// CheckEtcdMember checks once that etcd member i is healthy: it answers
// and has a leader (a partitioned member soon has none).
func (e *Env) CheckEtcdMember(ctx context.Context, i int) error {
	if e.ha == nil {
		return errNotHA
	}
	if err := checkIndex("etcd member", i, len(e.ha.Members)); err != nil {
		return err
	}
	return etcdHealth(e.ha.Members[i].ClientURL)(ctx)
}

// haControl is control for a fault of the HA topology: it fails with
// errNotHA on a single etcd and kube-apiserver.
func (e *Env) haControl(op string, fn func() error) error {
	return e.control(op, func() error {
		if e.ha == nil {
			return fmt.Errorf("%s: %w", op, errNotHA)
		}
		return fn()
	})
}

func checkIndex(what string, i, n int) error {
	if i < 0 || i >= n {
		return fmt.Errorf("harness: no %s %d (there are %d)", what, i, n)
	}
	return nil
}

// KillAPIServerN crashes kube-apiserver i with SIGKILL; the balancer's
// connections to it break and new ones go to the others.
func (e *Env) KillAPIServerN(ctx context.Context, i int) error {
	return e.haControl(fmt.Sprintf("kill kube-apiserver-%d", i), func() error {
		if err := checkIndex("kube-apiserver", i, len(e.ha.APIServers)); err != nil {
			return err
		}
		return e.ha.APIServers[i].Proc.kill(ctx)
	})
}

// StartAPIServerN starts kube-apiserver i and waits until it is ready; only
// then does the balancer send it clients.
func (e *Env) StartAPIServerN(ctx context.Context, i int) error {
	return e.haControl(fmt.Sprintf("start kube-apiserver-%d", i), func() error {
		if err := checkIndex("kube-apiserver", i, len(e.ha.APIServers)); err != nil {
			return err
		}
		return e.startHAAPIServerLocked(ctx, i)
	})
}

// KillEtcdMember crashes etcd member i with SIGKILL.
func (e *Env) KillEtcdMember(ctx context.Context, i int) error {
	return e.haControl(fmt.Sprintf("kill etcd-%d", i), func() error {
		if err := checkIndex("etcd member", i, len(e.ha.Members)); err != nil {
			return err
		}
		return e.ha.Members[i].Proc.kill(ctx)
	})
}

// StartEtcdMember starts etcd member i on its data and waits until it is
// healthy again (it has rejoined a leader).
func (e *Env) StartEtcdMember(ctx context.Context, i int) error {
	return e.haControl(fmt.Sprintf("start etcd-%d", i), func() error {
		if err := checkIndex("etcd member", i, len(e.ha.Members)); err != nil {
			return err
		}
		return e.startMembersLocked(ctx, e.ha.Members[i:i+1])
	})
}

// WaitEtcdMember waits until etcd member i is healthy (it has a leader),
// for instance after its partition healed.
func (e *Env) WaitEtcdMember(ctx context.Context, i int) error {
	return e.haControl(fmt.Sprintf("wait for etcd-%d", i), func() error {
		if err := checkIndex("etcd member", i, len(e.ha.Members)); err != nil {
			return err
		}
		m := e.ha.Members[i]
		return e.waitReady(ctx, m.Proc, etcdHealth(m.ClientURL))
	})
}

// startEtcdHALocked starts every stopped member together (one alone may
// lack a quorum), then waits until the running API servers are ready.
func (e *Env) startEtcdHALocked(ctx context.Context) error {
	var stopped []*etcdMember
	for _, m := range e.ha.Members {
		if !m.Proc.running() {
			stopped = append(stopped, m)
		}
	}
	if err := e.startMembersLocked(ctx, stopped); err != nil {
		return err
	}
	for _, a := range e.ha.APIServers {
		if a.Proc.running() {
			if err := e.waitReady(ctx, a.Proc, func(ctx context.Context) error { return readyz(ctx, a.client) }); err != nil {
				return err
			}
		}
	}
	return nil
}

// EtcdLeader returns the index of the etcd member that most running
// members name as their leader, from etcd's maintenance status (its HTTP
// gateway: etcd's Go client would bring gRPC into the module).
func (e *Env) EtcdLeader(ctx context.Context) (int, error) {
	var (
		ids   []string
		votes = map[string]int{}
		last  error
	)
	err := e.haControl("find the etcd leader", func() error {
		for _, m := range e.ha.Members {
			id, leader := "", ""
			if m.Proc.running() {
				var err error
				if id, leader, err = memberStatus(ctx, m.ClientURL); err != nil {
					last = err
				} else if leader != "0" {
					votes[leader]++
				}
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	best, most := "", 0
	for id, n := range votes {
		if n > most {
			best, most = id, n
		}
	}
	for i, id := range ids {
		if id != "" && id == best {
			return i, nil
		}
	}
	return 0, fmt.Errorf("harness: no etcd leader known (votes %v, last error: %v)", votes, last)
}

// memberStatus asks the member at clientURL for its own ID and its
// leader's ("0": none).
func memberStatus(ctx context.Context, clientURL string) (id, leader string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, clientURL+"/v3/maintenance/status", bytes.NewReader([]byte("{}")))
	if err != nil {
		return "", "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", "", fmt.Errorf("etcd status: %w", err)
	}
	defer resp.Body.Close()
	// The gateway writes 64-bit integers as JSON strings.
	var st struct {
		Header struct {
			MemberID json.RawMessage `json:"member_id"`
		} `json:"header"`
		Leader json.RawMessage `json:"leader"`
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("etcd status: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return "", "", fmt.Errorf("decode etcd status: %w", err)
	}
	unquote := func(raw json.RawMessage) string {
		s := strings.Trim(string(raw), `"`)
		if s == "" {
			return "0"
		}
		return s
	}
	return unquote(st.Header.MemberID), unquote(st.Leader), nil
}

// PartitionEtcdMember cuts etcd member i off from its peers, both ways:
// its peer proxy turns every peer away, and the other members' proxies
// turn away the connections it makes. Its clients (the API servers) still
// reach it. HealEtcdMember ends the partition.
func (e *Env) PartitionEtcdMember(i int) error {
	return e.haControl(fmt.Sprintf("partition etcd-%d", i), func() error {
		if err := checkIndex("etcd member", i, len(e.ha.Members)); err != nil {
			return err
		}
		if e.detached {
			return errors.New("harness: no peer proxies in a detached control plane")
		}
		pid := e.ha.Members[i].Proc.PID
		for j, m := range e.ha.Members {
			if j == i {
				m.peer.Cut(func(net.Conn) bool { return true })
			} else {
				m.peer.Cut(func(c net.Conn) bool { return dialedBy(pid, c) })
			}
		}
		return nil
	})
}

// HealEtcdMember ends a partition of etcd member i (every cut, in fact).
func (e *Env) HealEtcdMember(i int) error {
	return e.haControl(fmt.Sprintf("heal etcd-%d", i), func() error {
		if e.detached {
			return errors.New("harness: no peer proxies in a detached control plane")
		}
		for _, m := range e.ha.Members {
			m.peer.Uncut()
		}
		return nil
	})
}
