// Command mkimage builds a container image from files, without a container
// engine and without pulling anything, and writes it as an archive in the
// docker save format, which `docker load`, `ctr images import` and
// `kind load image-archive` read. `make image` builds the koncli image with
// it; the e2e node tests build their images with it.
//
//	mkimage -o koncli.tar -tag konlease/koncli:dev -nonroot \
//	    -ca-certs /etc/ssl/certs/ca-certificates.crt \
//	    -add bin/linux_amd64/koncli=/usr/local/bin/koncli \
//	    -entrypoint /usr/local/bin/koncli
//
// Without -base the image starts empty (FROM scratch); -base starts from an
// image archive and adds one layer on top. Files are owned by root and
// dated SOURCE_DATE_EPOCH (default: the Unix epoch), so the same inputs
// always give the same image digest.
package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Exit codes.
const (
	exitError = 1
	exitUsage = 2
)

// nonroot is distroless's unprivileged user, which the koncli image runs as.
const nonrootID = 65532

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type options struct {
	out, tag, base, caCerts, workdir, user, platform string
	nonroot                                          bool
	add, entrypoint, env, labels                     multiFlag
}

func main() {
	var o options
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	fs.StringVar(&o.out, "o", "", "the image archive to write (required)")
	fs.StringVar(&o.tag, "tag", "", "the image's name, e.g. konlease/koncli:dev (required)")
	fs.StringVar(&o.base, "base", "", "an image archive to start from (default: an empty image)")
	fs.Var(&o.add, "add", "SRC=DST: add the file SRC at the absolute path DST, keeping its permission bits (repeatable)")
	fs.BoolVar(&o.nonroot, "nonroot", false, "add /etc/passwd and /etc/group with root, nobody and nonroot (65532), /home/nonroot and /tmp, and run as 65532:65532")
	fs.StringVar(&o.caCerts, "ca-certs", "", "a CA bundle to add as /etc/ssl/certs/ca-certificates.crt (SSL_CERT_FILE is set to it)")
	fs.Var(&o.entrypoint, "entrypoint", "the entrypoint, one argument per flag (repeatable)")
	fs.StringVar(&o.workdir, "workdir", "", "the working directory")
	fs.StringVar(&o.user, "user", "", "the user to run as, UID[:GID] (overrides -nonroot's)")
	fs.Var(&o.env, "env", "K=V: an environment variable (repeatable; replaces one of the same name)")
	fs.Var(&o.labels, "label", "K=V: a label (repeatable)")
	fs.StringVar(&o.platform, "platform", "linux/"+runtime.GOARCH, "OS/ARCH of the image (that of the files added)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: mkimage -o OUT.tar -tag NAME:TAG [flags]\n\nBuilds an image from files, offline, as a docker save archive.\n\nExit codes: 0 written, 1 error, 2 bad usage.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(exitUsage)
	}
	if fs.NArg() > 0 || o.out == "" || o.tag == "" {
		fmt.Fprintln(os.Stderr, "mkimage: -o and -tag are required, and no arguments are taken")
		os.Exit(exitUsage)
	}
	digest, err := build(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(exitError)
	}
	fmt.Fprintf(os.Stderr, "mkimage: wrote %s (%s, %s)\n", o.out, o.tag, digest)
}

// entry is one file or directory of the layer.
type entry struct {
	path     string // absolute, clean
	dir      bool
	mode     int64
	uid, gid int
	data     []byte
}

func build(o options) (v1.Hash, error) {
	ref, err := name.NewTag(o.tag)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("-tag %q: %w", o.tag, err)
	}
	osName, arch, ok := strings.Cut(o.platform, "/")
	if !ok || osName == "" || arch == "" {
		return v1.Hash{}, fmt.Errorf("-platform %q: want OS/ARCH", o.platform)
	}
	entries, err := layerEntries(o)
	if err != nil {
		return v1.Hash{}, err
	}
	epoch, err := sourceDateEpoch()
	if err != nil {
		return v1.Hash{}, err
	}
	layerTar, err := writeLayer(entries, epoch)
	if err != nil {
		return v1.Hash{}, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return v1.Hash{}, fmt.Errorf("layer: %w", err)
	}

	base := empty.Image
	if o.base != "" {
		if base, err = tarball.ImageFromPath(o.base, nil); err != nil {
			return v1.Hash{}, fmt.Errorf("-base %s: %w", o.base, err)
		}
	}
	cf, err := base.ConfigFile()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("base config: %w", err)
	}
	cf = cf.DeepCopy()
	if o.base == "" {
		cf.OS, cf.Architecture = osName, arch
		cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	} else if cf.OS != osName || cf.Architecture != arch {
		return v1.Hash{}, fmt.Errorf("-base %s is %s/%s, not %s", o.base, cf.OS, cf.Architecture, o.platform)
	}
	if err := applyConfig(&cf.Config, o); err != nil {
		return v1.Hash{}, err
	}
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, History: v1.History{
		Created:   v1.Time{Time: epoch},
		CreatedBy: "mkimage " + strings.Join(os.Args[1:], " "),
	}})
	if err != nil {
		return v1.Hash{}, fmt.Errorf("add layer: %w", err)
	}
	// mutate.ConfigFile would drop the history and diff IDs that Append
	// recorded; take them over.
	appended, err := img.ConfigFile()
	if err != nil {
		return v1.Hash{}, err
	}
	cf.History, cf.RootFS = appended.History, appended.RootFS
	cf.Created = v1.Time{Time: epoch}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return v1.Hash{}, fmt.Errorf("config: %w", err)
	}
	if err := tarball.WriteToFile(o.out, ref, img); err != nil {
		return v1.Hash{}, fmt.Errorf("write %s: %w", o.out, err)
	}
	return img.Digest()
}

func sourceDateEpoch() (time.Time, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	s, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: want seconds since the epoch", v)
	}
	return time.Unix(s, 0).UTC(), nil
}

// layerEntries collects the files of the layer, with their parent
// directories.
func layerEntries(o options) ([]entry, error) {
	files := map[string]entry{}
	addFile := func(e entry) error {
		if !path.IsAbs(e.path) || path.Clean(e.path) != e.path || e.path == "/" {
			return fmt.Errorf("%q: the path in the image must be absolute and clean", e.path)
		}
		if prev, dup := files[e.path]; dup && !(prev.dir && e.dir) {
			return fmt.Errorf("%s is added twice", e.path)
		}
		files[e.path] = e
		return nil
	}
	for _, a := range o.add {
		src, dst, ok := strings.Cut(a, "=")
		if !ok || src == "" || dst == "" {
			return nil, fmt.Errorf("-add %q: want SRC=DST", a)
		}
		fi, err := os.Stat(src)
		if err != nil {
			return nil, fmt.Errorf("-add %s: %w", a, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("-add %s: %s is not a regular file", a, src)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, fmt.Errorf("-add %s: %w", a, err)
		}
		if err := checkStatic(data); err != nil {
			return nil, fmt.Errorf("-add %s: %w", a, err)
		}
		if err := addFile(entry{path: dst, mode: int64(fi.Mode().Perm()), data: data}); err != nil {
			return nil, fmt.Errorf("-add %s: %w", a, err)
		}
	}
	if o.caCerts != "" {
		data, err := os.ReadFile(o.caCerts)
		if err != nil {
			return nil, fmt.Errorf("-ca-certs: %w", err)
		}
		if !bytes.Contains(data, []byte("-----BEGIN CERTIFICATE-----")) {
			return nil, fmt.Errorf("-ca-certs %s: no PEM certificate in it", o.caCerts)
		}
		if err := addFile(entry{path: caBundle, mode: 0o644, data: data}); err != nil {
			return nil, err
		}
	}
	if o.nonroot {
		for _, e := range []entry{
			{path: "/etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\n" +
				"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
				"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
			{path: "/etc/group", mode: 0o644, data: []byte("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")},
			{path: "/home/nonroot", dir: true, mode: 0o700, uid: nonrootID, gid: nonrootID},
			{path: "/tmp", dir: true, mode: 0o1777},
		} {
			if err := addFile(e); err != nil {
				return nil, err
			}
		}
	}
	if len(files) == 0 {
		return nil, errors.New("nothing to add: give -add, -ca-certs or -nonroot")
	}
	// Parents first, as root-owned 0755 directories unless given.
	for p := range files {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := files[d]; !ok {
				files[d] = entry{path: d, dir: true, mode: 0o755}
			} else if !files[d].dir {
				return nil, fmt.Errorf("%s is a file and the parent of %s", d, p)
			}
		}
	}
	out := make([]entry, 0, len(files))
	for _, e := range files {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b entry) int { return strings.Compare(a.path, b.path) })
	return out, nil
}

const caBundle = "/etc/ssl/certs/ca-certificates.crt"

// checkStatic refuses a dynamically linked executable: the images have no
// libc or loader, so it could not start (a classic surprise with Debian's
// busybox, of which only busybox-static is static).
func checkStatic(data []byte) error {
	if !bytes.HasPrefix(data, []byte(elf.ELFMAG)) {
		return nil
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("read ELF: %w", err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked: it cannot run on an image without libc (build it with CGO_ENABLED=0, or use a static build)")
		}
	}
	return nil
}

func writeLayer(entries []entry, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name:    strings.TrimPrefix(e.path, "/"),
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.gid,
			ModTime: mtime,
			Format:  tar.FormatPAX,
		}
		if e.dir {
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// applyConfig sets the run-time configuration from the flags.
func applyConfig(c *v1.Config, o options) error {
	if o.nonroot {
		c.User = fmt.Sprintf("%d:%d", nonrootID, nonrootID)
	}
	if o.user != "" {
		c.User = o.user
	}
	if o.caCerts != "" {
		setEnv(c, "SSL_CERT_FILE="+caBundle)
	}
	for _, kv := range o.env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("-env %q: want K=V", kv)
		}
		setEnv(c, kv)
	}
	if len(o.entrypoint) > 0 {
		c.Entrypoint, c.Cmd = slices.Clone(o.entrypoint), nil
	}
	if o.workdir != "" {
		if !path.IsAbs(o.workdir) {
			return fmt.Errorf("-workdir %q: want an absolute path", o.workdir)
		}
		c.WorkingDir = o.workdir
	}
	for _, kv := range o.labels {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("-label %q: want K=V", kv)
		}
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		c.Labels[k] = v
	}
	return nil
}

func setEnv(c *v1.Config, kv string) {
	k, _, _ := strings.Cut(kv, "=")
	c.Env = slices.DeleteFunc(c.Env, func(e string) bool { return strings.HasPrefix(e, k+"=") })
	c.Env = append(c.Env, kv)
}
