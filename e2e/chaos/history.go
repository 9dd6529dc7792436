package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Every process appends JSON lines to its own history file in the history
// directory. All processes run on one host, so one clock orders all events:
// times are wall-clock readings of time.Now() in UTC nanoseconds since the
// epoch (nobody steps the host clock during a run; the skewed worker skews
// only the clock it gives the lock library, never its records).
//
// Record kinds:
//
//	cs     one critical section: mutex, holder, token, enter, exit, lostAt
//	       (when the holder was told it lost the lock inside the section),
//	       lost (told at any point, also after the section), pid
//	wait   one acquisition attempt: start, end, timeout, result
//	       (acquired, timeout, cancelled, error)
//	write  one write on the fenced store: token, value, outcome (accepted,
//	       rejected, unknown), the ConfigMap's resourceVersion after an
//	       accepted write
//	fault  one fault injected by the orchestrator: fault, pid, at, until
//	end    the orchestrator's final reading of a mutex and of its store
type record struct {
	Kind   string `json:"kind"`
	Mutex  string `json:"mutex,omitempty"`
	Worker string `json:"worker,omitempty"`
	Holder string `json:"holder,omitempty"`
	Pid    int    `json:"pid,omitempty"`
	Token  int64  `json:"token,omitempty"`

	// cs
	Enter  int64 `json:"enter,omitempty"`
	Exit   int64 `json:"exit,omitempty"`
	LostAt int64 `json:"lostAt,omitempty"`
	Lost   bool  `json:"lost,omitempty"`

	// Semaphore, for a section of a semaphore's slot (Mutex names the
	// slot), names the semaphore.
	Semaphore string `json:"semaphore,omitempty"`

	// wait
	Start int64 `json:"start,omitempty"`
	// Queued is when a wait on a fair mutex was queued (its first wait
	// notification); zero if it never was, or it is not known (koncli).
	Queued  int64  `json:"queued,omitempty"`
	End     int64  `json:"end,omitempty"`
	Timeout int64  `json:"timeout,omitempty"`
	Result  string `json:"result,omitempty"`
	Error   string `json:"error,omitempty"`

	// write
	Value   string `json:"value,omitempty"`
	Outcome string `json:"outcome,omitempty"`
	RV      int64  `json:"rv,omitempty"`
	Stored  int64  `json:"stored,omitempty"` // the token the store held when it decided

	// fault
	Fault string `json:"fault,omitempty"`
	At    int64  `json:"at,omitempty"`
	Until int64  `json:"until,omitempty"`

	// end
	Phase     string `json:"phase,omitempty"`
	TTL       int64  `json:"ttl,omitempty"`
	ExpiresAt int64  `json:"expiresAt,omitempty"`
}

func now() int64 { return time.Now().UTC().UnixNano() }

// history appends records to one file. Each record is one write call on a
// file opened with O_APPEND.
type history struct {
	mu sync.Mutex
	f  *os.File
}

func openHistory(dir, name string) (*history, error) {
	f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("%s-%d.jsonl", name, os.Getpid())),
		os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return &history{f: f}, nil
}

func (h *history) add(r record) {
	if r.Pid == 0 {
		r.Pid = os.Getpid()
	}
	b, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, err := h.f.Write(append(b, '\n')); err != nil {
		fmt.Fprintln(os.Stderr, "history:", err)
	}
}

func (h *history) Close() error { return h.f.Close() }

// readHistories merges every history file of dir. A process killed with
// SIGKILL may leave a torn last line; it is skipped and counted.
func readHistories(dir string) (recs []record, torn int, err error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil {
		return nil, 0, err
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, 0, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" {
				continue
			}
			var r record
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				torn++
				continue
			}
			recs = append(recs, r)
		}
		_ = f.Close()
		if err := sc.Err(); err != nil {
			return nil, 0, err
		}
	}
	return recs, torn, nil
}
