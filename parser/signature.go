package parser

import (
	"bytes"
	"regexp"
	"strings"
)

// Signature detection. The signature starts at the earlier of
//
//   - the first signature delimiter line, "-- " (RFC 3676 section 4.3) or
//     "--" (the trailing space is often lost), followed by 1 to
//     maxSignatureLines non-empty lines;
//   - a mobile or Outlook footer line ("Sent from my iPhone", "Von meinem
//     iPhone gesendet", "iPhoneから送信", "Get Outlook for iOS", ...) among
//     the last footerWindow non-empty lines.
const (
	maxSignatureLines = 30
	footerWindow      = 3
	maxFooterLen      = 100 // bytes of a footer line
)

var (
	// sentFromRe: "sent from" (or its translation) at the start, then
	// within the line a device or mail app. Both parts are needed, so an
	// ordinary closing sentence ("Sent from the office", "I sent the
	// invoice to your phone") is not taken for a footer.
	sentFromRe = regexp.MustCompile(`(?i)^(sent (from|with|via|using|on)|von meinem|gesendet (von|mit|vom|über)|envoy[ée] (de|depuis|à partir|a partir|avec|via)|enviad[oa] (desde|do|da|de|com|con)|inviato (da|con)|verzonden (vanaf|met|via|van)|verstuurd (vanaf|met|via|van)|skickat (från|med)|sendt (fra|med)|lähetetty|wysłane (z|ze)|odesláno (z|ze)|отправлено (с|из))\s.{0,60}?\b(iphone|ipad|ipod|android|blackberry|samsung|galaxy|huawei|honor|xiaomi|redmi|oppo|oneplus|pixel|nokia|motorola|sony|xperia|htc|windows phone|mobile|mobil|mobiel|móvil|smartphone|handy|tablet|phone|telefon|telefono|teléfono|téléphone|celular|cellulare|outlook|yahoo mail|aol|gmail|mail (for|für|pour|para) windows|proton ?mail|bluemail|spark|k-9 mail|fairemail|airmail)`)
	// getOutlookRe: the "Get Outlook for iOS" line and its translations.
	getOutlookRe = regexp.MustCompile(`(?i)^(get outlook for|outlook für .{0,20}(beziehen|herunterladen)|obtenir outlook pour|obtener outlook para|scarica outlook per|outlook voor .{0,20}downloaden|outlook for .{0,20}を入手|download outlook for)`)
	// cjkFooterRe: Japanese "iPhoneから送信", "Android携帯からの送信",
	// Chinese "发自我的iPhone", "從我的 iPhone 傳送", Korean "iPhone에서 보냄".
	cjkFooterRe = regexp.MustCompile(`(?i)(から(の)?送信$|より送信$|^(发自我的|寄自我的)|^(从|從)我的.{0,30}(发送|傳送|寄出)$|에서 보냄$)`)
)

// isFooter reports whether the (trimmed) line is a mobile or mail-app
// footer.
func isFooter(t string) bool {
	if len(t) > 2*maxFooterLen { // with room for a link
		return false
	}
	// Outlook's plain text keeps the link of "Get Outlook for iOS<https://aka.ms/...>"
	if i := strings.LastIndex(t, "<http"); i > 0 && strings.HasSuffix(t, ">") {
		t = strings.TrimSpace(t[:i])
	}
	if t == "" || len(t) > maxFooterLen || strings.ContainsAny(t, ":@<>") || !hasFooterWord(t) {
		return false
	}
	t = strings.TrimRight(t, ".!。 ")
	return sentFromRe.MatchString(t) || getOutlookRe.MatchString(t) || cjkFooterRe.MatchString(t)
}

// footerWords: every footer pattern contains one of these (in lower
// case). hasFooterWord spares the regular expressions the lines that
// cannot match.
var footerWords = func() [][]byte {
	var ws [][]byte
	for _, w := range []string{"sent", "von meinem", "gesendet", "envoy", "enviad", "inviato", "verzonden", "verstuurd",
		"skickat", "sendt", "lähetetty", "wysłane", "odesláno", "тправлено", "outlook", "送信", "我的", "보냄"} {
		ws = append(ws, []byte(w))
	}
	return ws
}()

// hasFooterWord reports whether t (at most maxFooterLen bytes) contains
// one of footerWords, ASCII letters compared case-insensitively.
func hasFooterWord(t string) bool {
	var buf [maxFooterLen]byte
	b := buf[:0]
	for i := 0; i < len(t) && i < len(buf); i++ {
		c := t[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	for _, w := range footerWords {
		if bytes.Contains(b, w) {
			return true
		}
	}
	return false
}

// isSigDelimiter reports whether line is "-- " or "--".
func isSigDelimiter(line string) bool {
	line = strings.TrimRight(line, "\r")
	return line == "-- " || line == "--"
}

// splitSignature splits the signature off a reply text (already without
// quoted history): reply is what precedes it, sig the signature, both
// trimmed. Without a signature, reply is text and sig is "". It allocates
// nothing unless it finds one: it runs on every message.
func splitSignature(text string) (reply, sig string) {
	start, delim := -1, false // byte offset of the line the signature starts at
	if strings.HasPrefix(text, "--") || strings.Contains(text, "\n--") {
		for off := 0; off < len(text); {
			line, next := lineAt(text, off)
			if n := nonEmptyLines(text[next:], maxSignatureLines+1); isSigDelimiter(line) && n > 0 && n <= maxSignatureLines {
				start, delim = off, true
				break
			}
			off = next
		}
	}
	// footer: among the last footerWindow non-empty lines
	seen := 0
	for end := len(text); end >= 0 && seen < footerWindow; {
		off := strings.LastIndexByte(text[:end], '\n') + 1
		line := strings.TrimSpace(text[off:end])
		end = off - 1 // before the newline that ends the previous line
		if line == "" {
			continue
		}
		seen++
		if (start < 0 || off < start) && isFooter(line) {
			start, delim = off, false
		}
	}
	if start < 0 {
		return text, ""
	}
	reply = strings.TrimSpace(text[:start])
	sig = text[start:]
	if delim {
		_, next := lineAt(text, start)
		sig = text[next:]
	}
	return reply, strings.TrimSpace(sig)
}

// lineAt returns the line starting at off (without its newline) and the
// offset of the next line.
func lineAt(text string, off int) (string, int) {
	i := strings.IndexByte(text[off:], '\n')
	if i < 0 {
		return text[off:], len(text)
	}
	return text[off : off+i], off + i + 1
}

// nonEmptyLines counts the lines of text that are not blank, up to limit.
func nonEmptyLines(text string, limit int) int {
	n := 0
	for off := 0; off < len(text) && n < limit; {
		line, next := lineAt(text, off)
		if strings.TrimSpace(line) != "" {
			n++
		}
		off = next
	}
	return n
}
