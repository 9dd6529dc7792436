// Package krew checks the release that `make release` writes: the krew
// manifest of `kubectl mutex`, against krew's own validation
// (validate-krew-manifest, built from this module) and against the
// archives it names: their checksums, the binary inside each, its
// platform, that it is static, and its version.
package krew

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"debug/macho"
	"encoding/hex"
	"io"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/krew/pkg/index"
	"sigs.k8s.io/yaml"
)

// The platforms of a release, as krew's selectors name them.
var platforms = []string{"darwin/amd64", "darwin/arm64", "linux/amd64", "linux/arm64"}

// release is what make release wrote, or the test is skipped: make
// release runs it with KONLEASE_RELEASE_DIST set, and then a missing or
// incomplete release fails it.
type release struct {
	dist     string
	manifest string
	plugin   index.Plugin
	sums     map[string]string // file name -> sha256 of checksums.txt
}

func readRelease(t *testing.T) *release {
	t.Helper()
	dist := os.Getenv("KONLEASE_RELEASE_DIST")
	if dist == "" {
		t.Skip("KONLEASE_RELEASE_DIST is not set: `make release` runs this test on the release it builds")
	}
	r := &release{dist: dist, manifest: filepath.Join(dist, "krew", "mutex.yaml"), sums: map[string]string{}}
	data, err := os.ReadFile(r.manifest)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, &r.plugin); err != nil {
		t.Fatalf("%s: %v", r.manifest, err)
	}
	f, err := os.Open(filepath.Join(dist, "checksums.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("checksums.txt: line %q is not \"SHA256  NAME\"", sc.Text())
		}
		r.sums[name] = sum
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestKrewManifestValidates: krew's own validation accepts the manifest,
// and refuses it once broken (so that its verdict means something).
func TestKrewManifestValidates(t *testing.T) {
	r := readRelease(t)
	validator := os.Getenv("KREW_VALIDATE")
	if validator == "" {
		t.Fatal("KREW_VALIDATE must name validate-krew-manifest (make release builds it into bin/)")
	}
	validate := func(manifest string) (string, error) {
		out, err := exec.Command(validator, "-manifest", manifest, "-skip-install").CombinedOutput()
		return string(out), err
	}
	if out, err := validate(r.manifest); err != nil {
		t.Fatalf("krew refuses %s: %v\n%s", r.manifest, err, out)
	}
	data, err := os.ReadFile(r.manifest)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, from, to string }{
		{"version without v", "version: v", "version: "},
		{"another plugin name", "name: mutex", "name: Mutex"},
	} {
		broken := filepath.Join(t.TempDir(), "mutex.yaml")
		if err := os.WriteFile(broken, bytes.Replace(data, []byte(tc.from), []byte(tc.to), 1), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := validate(broken); err == nil {
			t.Errorf("%s: krew accepts a broken manifest:\n%s", tc.name, out)
		}
	}
}

// TestKrewManifestArchives: the manifest names one archive per platform,
// with the checksum of checksums.txt and of the file itself, holding a
// static koncli for that platform at its bin path.
func TestKrewManifestArchives(t *testing.T) {
	r := readRelease(t)
	if r.plugin.Name != "mutex" || r.plugin.Kind != "Plugin" {
		t.Errorf("manifest names %s %q, want Plugin \"mutex\" (kubectl mutex)", r.plugin.Kind, r.plugin.Name)
	}
	seen := map[string]bool{}
	for _, p := range r.plugin.Spec.Platforms {
		platform := p.Selector.MatchLabels["os"] + "/" + p.Selector.MatchLabels["arch"]
		seen[platform] = true
		t.Run(platform, func(t *testing.T) {
			u, err := url.Parse(p.URI)
			if err != nil || u.Scheme != "https" {
				t.Fatalf("uri %q: want an https URL (%v)", p.URI, err)
			}
			name := path.Base(u.Path)
			archive := filepath.Join(r.dist, name)
			data, err := os.ReadFile(archive)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			if got := hex.EncodeToString(sum[:]); got != p.Sha256 || r.sums[name] != p.Sha256 {
				t.Errorf("%s: sha256 %s, manifest %s, checksums.txt %s", name, got, p.Sha256, r.sums[name])
			}
			bin := extract(t, data, p.Bin)
			checkBinary(t, bin, platform)
		})
	}
	if got := slices.Sorted(maps.Keys(seen)); !slices.Equal(got, platforms) {
		t.Errorf("platforms %v, want %v", got, platforms)
	}
}

// extract returns the file name of a .tar.gz archive.
func extract(t *testing.T, archive []byte, name string) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			t.Fatalf("the archive has no %s", name)
		}
		if err != nil {
			t.Fatal(err)
		}
		if path.Clean(h.Name) != name {
			continue
		}
		if h.Mode&0o111 == 0 {
			t.Errorf("%s is not executable: mode %o", name, h.Mode)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

// checkBinary checks that bin is an executable for platform, static on
// Linux (no program interpreter), and, when this machine can run it, that
// it is koncli of the release's version, and the kubectl plugin as
// kubectl-mutex, the name krew installs it under.
func checkBinary(t *testing.T, bin []byte, platform string) {
	t.Helper()
	goos, goarch, _ := strings.Cut(platform, "/")
	switch goos {
	case "linux":
		f, err := elf.NewFile(bytes.NewReader(bin))
		if err != nil {
			t.Fatalf("not an ELF file: %v", err)
		}
		want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[goarch]
		if f.Machine != want {
			t.Errorf("ELF machine %s, want %s", f.Machine, want)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("dynamically linked (it has a program interpreter): want a static binary")
			}
		}
	case "darwin":
		f, err := macho.NewFile(bytes.NewReader(bin))
		if err != nil {
			t.Fatalf("not a Mach-O file: %v", err)
		}
		want := map[string]macho.Cpu{"amd64": macho.CpuAmd64, "arm64": macho.CpuArm64}[goarch]
		if f.Cpu != want {
			t.Errorf("Mach-O CPU %s, want %s", f.Cpu, want)
		}
	}
	if goos != runtime.GOOS || goarch != runtime.GOARCH {
		return
	}
	dir := t.TempDir()
	exe := filepath.Join(dir, "koncli")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(exe, filepath.Join(dir, "kubectl-mutex")); err != nil {
		t.Fatal(err)
	}
	version := os.Getenv("KONCLI_VERSION")
	for _, argv0 := range []string{"koncli", "kubectl-mutex"} {
		out, err := exec.Command(filepath.Join(dir, argv0), "version").Output()
		want := "koncli " + version + " go"
		if err != nil || version == "" || !strings.HasPrefix(string(out), want) {
			t.Errorf("%s version: %q (%v), want %q... (KONCLI_VERSION, from make release)", argv0, out, err, want)
		}
	}
	out, err := exec.Command(filepath.Join(dir, "kubectl-mutex"), "--help").Output()
	if err != nil || !strings.Contains(string(out), "kubectl mutex [command]") {
		t.Errorf("kubectl-mutex --help does not speak as the plugin: %v\n%s", err, out)
	}
}
