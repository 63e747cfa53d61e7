package logging

import (
	"bytes"
	"encoding/base64"
	"regexp"
	"strings"
)

// Redacted replaces a secret in logged text.
const Redacted = "***"

// minSecretCore is the shortest base64 fragment of a secret that Redactor
// replaces by plain substring search; shorter fragments (secrets of one to
// three bytes) are only found by decoding.
const minSecretCore = 4

// Redactor removes known secrets from text that is about to be logged: the
// secrets themselves and every base64 form of them (standard and URL-safe
// alphabet, with and without padding, alone or embedded at any offset in a
// longer encoded payload such as a SASL PLAIN, XOAUTH2 or OAUTHBEARER
// message). It is the last line of defence behind protocol-aware redaction,
// so it errs on the side of replacing too much.
//
// The zero value redacts nothing. A Redactor is not safe for concurrent
// Add; Redact may be called concurrently once set up.
type Redactor struct {
	secrets  [][]byte // raw values, longest first
	patterns []string // raw values and their base64 fragments
}

// NewRedactor returns a Redactor for the non-empty secrets.
func NewRedactor(secrets ...string) *Redactor {
	r := &Redactor{}
	for _, s := range secrets {
		r.Add(s)
	}
	return r
}

var b64Encodings = []*base64.Encoding{base64.StdEncoding, base64.URLEncoding}

// Add registers one more secret ("" is ignored).
func (r *Redactor) Add(secret string) {
	if secret == "" {
		return
	}
	r.secrets = append(r.secrets, []byte(secret))
	r.addPattern(secret)
	// A secret at byte offset k (mod 3) of an encoded stream always
	// produces the same run of base64 characters, whatever surrounds it:
	// the characters whose six bits all come from the secret. Those runs,
	// for k = 0, 1, 2 and both alphabets, cover the secret encoded alone
	// (padded or not) and inside any larger payload.
	for _, enc := range b64Encodings {
		for k := range 3 {
			buf := append(make([]byte, k), secret...)
			s := enc.WithPadding(base64.NoPadding).EncodeToString(buf)
			from := (4*k + 2) / 3 // ceil(8k/6)
			to := 8 * len(buf) / 6
			if to-from >= minSecretCore {
				r.addPattern(s[from:to])
			}
		}
		// The complete encodings, padding included, for short secrets
		// whose fragments are below minSecretCore.
		r.addPattern(enc.EncodeToString([]byte(secret)))
	}
}

func (r *Redactor) addPattern(p string) {
	for _, q := range r.patterns {
		if q == p {
			return
		}
	}
	// Longest first, so a longer form is replaced before a fragment of it.
	i := 0
	for i < len(r.patterns) && len(r.patterns[i]) >= len(p) {
		i++
	}
	r.patterns = append(r.patterns, "")
	copy(r.patterns[i+1:], r.patterns[i:])
	r.patterns[i] = p
}

// b64Run matches a run of characters that may be base64 (either alphabet).
var b64Run = regexp.MustCompile(`[A-Za-z0-9+/_=-]{4,}`)

// Redact returns s with every secret and base64 form of one replaced by
// Redacted. Besides substring search it decodes every base64-looking run
// (at each of the four alignments, so a run glued to other text is still
// read) and replaces the whole run when the decoded bytes contain a secret.
func (r *Redactor) Redact(s string) string {
	if r == nil || len(r.secrets) == 0 {
		return s
	}
	for _, p := range r.patterns {
		s = strings.ReplaceAll(s, p, Redacted)
	}
	return b64Run.ReplaceAllStringFunc(s, func(run string) string {
		if r.decodesToSecret(run) {
			return Redacted
		}
		return run
	})
}

func (r *Redactor) decodesToSecret(run string) bool {
	for _, enc := range b64Encodings {
		// A run mixing both alphabets' special characters decodes in
		// neither: split it at characters foreign to enc.
		for _, piece := range splitForeign(run, enc == base64.URLEncoding) {
			for off := 0; off < 4 && off < len(piece); off++ {
				p := piece[off:]
				if len(p)%4 == 1 {
					p = p[:len(p)-1]
				}
				b, err := enc.WithPadding(base64.NoPadding).DecodeString(p)
				if err != nil {
					continue
				}
				for _, sec := range r.secrets {
					if bytes.Contains(b, sec) {
						return true
					}
				}
			}
		}
	}
	return false
}

// splitForeign splits s at '=' and at the special characters of the other
// alphabet ('-' and '_' for standard, '+' and '/' for URL-safe).
func splitForeign(s string, url bool) []string {
	foreign := "-_="
	if url {
		foreign = "+/="
	}
	return strings.FieldsFunc(s, func(c rune) bool { return strings.ContainsRune(foreign, c) })
}
