package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// setUpMounts makes the mount namespace private (nothing mounted in the
// sandbox propagates to the host, which may share its mounts), mounts a
// /proc of the new PID namespace, covers the masks with tmpfs and the
// overrides with read-only files.
func setUpMounts(s *Spec) error {
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	// The /proc inherited from the host shows the host's PIDs, which
	// containerd and runc would take for their own.
	if err := syscall.Mount("proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	for _, m := range s.Masks {
		if err := os.MkdirAll(m, 0o755); err != nil {
			return fmt.Errorf("mask %s: %w", m, err)
		}
		if err := syscall.Mount("tmpfs", m, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=0755"); err != nil {
			return fmt.Errorf("mask %s: %w", m, err)
		}
	}
	if len(s.Overrides) == 0 {
		return nil
	}
	dir := filepath.Join(s.StateDir, "overrides")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("overrides: %w", err)
	}
	for _, target := range slices.Sorted(maps.Keys(s.Overrides)) {
		src := filepath.Join(dir, strings.ReplaceAll(strings.TrimPrefix(target, "/"), "/", "_"))
		if err := os.WriteFile(src, []byte(s.Overrides[target]+"\n"), 0o444); err != nil {
			return fmt.Errorf("override %s: %w", target, err)
		}
		if err := syscall.Mount(src, target, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("override %s: %w", target, err)
		}
		if err := syscall.Mount("", target, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("override %s read-only: %w", target, err)
		}
	}
	return nil
}

// mountPoint is one line of /proc/self/mountinfo.
type mountPoint struct {
	path   string
	fstype string
}

// readMountInfo parses mountinfo(5): field 5 is the mount point (octal
// escapes for space, tab, newline and backslash), the field after " - " the
// file system type.
func readMountInfo(r io.Reader) ([]mountPoint, error) {
	var out []mountPoint
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		pre, post, ok := strings.Cut(line, " - ")
		fields := strings.Fields(pre)
		if !ok || len(fields) < 5 {
			return nil, fmt.Errorf("malformed mountinfo line %q", line)
		}
		fstype := ""
		if f := strings.Fields(post); len(f) > 0 {
			fstype = f[0]
		}
		out = append(out, mountPoint{path: unescapeMount(fields[4]), fstype: fstype})
	}
	return out, sc.Err()
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			valid := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					valid = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if valid {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// MountsUnder returns the mount points at or below dir in the mount table
// at path (e.g. /proc/self/mountinfo, or /proc/1/mountinfo for the host's).
func MountsUnder(path, dir string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	mounts, err := readMountInfo(f)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range mounts {
		if within(m.path, dir) {
			out = append(out, m.path)
		}
	}
	return out, nil
}

// unmountUnder detaches every mount at or below dir, the most recent (and
// so the innermost) first.
func unmountUnder(dir string) error {
	mounts, err := MountsUnder("/proc/self/mountinfo", dir)
	if err != nil {
		return fmt.Errorf("list mounts: %w", err)
	}
	var errs []error
	for i := len(mounts) - 1; i >= 0; i-- {
		err := syscall.Unmount(mounts[i], syscall.MNT_DETACH)
		if err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mounts[i], err))
		}
	}
	return errors.Join(errs...)
}

// CgroupDirs returns the directories that a cgroup path relative to the
// root has in each mounted cgroup hierarchy (v1: one per controller set;
// v2: one), whether they exist or not.
func CgroupDirs(rel string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	mounts, err := readMountInfo(f)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range mounts {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			out = append(out, filepath.Join(m.path, rel))
		}
	}
	return out, nil
}

// processCgroups returns the cgroups (paths relative to a hierarchy's
// root) of the processes of the namespace other than the init, from the
// sandbox's own /proc, which shows only them.
func processCgroups() []string {
	own := map[string]bool{}
	for _, c := range readCgroups("/proc/self/cgroup") {
		own[c] = true
	}
	seen := map[string]bool{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil || e.Name() == "1" {
			continue
		}
		for _, c := range readCgroups(filepath.Join("/proc", e.Name(), "cgroup")) {
			if !own[c] {
				seen[c] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// readCgroups reads the paths of /proc/PID/cgroup ("ID:CONTROLLERS:PATH").
func readCgroups(path string) []string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil // the process is gone
	}
	var out []string
	for line := range strings.Lines(string(raw)) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) == 3 && parts[2] != "/" {
			out = append(out, parts[2])
		}
	}
	return out
}

// removeCgroups removes the given cgroups, and their parents that are left
// empty (/k8s.io, which containerd's runc shim uses for the CRI's
// containers, stays while another run's containers are in it), in every
// hierarchy. A cgroup can be removed only once its last task is gone,
// which can lag the task's reaping a little, hence the retries.
func removeCgroups(cgroups []string) error {
	deadline := time.Now().Add(reapTimeout)
	for {
		var errs []error
		for _, cg := range cgroups {
			dirs, err := CgroupDirs(cg)
			if err != nil {
				return fmt.Errorf("find cgroups: %w", err)
			}
			for _, d := range dirs {
				if err := removeCgroupTree(d); err != nil {
					errs = append(errs, err)
					continue
				}
				removeEmptyParents(d, cg)
			}
		}
		if len(errs) == 0 || time.Now().After(deadline) {
			return errors.Join(errs...)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// removeEmptyCgroups removes the cgroups rel in every hierarchy where they
// are empty; one that is not (another run's containers) stays. It returns
// what stayed, and why.
func removeEmptyCgroups(rels []string) []string {
	var stayed []string
	for _, rel := range rels {
		dirs, err := CgroupDirs(rel)
		if err != nil {
			return []string{err.Error()}
		}
		for _, d := range dirs {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				stayed = append(stayed, fmt.Sprintf("%s: %v", d, err))
			}
		}
	}
	return stayed
}

// removeEmptyParents removes the parents of dir that belong to the cgroup
// path rel (not the hierarchy's root), as long as they are empty.
func removeEmptyParents(dir, rel string) {
	for r := path.Dir(rel); r != "/" && r != "."; r = path.Dir(r) {
		dir = filepath.Dir(dir)
		if syscall.Rmdir(dir) != nil {
			return // not empty (another run's containers), or gone
		}
	}
}

// removeCgroupTree rmdirs a cgroup and its children. Cgroup directories hold
// only kernel files, which rmdir takes with them; os.RemoveAll would try to
// delete those files and fail.
func removeCgroupTree(dir string) error {
	var subdirs []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			subdirs = append(subdirs, path)
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("walk %s: %w", dir, err)
	}
	var errs []error
	for i := len(subdirs) - 1; i >= 0; i-- {
		if err := syscall.Rmdir(subdirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", subdirs[i], err))
		}
	}
	return errors.Join(errs...)
}
