// esgzref runs the reference implementation of eStargz, the estargz Go
// package of containerd's stargz-snapshotter (Debian's
// golang-github-containerd-stargz-snapshotter-dev), for
// tests/integration/test_estargz_ref.py.
//
//	esgzref build [-prioritize a,b,...] [-chunk N] IN.tar OUT.blob
//	esgzref verify BLOB TOC_DIGEST
//
// build: estargz.Build of a plain tar, written to OUT.blob; prints one JSON
// line {"toc_digest", "diff_id", "size"}: the value of the
// containerd.io/snapshot/stargz/toc.digest annotation, the sha256 of the
// uncompressed blob and the blob's size. Without -prioritize the layer
// gets .no.prefetch.landmark, with it the listed files come first and
// .prefetch.landmark follows them.
//
// verify: estargz.Open of the blob, VerifyTOC against TOC_DIGEST, then
// every entry of the tree the reader builds (hardlinks as their target,
// which they share), one JSON line each, sorted by name; each regular
// file's bytes read through the reader, every chunk of it checked against
// the chunk digest the verifier holds for its offset, and the whole file
// against its "digest". The last line is {"end": true, "ok": ..., "error"}.
// Exit status 0 even when the blob fails, so the test sees why.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"
)

type entry struct {
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Mode     int64             `json:"mode"`
	UID      int               `json:"uid"`
	GID      int               `json:"gid"`
	Size     int64             `json:"size"`
	Link     string            `json:"link"`
	DevMajor int               `json:"devMajor"`
	DevMinor int               `json:"devMinor"`
	Mtime    int64             `json:"mtime"`
	NumLink  int               `json:"nlink"`
	Xattrs   map[string]string `json:"xattrs"` // values hex
	SHA256   string            `json:"sha256,omitempty"`
	Chunks   int               `json:"chunks,omitempty"`
}

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "esgzref: "+format+"\n", a...)
	os.Exit(2)
}

func build(args []string) {
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	prio := fs.String("prioritize", "", "comma-separated files to put first")
	chunk := fs.Int("chunk", 0, "chunk size (0: the package's default)")
	fs.Parse(args)
	if fs.NArg() != 2 {
		fail("usage: esgzref build [-prioritize a,b] [-chunk N] IN OUT")
	}
	in, err := os.Open(fs.Arg(0))
	if err != nil {
		fail("%v", err)
	}
	st, err := in.Stat()
	if err != nil {
		fail("%v", err)
	}
	var opts []estargz.Option
	if *prio != "" {
		opts = append(opts, estargz.WithPrioritizedFiles(
			strings.Split(*prio, ",")))
	}
	if *chunk > 0 {
		opts = append(opts, estargz.WithChunkSize(*chunk))
	}
	blob, err := estargz.Build(io.NewSectionReader(in, 0, st.Size()), opts...)
	if err != nil {
		fail("build: %v", err)
	}
	out, err := os.Create(fs.Arg(1))
	if err != nil {
		fail("%v", err)
	}
	n, err := io.Copy(out, blob)
	if err == nil {
		err = blob.Close()
	}
	if err == nil {
		err = out.Close()
	}
	if err != nil {
		fail("writing the blob: %v", err)
	}
	json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"toc_digest": blob.TOCDigest().String(),
		"diff_id":    blob.DiffID().String(),
		"size":       n,
	})
}

// readFile reads @e's bytes through the reader, chunk by chunk, each
// chunk through the verifier registered for its offset.
func readFile(r *estargz.Reader, v estargz.TOCEntryVerifier, name string,
	e *estargz.TOCEntry, out *entry) error {
	sr, err := r.OpenFile(name)
	if err != nil {
		return err
	}
	whole := sha256.New()
	for off := int64(0); off < e.Size; {
		ce, ok := r.ChunkEntryForOffset(name, off)
		if !ok || ce.ChunkOffset != off || ce.ChunkSize <= 0 {
			return fmt.Errorf("%s: no chunk at offset %d", name, off)
		}
		dv, err := v.Verifier(ce)
		if err != nil {
			return fmt.Errorf("%s: %v", name, err)
		}
		// one ReadAt a chunk: each call inflates from its member's start
		buf := make([]byte, ce.ChunkSize)
		n, err := sr.ReadAt(buf, off)
		if err == io.EOF && int64(n) == ce.ChunkSize {
			err = nil
		}
		if err != nil {
			return fmt.Errorf("%s: reading chunk at %d: %v", name, off, err)
		}
		dv.Write(buf)
		whole.Write(buf)
		if !dv.Verified() {
			return fmt.Errorf("%s: chunk at %d does not match its digest",
				name, off)
		}
		out.Chunks++
		off += int64(n)
	}
	sum := "sha256:" + hex.EncodeToString(whole.Sum(nil))
	if e.Size > 0 && sum != e.Digest {
		return fmt.Errorf("%s: content %s, TOC digest %s", name, sum,
			e.Digest)
	}
	out.SHA256 = sum
	return nil
}

func verify(args []string) {
	if len(args) != 2 {
		fail("usage: esgzref verify BLOB TOC_DIGEST")
	}
	enc := json.NewEncoder(os.Stdout)
	err := verifyBlob(args[0], args[1], enc)
	res := map[string]interface{}{"end": true, "ok": err == nil}
	if err != nil {
		res["error"] = err.Error()
	}
	enc.Encode(res)
}

func verifyBlob(path, tocDigest string, enc *json.Encoder) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	r, err := estargz.Open(io.NewSectionReader(f, 0, st.Size()))
	if err != nil {
		return fmt.Errorf("open: %v", err)
	}
	want, err := digest.Parse(tocDigest)
	if err != nil {
		return err
	}
	v, err := r.VerifyTOC(want)
	if err != nil {
		return fmt.Errorf("verify: %v", err)
	}
	root, ok := r.Lookup("")
	if !ok {
		return errors.New("no root directory")
	}
	var out []entry
	var walk func(dir string, d *estargz.TOCEntry) error
	walk = func(dir string, d *estargz.TOCEntry) error {
		var err error
		d.ForeachChild(func(base string, e *estargz.TOCEntry) bool {
			name := base
			if dir != "" {
				name = dir + "/" + base
			}
			x := entry{Name: name, Type: e.Type, Mode: e.Mode,
				UID: e.UID, GID: e.GID, Size: e.Size,
				Link: e.LinkName, DevMajor: e.DevMajor,
				DevMinor: e.DevMinor, Mtime: e.ModTime().Unix(),
				NumLink: e.NumLink, Xattrs: map[string]string{}}
			for k, val := range e.Xattrs {
				x.Xattrs[k] = hex.EncodeToString(val)
			}
			if e.Type == "reg" {
				// a hardlink is its target's entry: read by that name
				if err = readFile(r, v, e.Name, e, &x); err != nil {
					return false
				}
			}
			out = append(out, x)
			if e.Type == "dir" {
				err = walk(name, e)
			}
			return err == nil
		})
		return err
	}
	if err := walk("", root); err != nil {
		return err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	for _, x := range out {
		enc.Encode(x)
	}
	return nil
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: esgzref build|verify ...")
	}
	switch os.Args[1] {
	case "build":
		build(os.Args[2:])
	case "verify":
		verify(os.Args[2:])
	default:
		fail("unknown command %q", os.Args[1])
	}
}
