// gotar prints Go's archive/tar reading of one layer tar, the reader behind
// Docker, containerd, podman and umoci, as JSON lines for the differential
// test (tests/integration/test_tar_differential.py).
//
//	gotar [-gzip] FILE
//
// One line per header Next() returns (with the sha256 of its data, or
// "skipped" past -max-data bytes), in order, then one "end" line: "ok",
// or the error Go returned and the index of the last entry read before it.
// After the end of the archive the rest of the stream is read to its end,
// as an unpacker does to hash the whole layer (its diff_id), so an error
// there (gzip junk, a bad trailer) is reported too.
//
// Byte strings (names, link targets, PAX values) are escaped the way
// tests/tools/lxdump.c prints them: printable ASCII as is except '\',
// every other byte as \xNN.
package main

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
)

type entry struct {
	Kind     string            `json:"kind"`
	Index    int               `json:"index"`
	Name     string            `json:"name"`
	Typeflag string            `json:"typeflag"`
	Size     int64             `json:"size"`
	Linkname string            `json:"linkname"`
	Mode     int64             `json:"mode"`
	UID      int               `json:"uid"`
	GID      int               `json:"gid"`
	MtimeSec int64             `json:"mtime_sec"`
	MtimeNs  int               `json:"mtime_nsec"`
	Devmajor int64             `json:"devmajor"`
	Devminor int64             `json:"devminor"`
	Format   string            `json:"format"`
	PAX      map[string]string `json:"pax"`
	Xattrs   map[string]string `json:"xattrs"`
	DataLen  int64             `json:"data_len"`
	SHA256   string            `json:"sha256"`
}

type end struct {
	Kind  string `json:"kind"`
	OK    bool   `json:"ok"`
	Stage string `json:"stage,omitempty"` // gzip, header, data, trailer
	Error string `json:"error,omitempty"`
	After int    `json:"after"` // index of the last entry read, -1 if none
}

func esc(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c < 0x7f && c != '\\' {
			b = append(b, c)
		} else {
			b = append(b, fmt.Sprintf("\\x%02x", c)...)
		}
	}
	return string(b)
}

func escMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[esc(k)] = esc(v)
	}
	return out
}

func main() {
	gz := flag.Bool("gzip", false, "the file is gzip-compressed")
	maxData := flag.Int64("max-data", 256<<20, "hash no entry larger than this")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: gotar [-gzip] FILE")
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer f.Close()
	out := json.NewEncoder(os.Stdout)
	finish := func(stage string, err error, after int) {
		e := end{Kind: "end", OK: err == nil, After: after}
		if err != nil {
			e.Stage, e.Error = stage, err.Error()
		}
		out.Encode(e)
		os.Exit(0)
	}

	var r io.Reader = bufio.NewReader(f)
	if *gz {
		zr, err := gzip.NewReader(r)
		if err != nil {
			finish("gzip", err, -1)
		}
		r = zr
	}
	tr := tar.NewReader(r)
	last := -1
	for i := 0; ; i++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			finish("header", err, last)
		}
		// a sparse entry of 60 GB is mostly holes: Next() skips it
		// cheaply, hashing it would not be
		h := sha256.New()
		var n int64
		var derr error
		sum := "skipped"
		if hdr.Size <= *maxData {
			n, derr = io.Copy(h, tr)
			sum = hex.EncodeToString(h.Sum(nil))
		}
		out.Encode(entry{
			Kind: "entry", Index: i,
			Name: esc(hdr.Name), Typeflag: esc(string(hdr.Typeflag)),
			Size: hdr.Size, Linkname: esc(hdr.Linkname),
			Mode: hdr.Mode, UID: hdr.Uid, GID: hdr.Gid,
			MtimeSec: hdr.ModTime.Unix(),
			MtimeNs:  hdr.ModTime.Nanosecond(),
			Devmajor: hdr.Devmajor, Devminor: hdr.Devminor,
			Format:  hdr.Format.String(),
			PAX:     escMap(hdr.PAXRecords),
			Xattrs:  escMap(hdr.Xattrs), //nolint:staticcheck
			DataLen: n, SHA256: sum,
		})
		if derr != nil {
			finish("data", derr, i)
		}
		last = i
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		finish("trailer", err, last)
	}
	finish("", nil, last)
}
