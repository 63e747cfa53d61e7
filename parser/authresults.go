package parser

import (
	"strconv"
	"strings"

	"github.com/emersion/go-message/textproto"
)

// authResults reads the sender authentication verdicts.
//
// Authentication-Results (RFC 8601) fields are used only when their
// authserv-id is one of Options.TrustedAuthservIDs: anybody can write such
// a field into a mail, and only the receiving server's own (which must
// remove look-alikes arriving from outside, RFC 8601 section 5) is
// meaningful. With no trusted ids configured none is used. Several trusted
// fields are merged (milters often write one per method): per method the
// topmost result wins, except dkim, which is pass when any signature
// passed. Fields without an authserv-id (Exchange Online writes them so)
// cannot be attributed and are never used.
//
// X-Spam-Flag, X-Spam-Score and X-Spam-Status (SpamAssassin, Rspamd) are
// read from their topmost occurrence.
func (p *parser) authResults(h textproto.Header) Auth {
	var a Auth
	if len(p.opts.TrustedAuthservIDs) > 0 {
		dkimPass := false
		for _, v := range h.Values("Authentication-Results") {
			id, results := parseAuthResults(v)
			if id == "" || !containsFold(p.opts.TrustedAuthservIDs, id) {
				continue
			}
			if a.AuthservID == "" {
				a.AuthservID = id
			}
			for _, r := range results {
				switch r.method {
				case "spf":
					setFirst(&a.SPF, r.result)
				case "dmarc":
					if a.DMARC == "" {
						a.DMARC = r.result
						a.DMARCDomain = strings.ToLower(r.headerFrom)
					}
				case "arc":
					setFirst(&a.ARC, r.result)
				case "dkim":
					if r.result == "pass" {
						if !dkimPass {
							a.DKIM = "pass"
							dkimPass = true
						}
						if d := strings.ToLower(r.dkimDomain); d != "" && !containsFold(a.DKIMDomains, d) {
							a.DKIMDomains = append(a.DKIMDomains, d)
						}
					} else if !dkimPass {
						setFirst(&a.DKIM, r.result)
					}
				}
			}
		}
	}
	status := h.Get("X-Spam-Status")
	if v := strings.ToLower(strings.TrimSpace(h.Get("X-Spam-Flag"))); v != "" {
		switch v {
		case "yes", "true", "1":
			a.SpamFlag = boolPtr(true)
		case "no", "false", "0":
			a.SpamFlag = boolPtr(false)
		}
	}
	if a.SpamFlag == nil && status != "" {
		s := strings.ToLower(strings.TrimSpace(status))
		switch {
		case strings.HasPrefix(s, "yes"):
			a.SpamFlag = boolPtr(true)
		case strings.HasPrefix(s, "no"):
			a.SpamFlag = boolPtr(false)
		}
	}
	if f, ok := leadingFloat(h.Get("X-Spam-Score")); ok {
		a.SpamScore = &f
	} else if status != "" {
		for _, key := range []string{"score=", "hits="} {
			if i := strings.Index(strings.ToLower(status), key); i >= 0 {
				if f, ok := leadingFloat(status[i+len(key):]); ok {
					a.SpamScore = &f
					break
				}
			}
		}
	}
	return a
}

func setFirst(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

func boolPtr(b bool) *bool { return &b }

// leadingFloat parses the number at the start of s ("5.3 / 15.0" gives 5.3).
func leadingFloat(s string) (float64, bool) {
	s = strings.TrimSpace(s)
	end := 0
	for end < len(s) && (s[end] >= '0' && s[end] <= '9' || s[end] == '.' || s[end] == '-' && end == 0 || s[end] == '+' && end == 0) {
		end++
	}
	if end == 0 {
		return 0, false
	}
	f, err := strconv.ParseFloat(s[:end], 64)
	if err != nil {
		return 0, false
	}
	return f, true
}

// authResult is one resinfo of an Authentication-Results field.
type authResult struct {
	method     string // lower case, without version
	result     string // lower case
	dkimDomain string // header.d, else the domain of header.i
	headerFrom string // header.from
}

// parseAuthResults parses an Authentication-Results value (RFC 8601
// section 2.2): the authserv-id, then "; method=result ptype.prop=value ..."
// items. Comments are dropped; quoted strings are unquoted. id is "" when
// the field has none (it starts with a method=result item).
func parseAuthResults(v string) (id string, results []authResult) {
	segs := splitOutsideQuotes(arStripComments(v), ';')
	if len(segs) == 0 {
		return "", nil
	}
	head := arTokens(segs[0])
	if len(head) == 0 || strings.Contains(head[0], "=") {
		return "", nil
	}
	if id = arUnquote(head[0]); id == "" {
		return "", nil
	}
	for _, seg := range segs[1:] {
		toks := arTokens(seg)
		if len(toks) == 0 {
			continue
		}
		m, res, ok := strings.Cut(toks[0], "=")
		if !ok || m == "" || res == "" {
			continue // "none": no results
		}
		if i := strings.IndexByte(m, '/'); i >= 0 {
			m = m[:i]
		}
		r := authResult{method: strings.ToLower(m), result: strings.ToLower(arUnquote(res))}
		for _, t := range toks[1:] {
			k, val, ok := strings.Cut(t, "=")
			if !ok {
				continue
			}
			val = arUnquote(val)
			switch strings.ToLower(k) {
			case "header.d":
				r.dkimDomain = val
			case "header.i":
				if r.dkimDomain == "" {
					if at := strings.LastIndexByte(val, '@'); at >= 0 {
						r.dkimDomain = val[at+1:]
					} else {
						r.dkimDomain = val
					}
				}
			case "header.from":
				r.headerFrom = val
			}
		}
		results = append(results, r)
	}
	return id, results
}

// arStripComments removes RFC 5322 comments (nested parentheses, outside
// quoted strings), replacing each with a space.
func arStripComments(s string) string {
	if !strings.ContainsRune(s, '(') {
		return s
	}
	var b strings.Builder
	depth, inQuote, esc := 0, false, false
	for _, r := range s {
		switch {
		case esc:
			esc = false
			if depth == 0 {
				b.WriteRune(r)
			}
			continue
		case r == '\\':
			esc = true
			if depth == 0 {
				b.WriteRune(r)
			}
			continue
		case inQuote:
			if r == '"' {
				inQuote = false
			}
			b.WriteRune(r)
			continue
		case r == '"' && depth == 0:
			inQuote = true
		case r == '(':
			depth++
			continue
		case r == ')' && depth > 0:
			depth--
			if depth == 0 {
				b.WriteByte(' ')
			}
			continue
		}
		if depth == 0 {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// splitOutsideQuotes splits s on sep outside quoted strings.
func splitOutsideQuotes(s string, sep byte) []string {
	var out []string
	inQuote, esc, start := false, false, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case esc:
			esc = false
		case c == '\\' && inQuote:
			esc = true
		case c == '"':
			inQuote = !inQuote
		case c == sep && !inQuote:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// arTokens splits an item into white-space separated tokens, outside quoted
// strings, after joining "a = b", "a . b" and "a / b" into one token.
func arTokens(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, esc, pendingJoin := false, false, false
	flush := func() {
		if cur.Len() > 0 {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case esc:
			esc = false
			cur.WriteByte(c)
		case inQuote:
			if c == '\\' {
				esc = true
			} else if c == '"' {
				inQuote = false
			}
			cur.WriteByte(c)
		case c == '"':
			inQuote = true
			cur.WriteByte(c)
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			pendingJoin = true
		case c == '=' || c == '.' || c == '/':
			if cur.Len() == 0 && len(out) > 0 {
				// "a =b": continue the previous token
				cur.WriteString(out[len(out)-1])
				out = out[:len(out)-1]
			}
			cur.WriteByte(c)
			pendingJoin = false
			// "a= b": skip the blanks that follow
			for i+1 < len(s) && (s[i+1] == ' ' || s[i+1] == '\t' || s[i+1] == '\r' || s[i+1] == '\n') {
				i++
			}
		default:
			if pendingJoin {
				flush()
				pendingJoin = false
			}
			cur.WriteByte(c)
		}
	}
	flush()
	return out
}

// arUnquote removes the double quotes of a quoted string and its escapes.
func arUnquote(s string) string {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return s
	}
	s = s[1 : len(s)-1]
	if !strings.ContainsRune(s, '\\') {
		return s
	}
	var b strings.Builder
	esc := false
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && !esc {
			esc = true
			continue
		}
		esc = false
		b.WriteByte(s[i])
	}
	return b.String()
}
