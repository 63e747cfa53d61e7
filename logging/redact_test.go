package logging

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestRedactorBase64Forms(t *testing.T) {
	const secret = "pa55-wörd?>~"
	r := NewRedactor(secret, "")
	var inputs []string
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		inputs = append(inputs, enc.EncodeToString([]byte(secret)))
		// embedded at every alignment in a longer payload
		for _, pre := range []string{"", "x", "xy", "\x00alice\x00", "user=bob\x01auth=Bearer "} {
			inputs = append(inputs, enc.EncodeToString([]byte(pre+secret+"\x01\x01")))
		}
	}
	inputs = append(inputs, secret)
	for _, in := range inputs {
		for _, line := range []string{in, "A OK " + in + " tail", "glued" + in} {
			got := r.Redact(line)
			if strings.Contains(got, secret) || strings.Contains(got, in) {
				t.Errorf("Redact(%q) = %q", line, got)
			}
			if !strings.Contains(got, Redacted) {
				t.Errorf("Redact(%q) = %q: nothing replaced", line, got)
			}
		}
	}
	for _, keep := range []string{"T2 SELECT INBOX", "* 3 EXISTS", "dGhpcyBpcyBmaW5l"} {
		if got := r.Redact(keep); got != keep {
			t.Errorf("Redact(%q) = %q, want unchanged", keep, got)
		}
	}
	if got := (*Redactor)(nil).Redact("x"); got != "x" {
		t.Errorf("nil Redactor changed text: %q", got)
	}
}
