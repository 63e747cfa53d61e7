package parser

import (
	"net/mail"
	"strings"
)

var addressParser = &mail.AddressParser{WordDecoder: wordDecoder}

// addressList parses an address list header (RFC 5322 section 3.4) with
// net/mail and, when that fails, element by element with a lenient
// fallback. Groups are flattened; names are decoded and unquoted.
func (p *parser) addressList(field string, values []string) []Address {
	out := []Address{}
	for _, v := range values {
		v = p.fixUTF8(v)
		if strings.TrimSpace(v) == "" {
			continue
		}
		if list, err := addressParser.ParseList(v); err == nil {
			for _, a := range list {
				out = append(out, p.address(a.Name, a.Address))
			}
			continue
		}
		bad := false
		for _, elem := range splitAddressList(v) {
			a, ok := p.lenientAddress(elem)
			if !ok {
				if strings.TrimSpace(elem) != "" {
					bad = true
				}
				continue
			}
			out = append(out, a)
		}
		if bad {
			p.warn(WarnBadAddress, "unparseable address in "+field)
		}
	}
	return out
}

func (p *parser) address(name, addr string) Address {
	if strings.Contains(name, "=?") {
		name = p.decodeWords(name)
	}
	name = normalizeSpace(name)
	if len(name) >= 2 && (name[0] == '"' && name[len(name)-1] == '"' || name[0] == '\'' && name[len(name)-1] == '\'') {
		name = strings.TrimSpace(name[1 : len(name)-1])
	}
	return Address{Address: strings.TrimSpace(addr), Name: name}
}

// splitAddressList splits on commas outside quotes, comments and angle
// brackets, and drops group syntax ("name:" ... ";").
func splitAddressList(v string) []string {
	var parts []string
	var cur strings.Builder
	inQuote, angle, paren := false, 0, 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\' && inQuote && i+1 < len(v):
			cur.WriteByte(c)
			i++
			c = v[i]
		case c == '"' && paren == 0:
			inQuote = !inQuote
		case inQuote:
		case c == '(':
			paren++
		case c == ')' && paren > 0:
			paren--
		case paren > 0:
		case c == '<':
			angle++
		case c == '>' && angle > 0:
			angle--
		case angle > 0:
		case c == ':':
			// group name: drop it
			cur.Reset()
			continue
		case c == ',' || c == ';':
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(c)
	}
	parts = append(parts, cur.String())
	return parts
}

func (p *parser) lenientAddress(elem string) (Address, bool) {
	elem = strings.TrimSpace(elem)
	if elem == "" {
		return Address{}, false
	}
	if a, err := addressParser.Parse(elem); err == nil {
		return p.address(a.Name, a.Address), true
	}
	if i := strings.LastIndexByte(elem, '<'); i >= 0 {
		j := strings.IndexByte(elem[i:], '>')
		addr := elem[i+1:]
		if j >= 0 {
			addr = elem[i+1 : i+j]
		}
		addr = strings.Join(strings.Fields(stripComments(addr)), "")
		if k := strings.LastIndexByte(addr, ':'); k >= 0 { // obsolete route
			addr = addr[k+1:]
		}
		name := stripComments(elem[:i])
		name = strings.ReplaceAll(name, `\"`, "\x00")
		name = strings.ReplaceAll(name, `"`, "")
		name = strings.ReplaceAll(name, "\x00", `"`)
		if addr == "" {
			return Address{}, false
		}
		return p.address(name, addr), true
	}
	if bare := strings.Join(strings.Fields(stripComments(elem)), ""); strings.Count(bare, "@") == 1 && !strings.Contains(bare, `"`) {
		return Address{Address: strings.Trim(bare, "<>")}, true
	}
	for _, f := range strings.Fields(stripComments(elem)) {
		if strings.Contains(f, "@") {
			return Address{Address: strings.Trim(f, "<>\"'")}, true
		}
	}
	return Address{}, false
}

func stripComments(s string) string {
	var b strings.Builder
	depth := 0
	escaped := false
	for _, r := range s {
		switch {
		case escaped:
			escaped = false
			if depth == 0 {
				b.WriteRune(r)
			}
		case r == '\\':
			escaped = true
			if depth == 0 {
				b.WriteRune(r)
			}
		case r == '(':
			depth++
		case r == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}
