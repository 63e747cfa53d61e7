package parser

import (
	"bytes"
	"io"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
	"golang.org/x/net/html"
	htmlcharset "golang.org/x/net/html/charset"
	"golang.org/x/text/encoding/charmap"
)

// toUTF8 converts a text body from its declared charset. Unknown charsets
// warn; undeclared or wrongly declared bodies that are not valid UTF-8 are
// read as Windows-1252 (HTML: as its <meta> charset says).
func (p *parser) toUTF8(b []byte, cs string, isHTML bool) string {
	cs = strings.ToLower(strings.Trim(strings.TrimSpace(cs), `"'`))
	switch cs {
	case "", "us-ascii", "ascii", "utf-8", "utf8", "unicode-1-1-utf-8", "x-unknown", "unknown-8bit", "default":
		if utf8.Valid(b) {
			return string(b)
		}
		return p.guessCharset(b, isHTML)
	}
	r, err := charset.Reader(cs, bytes.NewReader(b))
	if err != nil {
		p.warn(WarnUnknownCharset, "unknown charset "+clip(cs, 40)+"; text guessed")
		if utf8.Valid(b) {
			return string(b)
		}
		return p.guessCharset(b, isHTML)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return p.guessCharset(b, isHTML)
	}
	return strings.ToValidUTF8(string(out), "\uFFFD")
}

func (p *parser) guessCharset(b []byte, isHTML bool) string {
	if isHTML {
		if enc, name, _ := htmlcharset.DetermineEncoding(b, "text/html"); enc != nil && name != "utf-8" {
			if out, err := enc.NewDecoder().Bytes(b); err == nil {
				return strings.ToValidUTF8(string(out), "\uFFFD")
			}
		}
	}
	out, err := charmap.Windows1252.NewDecoder().Bytes(b)
	if err != nil {
		return strings.ToValidUTF8(string(b), "\uFFFD")
	}
	return string(out)
}

// htmlToText renders HTML as plain text: tags dropped, entities decoded,
// line breaks for block elements, script/style/head skipped.
func htmlToText(s string) string {
	z := html.NewTokenizer(strings.NewReader(s))
	var b strings.Builder
	skip := 0
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			return strings.TrimSpace(collapseBlankLines(b.String()))
		case html.TextToken:
			if skip == 0 {
				t := string(z.Text())
				t = strings.Join(strings.FieldsFunc(t, func(r rune) bool { return r == '\n' || r == '\r' || r == '\t' }), " ")
				b.WriteString(t)
			}
		case html.StartTagToken, html.EndTagToken, html.SelfClosingTagToken:
			name, _ := z.TagName()
			switch string(name) {
			case "script", "style", "head", "title":
				if tt == html.StartTagToken {
					skip++
				} else if tt == html.EndTagToken && skip > 0 {
					skip--
				}
			case "br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table", "hr", "pre":
				b.WriteString("\n")
			case "td", "th":
				b.WriteString(" ")
			}
		}
	}
}

func collapseBlankLines(s string) string {
	lines := strings.Split(s, "\n")
	out := lines[:0]
	blank := 0
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" {
			blank++
			if blank > 1 {
				continue
			}
		} else {
			blank = 0
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

var extTypes = map[string]string{
	".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
	".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff", ".svg": "image/svg+xml",
	".pdf": "application/pdf", ".doc": "application/msword", ".xls": "application/vnd.ms-excel",
	".ppt": "application/vnd.ms-powerpoint", ".rtf": "application/rtf", ".zip": "application/zip",
	".gz": "application/gzip", ".txt": "text/plain", ".htm": "text/html", ".html": "text/html",
	".csv": "text/csv", ".xml": "application/xml", ".eml": "message/rfc822",
	".ics": "text/calendar", ".vcf": "text/vcard",
	".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
	".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
	".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
}

// typeByName guesses a content type from a file name, from a fixed table
// (the system's mime.types differs between machines).
func typeByName(name string) string {
	if t, ok := extTypes[strings.ToLower(path.Ext(name))]; ok {
		return t
	}
	return "application/octet-stream"
}
