//go:build e2e

package node

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/konlease/konlease/e2e/harness"
	"github.com/konlease/konlease/e2e/internal/sandbox"
)

// childEnv makes the test binary a child that starts a control plane with
// a node, runs a pod, reports, and waits to be killed.
const childEnv = "KONLEASE_NODE_TEST_CHILD"

// childReport is what the child prints once its pod runs.
type childReport struct {
	Dir  string           `json:"dir"`
	Node harness.NodeInfo `json:"node"`
	// StartSeconds is how long the control plane and node took to start.
	StartSeconds float64 `json:"startSeconds"`
}

func childMain() int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	archives, err := imageArchives()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	begin := time.Now()
	env, err := harness.Start(ctx, harness.Options{Node: &harness.NodeOptions{}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	started := time.Since(begin)
	pause, err := harness.ImageNames(filepath.Join(filepath.Dir(archives[koncliArchive]), "pause.tar"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pods := env.Client().CoreV1().Pods(metav1.NamespaceDefault)
	_, err = pods.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "left-running"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "main", Image: pause[0], ImagePullPolicy: corev1.PullNever, Command: []string{"/pause"},
		}}},
	}, metav1.CreateOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	err = wait.PollUntilContextTimeout(ctx, pollInterval, podWait, true, func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, "left-running", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning, nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pod never ran:", err)
		return 1
	}
	info, _ := env.Node()
	report := childReport{Dir: env.Dir(), Node: info, StartSeconds: started.Seconds()}
	if err := json.NewEncoder(os.Stdout).Encode(report); err != nil {
		return 1
	}
	select {} // until killed
}

// TestNodeLeavesNothingAfterKill starts a control plane with a node and a
// running pod in a child test binary, kills the child with SIGKILL, and
// checks that nothing of the node is left: no process, no mount, no network
// device, no cgroup, no state directory.
func TestNodeLeavesNothingAfterKill(t *testing.T) {
	require(t, true)
	t.Parallel()
	mountsBefore := mountLines(t)

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, harness.EnvKubeconfig+"=")
	}), childEnv+"=1")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
		}
		_ = cmd.Wait()
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var report childReport
	select {
	case line, ok := <-lines:
		if !ok || json.Unmarshal([]byte(line), &report) != nil {
			t.Fatalf("child did not report (line %q); its output is above", line)
		}
	case <-time.After(2 * podWait):
		t.Fatal("child did not report in time")
	}
	t.Cleanup(func() { _ = os.RemoveAll(report.Dir) }) // etcd's data: the harness leaves it after a SIGKILL
	t.Logf("child's control plane and node started in %.1fs", report.StartSeconds)

	procs := descendants(t, cmd.Process.Pid)
	cgroups := procCgroups(procs)
	if len(procs) < 8 || len(cgroups) == 0 {
		t.Fatalf("found %d processes and cgroups %v under the child; want the control plane, the node and the pod's", len(procs), cgroups)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed = true
	killedAt := time.Now()

	var left []string
	err = wait.PollUntilContextTimeout(t.Context(), pollInterval, time.Minute, true, func(context.Context) (bool, error) {
		left = leftovers(t, report, procs, cgroups, mountsBefore)
		return len(left) == 0, nil
	})
	if err != nil {
		t.Fatalf("a minute after the SIGKILL, still there:\n%s", strings.Join(left, "\n"))
	}
	t.Logf("everything gone %s after the SIGKILL", time.Since(killedAt).Round(time.Millisecond))
}

// leftovers lists what is still there of the child's run.
func leftovers(t *testing.T, report childReport, procs map[int]uint64, cgroups []string, mountsBefore map[string]bool) []string {
	var left []string
	for pid, start := range procs {
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && startTime(string(st)) == start && !strings.Contains(string(st), ") Z ") {
			left = append(left, fmt.Sprintf("process %d: %s", pid, cmdline(pid)))
		}
	}
	// Mounts of the kinds a node makes (others may come and go on a
	// shared machine meanwhile).
	for m := range mountLines(t) {
		if !mountsBefore[m] && (strings.Contains(m, report.Dir) || nodeMountType(m)) {
			left = append(left, "mount: "+m)
		}
	}
	if linkNames(t)[report.Node.HostLink] {
		left = append(left, "network device: "+report.Node.HostLink)
	}
	if _, err := os.Stat(report.Node.StateDir); err == nil {
		left = append(left, "node state: "+report.Node.StateDir)
	}
	for _, cg := range cgroups {
		dirs, _ := sandbox.CgroupDirs(cg)
		for _, d := range dirs {
			if _, err := os.Stat(d); err == nil {
				left = append(left, "cgroup: "+d)
			}
		}
	}
	slices.Sort(left)
	return left
}

// descendants returns the processes below pid, with their start times.
func descendants(t *testing.T, pid int) map[int]uint64 {
	t.Helper()
	parent := map[int]int{}
	starts := map[int]uint64{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		if len(f) > 19 {
			parent[p], _ = strconv.Atoi(f[1])
			starts[p] = startTime(string(st))
		}
	}
	out := map[int]uint64{}
	for p := range parent {
		for a := parent[p]; a > 1; a = parent[a] {
			if a == pid {
				out[p] = starts[p]
				break
			}
		}
	}
	return out
}

func startTime(stat string) uint64 {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

func cmdline(pid int) string {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.ReplaceAll(strings.TrimRight(string(raw), "\x00"), "\x00", " ")
}

// procCgroups returns the cgroup paths of the processes that are not in
// this test binary's own cgroups.
func procCgroups(procs map[int]uint64) []string {
	own := map[string]bool{}
	for _, c := range cgroupPaths(os.Getpid()) {
		own[c] = true
	}
	seen := map[string]bool{}
	for pid := range procs {
		for _, c := range cgroupPaths(pid) {
			if !own[c] {
				seen[c] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

func cgroupPaths(pid int) []string {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil
	}
	var out []string
	for line := range strings.Lines(string(raw)) {
		if parts := strings.SplitN(strings.TrimSpace(line), ":", 3); len(parts) == 3 && parts[2] != "/" {
			out = append(out, parts[2])
		}
	}
	return out
}

// mountLines is the host's mount table, without the mount IDs (which a
// remount changes), as a set.
func mountLines(t *testing.T) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for line := range strings.Lines(string(raw)) {
		if f := strings.Fields(line); len(f) > 4 {
			out[strings.Join(f[2:], " ")] = true
		}
	}
	return out
}

// nodeMountType reports a mountinfo line (without IDs) of a file system
// type that containerd, runc or kubelet mount: overlay root file systems,
// tmpfs volumes and shm, network namespace files.
func nodeMountType(line string) bool {
	_, post, _ := strings.Cut(line, " - ")
	fstype, _, _ := strings.Cut(post, " ")
	return fstype == "overlay" || fstype == "tmpfs" || fstype == "nsfs" || fstype == "proc"
}

func linkNames(t *testing.T) map[string]bool {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, i := range ifs {
		out[i.Name] = true
	}
	return out
}
