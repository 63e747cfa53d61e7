package secret

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

func TestBoxSealOpen(t *testing.T) {
	box, err := NewBox(testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte(`{"access_token":"ya29.very-secret-access","refresh_token":"1//refresh-secret"}`)
	sealed, err := box.Seal(plain, []byte("server-a"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"ya29", "very-secret", "refresh-secret", "access_token"} {
		if bytes.Contains(sealed, []byte(s)) {
			t.Fatalf("sealed data contains plaintext %q", s)
		}
	}
	sealed2, err := box.Seal(plain, []byte("server-a"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(sealed, sealed2) {
		t.Fatal("two seals of the same plaintext are equal: nonce not random")
	}
	got, err := box.Open(sealed, []byte("server-a"))
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Open = %q, %v; want %q", got, err, plain)
	}

	tests := []struct {
		name   string
		box    *Box
		sealed []byte
		ad     string
	}{
		{"wrong key", mustBox(t, testKey(2)), sealed, "server-a"},
		{"wrong ad", box, sealed, "server-b"},
		{"tampered", box, flip(sealed, len(sealed)-1), "server-a"},
		{"truncated", box, sealed[:10], "server-a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.box.Open(tc.sealed, []byte(tc.ad)); !errors.Is(err, ErrOpen) {
				t.Fatalf("Open = %v, want ErrOpen", err)
			}
		})
	}
}

func mustBox(t *testing.T, k []byte) *Box {
	b, err := NewBox(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 1
	return c
}

func TestParseKey(t *testing.T) {
	k := testKey(7)
	for _, s := range []string{hex.EncodeToString(k), " " + base64.StdEncoding.EncodeToString(k) + "\n", base64.RawURLEncoding.EncodeToString(k)} {
		got, err := ParseKey(s)
		if err != nil || !bytes.Equal(got, k) {
			t.Fatalf("ParseKey(%q) = %x, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "abcd", hex.EncodeToString(k[:16]), strings.Repeat("z", 64)} {
		if _, err := ParseKey(s); err == nil {
			t.Fatalf("ParseKey(%q) succeeded, want error", s)
		} else if s != "" && strings.Contains(err.Error(), s) {
			t.Fatalf("ParseKey error echoes the key: %v", err)
		}
	}
}

func TestLoadKey(t *testing.T) {
	noenv := func(string) string { return "" }

	t.Run("generated default", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data")
		var logs bytes.Buffer
		logger := slog.New(slog.NewJSONHandler(&logs, nil))
		b1, err := LoadKey(dir, "", noenv, logger)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, DefaultKeyFile)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file mode = %v, want 0600", fi.Mode().Perm())
		}
		if n := strings.Count(logs.String(), `"level":"WARN"`); n != 1 {
			t.Fatalf("got %d warnings, want 1: %s", n, logs.String())
		}
		logs.Reset()
		// A second load reads the same key and does not warn again.
		b2, err := LoadKey(dir, "", noenv, logger)
		if err != nil {
			t.Fatal(err)
		}
		if logs.Len() != 0 {
			t.Fatalf("second load logged: %s", logs.String())
		}
		sealed, _ := b1.Seal([]byte("x"), nil)
		if _, err := b2.Open(sealed, nil); err != nil {
			t.Fatalf("reloaded key cannot open: %v", err)
		}
		key, _ := os.ReadFile(path)
		if strings.Contains(logs.String(), strings.TrimSpace(string(key))) {
			t.Fatal("key logged")
		}
	})

	t.Run("env wins", func(t *testing.T) {
		k := testKey(9)
		env := func(n string) string {
			if n == KeyEnv {
				return base64.StdEncoding.EncodeToString(k)
			}
			return ""
		}
		dir := t.TempDir()
		b, err := LoadKey(dir, "", env, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, DefaultKeyFile)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("key file created although %s is set: %v", KeyEnv, err)
		}
		sealed, _ := mustBox(t, k).Seal([]byte("x"), nil)
		if _, err := b.Open(sealed, nil); err != nil {
			t.Fatalf("env key not used: %v", err)
		}
	})

	t.Run("explicit file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "k")
		k := testKey(3)
		if err := os.WriteFile(path, []byte(hex.EncodeToString(k)), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := LoadKey(t.TempDir(), path, noenv, nil)
		if err != nil {
			t.Fatal(err)
		}
		sealed, _ := mustBox(t, k).Seal([]byte("x"), nil)
		if _, err := b.Open(sealed, nil); err != nil {
			t.Fatalf("file key not used: %v", err)
		}
	})

	t.Run("explicit file missing", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "missing.key")
		if _, err := LoadKey(t.TempDir(), path, noenv, nil); err == nil {
			t.Fatal("LoadKey with a missing explicit key file succeeded")
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("explicit key file was created")
		}
	})

	t.Run("bad env", func(t *testing.T) {
		env := func(string) string { return "not-a-key" }
		_, err := LoadKey(t.TempDir(), "", env, nil)
		if err == nil || strings.Contains(err.Error(), "not-a-key") {
			t.Fatalf("LoadKey = %v, want an error that does not echo the value", err)
		}
	})
}

func BenchmarkBoxSealOpen(b *testing.B) {
	box, err := NewBox(testKey(1))
	if err != nil {
		b.Fatal(err)
	}
	pt := bytes.Repeat([]byte("t"), 2048) // about a Microsoft token pair
	for b.Loop() {
		s, err := box.Seal(pt, []byte("srv"))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := box.Open(s, []byte("srv")); err != nil {
			b.Fatal(err)
		}
	}
}
