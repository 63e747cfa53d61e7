package parser

import (
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/emersion/go-message/charset"
)

// parseParamHeader parses a Content-Type or Content-Disposition value
// leniently: unquoted values may hold tspecials and spaces, RFC 2231
// continuations and charsets are joined and decoded (any charset that
// go-message's charset package knows, not only UTF-8), and RFC 2047 words
// inside values (common in names) are decoded. Keys are lower case.
func (p *parser) parseParamHeader(v string) (value string, params map[string]string, ok bool) {
	ok = true
	v = strings.TrimSpace(v)
	i := indexUnquoted(v, ';')
	if i < 0 {
		value, v = v, ""
	} else {
		value, v = v[:i], v[i+1:]
	}
	value = strings.ToLower(strings.TrimSpace(value))
	params = map[string]string{}
	type piece struct {
		n   int
		enc bool
		val string
	}
	ext := map[string][]piece{}
	for v != "" {
		var kv string
		j := indexUnquoted(v, ';')
		if j < 0 {
			kv, v = v, ""
		} else {
			kv, v = v[:j], v[j+1:]
		}
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		eq := strings.IndexByte(kv, '=')
		if eq <= 0 {
			ok = false
			continue
		}
		key := strings.ToLower(strings.TrimSpace(kv[:eq]))
		val := strings.TrimSpace(kv[eq+1:])
		if strings.HasPrefix(val, `"`) {
			val = unquote(val)
		}
		if star := strings.IndexByte(key, '*'); star >= 0 {
			base, rest := key[:star], key[star+1:]
			enc := strings.HasSuffix(rest, "*") || rest == ""
			rest = strings.TrimSuffix(rest, "*")
			n := 0
			if rest != "" {
				var err error
				n, err = strconv.Atoi(rest)
				if err != nil {
					continue
				}
			}
			ext[base] = append(ext[base], piece{n, enc, val})
			continue
		}
		if _, dup := params[key]; !dup {
			params[key] = val
		}
	}
	for base, pieces := range ext {
		sort.SliceStable(pieces, func(a, b int) bool { return pieces[a].n < pieces[b].n })
		var raw []byte
		cs := ""
		for k, pc := range pieces {
			val := pc.val
			if pc.enc {
				if k == 0 {
					if q1 := strings.IndexByte(val, '\''); q1 >= 0 {
						if q2 := strings.IndexByte(val[q1+1:], '\''); q2 >= 0 {
							cs = val[:q1]
							val = val[q1+1+q2+1:]
						}
					}
				}
				if u, err := url.PathUnescape(val); err == nil {
					raw = append(raw, u...)
				} else {
					raw = append(raw, pctDecodeLenient(val)...)
				}
			} else {
				raw = append(raw, val...)
			}
		}
		params[base] = p.bytesToUTF8(raw, cs)
	}
	return value, params, ok
}

func (p *parser) bytesToUTF8(b []byte, cs string) string {
	cs = strings.ToLower(strings.TrimSpace(cs))
	switch cs {
	case "", "utf-8", "utf8", "us-ascii":
		return p.fixUTF8(string(b))
	}
	r, err := charset.Reader(cs, strings.NewReader(string(b)))
	if err != nil {
		return p.fixUTF8(string(b))
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return p.fixUTF8(string(b))
	}
	return strings.ToValidUTF8(string(out), "\uFFFD")
}

func pctDecodeLenient(s string) []byte {
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			h, ok1 := unhex(s[i+1])
			l, ok2 := unhex(s[i+2])
			if ok1 && ok2 {
				out = append(out, h<<4|l)
				i += 2
				continue
			}
		}
		out = append(out, s[i])
	}
	return out
}

// indexUnquoted returns the index of c outside a quoted string, or -1.
func indexUnquoted(s string, c byte) int {
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && inQuote:
			i++
		case s[i] == '"':
			inQuote = !inQuote
		case s[i] == c && !inQuote:
			return i
		}
	}
	return -1
}

// unquote reads a quoted string that starts s, undoing backslash escapes;
// an unterminated string runs to the end.
func unquote(s string) string {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		case c == '"':
			return b.String()
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
