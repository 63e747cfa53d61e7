package samples

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMailMatchesFiles: the embedded samples are exactly the files in
// samples/mail, in name order.
func TestMailMatchesFiles(t *testing.T) {
	msgs, err := Mail()
	if err != nil {
		t.Fatal(err)
	}
	names, err := filepath.Glob(filepath.Join("mail", "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != len(names) || len(msgs) < 10 {
		t.Fatalf("embedded %d samples, %d files on disk; want the same, at least 10", len(msgs), len(names))
	}
	for i, m := range msgs {
		if filepath.Base(names[i]) != m.Name {
			t.Errorf("sample %d: %s, file %s", i, m.Name, names[i])
		}
		b, err := os.ReadFile(names[i])
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != string(m.Data) {
			t.Errorf("%s: embedded bytes differ from the file", m.Name)
		}
	}
}
