package parser

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/jhillyerd/enmime/v2"
)

// benchFiles is the corpus when present, else parser/testdata.
func benchFiles(b *testing.B) ([][]byte, int64) {
	files, _ := filepath.Glob(filepath.Join(corpusDir, "*.eml"))
	if len(files) == 0 {
		files, _ = filepath.Glob("testdata/*.eml")
	}
	var raws [][]byte
	var total int64
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		raws = append(raws, raw)
		total += int64(len(raw))
	}
	return raws, total
}

// BenchmarkParse parses every benchmark file once per iteration; MB/s is
// over the raw bytes.
func BenchmarkParse(b *testing.B) {
	raws, total := benchFiles(b)
	b.SetBytes(total)
	b.ReportAllocs()
	for b.Loop() {
		for _, raw := range raws {
			if _, err := Parse(bytes.NewReader(raw), Options{}); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkEnmime runs enmime's ReadEnvelope on the same files, as the
// reference the parser is measured against.
func BenchmarkEnmime(b *testing.B) {
	raws, total := benchFiles(b)
	b.SetBytes(total)
	b.ReportAllocs()
	for b.Loop() {
		for _, raw := range raws {
			enmime.ReadEnvelope(bytes.NewReader(raw)) // errors are expected on broken mail
		}
	}
}
