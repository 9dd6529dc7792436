package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// sectionCommand is the first argument that makes this program the
// critical section that koncli runs under the lock.
const sectionCommand = "section"

// section is the workers' critical section. It proves mutual exclusion on
// its own, independently of konlease: it enters by creating a marker file
// with O_EXCL, which fails if another section is inside, and it logs its
// entry and exit with the holder and fencing token that koncli passed it.
// The n-th section to run, with --crash-at n, kills its koncli half-way
// through, as kill -9 or an OOM kill would, and then exits itself, so that
// only the lock is left behind.
func section(args []string) int {
	fs := flag.NewFlagSet(sectionCommand, flag.ContinueOnError)
	logPath := fs.String("log", "", "append-only log of entries and exits")
	marker := fs.String("marker", "", "file that exists while a section runs")
	work := fs.Duration("work", 500*time.Millisecond, "how long the section takes")
	crashAt := fs.Int("crash-at", 0, "if this is the n-th section in the log, kill the parent koncli half-way through")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	holder, token := os.Getenv("KONLEASE_HOLDER"), os.Getenv("KONLEASE_TOKEN")
	if holder == "" || token == "" || *logPath == "" || *marker == "" {
		fmt.Fprintln(os.Stderr, "section: run me with koncli mutex run (KONLEASE_HOLDER and KONLEASE_TOKEN), --log and --marker")
		return 2
	}
	logf, err := os.OpenFile(*logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "section:", err)
		return 1
	}
	defer logf.Close()
	// One write per line: appends from several processes never interleave.
	logLine := func(event string, extra ...string) {
		fields := append([]string{event, holder, token, strconv.FormatInt(time.Now().UnixNano(), 10)}, extra...)
		_, _ = logf.WriteString(strings.Join(fields, " ") + "\n")
	}

	f, err := os.OpenFile(*marker, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		who, _ := os.ReadFile(*marker)
		logLine("overlap", strings.Fields(string(who) + " unknown")[0])
		fmt.Fprintf(os.Stderr, "section: OVERLAP: %s entered while %s was inside\n", holder, who)
		return 1
	}
	_, _ = f.WriteString(holder)
	_ = f.Close()
	logLine("enter")

	// If koncli goes away without us (Ctrl-C on the demo), leave at once.
	parent := os.Getppid()
	go func() {
		for range time.Tick(100 * time.Millisecond) {
			if os.Getppid() != parent {
				os.Exit(1)
			}
		}
	}()

	if *crashAt > 0 && countEntries(*logPath) == *crashAt {
		time.Sleep(*work / 2)
		// Log and clean up first: koncli has its command killed when it
		// dies (parent-death signal). Nobody can enter in between, since
		// the lock stays held until its TTL runs out.
		logLine("crash")
		_ = os.Remove(*marker)
		if err := killParent(parent); err != nil {
			fmt.Fprintln(os.Stderr, "section:", err)
		}
		return 1
	}
	time.Sleep(*work)
	logLine("leave")
	if err := os.Remove(*marker); err != nil {
		fmt.Fprintln(os.Stderr, "section:", err)
		return 1
	}
	return 0
}

// countEntries counts the sections that entered so far, this one
// included. Sections run one at a time, so exactly one sees each count.
func countEntries(logPath string) int {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return 0
	}
	n := 0
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "enter ") {
			n++
		}
	}
	return n
}

// killParent sends SIGKILL to the koncli that runs this section, after
// checking that it is koncli (not a shell in between, which would make the
// demo kill the wrong process and prove nothing).
func killParent(pid int) error {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return fmt.Errorf("identify parent %d: %w", pid, err)
	}
	if name := strings.TrimSpace(string(comm)); name != "koncli" {
		return fmt.Errorf("parent %d is %q, not koncli", pid, name)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill koncli %d: %w", pid, err)
	}
	return nil
}

// sectionRecord is one critical section as the log tells it.
type sectionRecord struct {
	holder       string
	token        int64
	enter, leave time.Time // leave is the crash time for a crashed one
	crashed      bool
	left         bool   // leave or crash was logged
	overlapWith  string // set if entering found another section inside
}

// readSections parses the log into sections, in the order they entered.
func readSections(path string) ([]*sectionRecord, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read section log: %w", err)
	}
	defer f.Close()
	var all []*sectionRecord
	open := map[string]*sectionRecord{} // holder+token -> section
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			return nil, fmt.Errorf("bad log line %q", sc.Text())
		}
		token, err1 := strconv.ParseInt(fields[2], 10, 64)
		nanos, err2 := strconv.ParseInt(fields[3], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("bad log line %q: %w", sc.Text(), err)
		}
		at, key := time.Unix(0, nanos), fields[1]+"/"+fields[2]
		switch fields[0] {
		case "enter":
			s := &sectionRecord{holder: fields[1], token: token, enter: at}
			all = append(all, s)
			open[key] = s
		case "leave", "crash":
			if s := open[key]; s != nil {
				s.leave, s.left, s.crashed = at, true, fields[0] == "crash"
			}
		case "overlap":
			all = append(all, &sectionRecord{holder: fields[1], token: token, enter: at, leave: at, overlapWith: strings.Join(fields[4:], " ")})
		default:
			return nil, fmt.Errorf("bad log line %q", sc.Text())
		}
	}
	return all, sc.Err()
}
