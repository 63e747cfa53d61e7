package parser

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
)

// TNEF (Transport Neutral Encapsulation Format, [MS-OXTNEF]) is how
// Outlook wraps attachments in winmail.dat. This decoder extracts only the
// attached files: attAttachRendData starts an attachment, attAttachTitle
// names it, attAttachData holds its bytes, and the attAttachment MAPI
// property block may give PR_ATTACH_LONG_FILENAME, PR_ATTACH_DATA_BIN and
// PR_ATTACH_MIME_TAG. Every length is checked against the data left.

const tnefSignature = 0x223E9F78

// maxTNEFBytes bounds the winmail.dat decoded in memory; a larger one is
// kept as the attachment it is, with a bad_tnef warning.
var maxTNEFBytes = 50 << 20 // a variable for tests

// TNEF attribute ids ([MS-OXTNEF] 2.1.3.2), low 16 bits.
const (
	attAttachData     = 0x800F
	attAttachTitle    = 0x8010
	attAttachRendData = 0x9002
	attAttachment     = 0x9005
)

// MAPI property ids ([MS-OXPROPS]).
const (
	prAttachDataBin      = 0x3701
	prAttachFilename     = 0x3704
	prAttachLongFilename = 0x3707
	prAttachMimeTag      = 0x370E
	prDisplayName        = 0x3001
)

// TNEFFile is one file carried in a TNEF stream.
type TNEFFile struct {
	Name        string
	ContentType string // from PR_ATTACH_MIME_TAG; "" when absent
	Data        []byte
}

var errTNEF = errors.New("tnef: malformed")

// DecodeTNEF returns the files attached in a TNEF stream. It fails on a
// stream that is not TNEF or is cut short; it never reads outside b.
func DecodeTNEF(b []byte) ([]TNEFFile, error) {
	files, _, err := decodeTNEF(b, 0)
	return files, err
}

// decodeTNEF is DecodeTNEF returning at most max files (0 = no limit);
// more reports that the stream starts more files than that (the rest of
// the stream is not decoded).
func decodeTNEF(b []byte, max int) (files []TNEFFile, more bool, err error) {
	if len(b) < 6 || binary.LittleEndian.Uint32(b) != tnefSignature {
		return nil, false, fmt.Errorf("%w: no TNEF signature", errTNEF)
	}
	pos := 6
	var cur *TNEFFile
	for pos < len(b) {
		if len(b)-pos < 9 {
			return files, false, fmt.Errorf("%w: attribute header cut at %d", errTNEF, pos)
		}
		level := b[pos]
		id := binary.LittleEndian.Uint32(b[pos+1:]) & 0xFFFF
		n := binary.LittleEndian.Uint32(b[pos+5:])
		pos += 9
		if uint64(n)+2 > uint64(len(b)-pos) {
			return files, false, fmt.Errorf("%w: attribute 0x%04x length %d beyond the data", errTNEF, id, n)
		}
		data := b[pos : pos+int(n)]
		pos += int(n) + 2 // value and checksum
		if level != 2 {
			continue
		}
		switch id {
		case attAttachRendData:
			if max > 0 && len(files) >= max {
				return files, true, nil
			}
			files = append(files, TNEFFile{})
			cur = &files[len(files)-1]
		case attAttachTitle:
			if cur != nil && cur.Name == "" {
				cur.Name = cstring(data)
			}
		case attAttachData:
			if cur != nil {
				cur.Data = data
			}
		case attAttachment:
			if cur != nil {
				if err := mapiProps(data, cur); err != nil {
					return files, false, err
				}
			}
		}
	}
	return files, false, nil
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

type tnefReader struct {
	b   []byte
	pos int
	err error
}

func (r *tnefReader) u32() uint32 {
	if r.err != nil || len(r.b)-r.pos < 4 {
		r.err = fmt.Errorf("%w: MAPI property block cut at %d", errTNEF, r.pos)
		return 0
	}
	v := binary.LittleEndian.Uint32(r.b[r.pos:])
	r.pos += 4
	return v
}

func (r *tnefReader) bytes(n uint32) []byte {
	if r.err != nil || uint64(n) > uint64(len(r.b)-r.pos) {
		r.err = fmt.Errorf("%w: MAPI value of %d bytes beyond the data", errTNEF, n)
		return nil
	}
	v := r.b[r.pos : r.pos+int(n)]
	r.pos += int(n)
	if pad := (4 - int(n)%4) % 4; pad > 0 {
		r.pos = min(len(r.b), r.pos+pad)
	}
	return v
}

// mapiProps reads an attAttachment property list ([MS-OXTNEF] 2.1.3.4).
func mapiProps(b []byte, f *TNEFFile) error {
	r := &tnefReader{b: b}
	count := r.u32()
	for i := uint32(0); i < count && r.err == nil; i++ {
		tag := r.u32()
		typ, id := tag&0xFFFF, tag>>16
		if id >= 0x8000 { // named property: GUID, kind, id or name
			r.bytes(16)
			if r.u32() == 1 {
				r.bytes(r.u32())
			} else {
				r.u32()
			}
		}
		multi := typ&0x1000 != 0
		typ &^= 0x1000
		n := uint32(1)
		var vals [][]byte
		switch typ {
		case 0x1E, 0x1F, 0x102, 0x0D: // string8, unicode, binary, object
			n = r.u32()
			if n > uint32(len(b)) {
				return fmt.Errorf("%w: %d values", errTNEF, n)
			}
			for k := uint32(0); k < n && r.err == nil; k++ {
				vals = append(vals, r.bytes(r.u32()))
			}
		default:
			size, ok := map[uint32]uint32{0x01: 4, 0x02: 4, 0x03: 4, 0x04: 4, 0x05: 8, 0x06: 8, 0x07: 8, 0x0A: 4, 0x0B: 4, 0x14: 8, 0x40: 8, 0x48: 16}[typ]
			if !ok {
				return fmt.Errorf("%w: unknown MAPI type 0x%04x", errTNEF, typ)
			}
			if multi {
				n = r.u32()
				if uint64(n)*uint64(size) > uint64(len(b)) {
					return fmt.Errorf("%w: %d values", errTNEF, n)
				}
			}
			for k := uint32(0); k < n && r.err == nil; k++ {
				r.bytes(size)
			}
		}
		if r.err != nil || len(vals) == 0 {
			continue
		}
		v := vals[0]
		switch id {
		case prAttachLongFilename:
			if s := mapiString(typ, v); s != "" {
				f.Name = s
			}
		case prAttachFilename, prDisplayName:
			if f.Name == "" {
				f.Name = mapiString(typ, v)
			}
		case prAttachMimeTag:
			f.ContentType = strings.ToLower(mapiString(typ, v))
		case prAttachDataBin:
			if typ == 0x0D && len(v) >= 16 {
				v = v[16:] // PT_OBJECT starts with the interface id
			}
			if f.Data == nil || len(f.Data) == 0 {
				f.Data = v
			}
		}
	}
	return r.err
}

func mapiString(typ uint32, v []byte) string {
	if typ == 0x1F {
		u := make([]uint16, 0, len(v)/2)
		for i := 0; i+1 < len(v); i += 2 {
			c := binary.LittleEndian.Uint16(v[i:])
			if c == 0 {
				break
			}
			u = append(u, c)
		}
		return string(utf16.Decode(u))
	}
	return cstring(v)
}

// tnefAttachment expands winmail.dat into the files it carries. A stream
// that does not decode, or carries no file, is kept as the attachment it is.
// Each file counts as a MIME part toward MaxParts (the winmail.dat part
// itself was counted already): past the limit the rest are ignored with a
// too_many_parts warning, as for MIME parts.
func (p *parser) tnefAttachment(a Attachment, body io.Reader) {
	// winmail.dat is held in memory to be decoded, up to maxTNEFBytes;
	// reading cannot fail, see attachment.
	raw, _ := io.ReadAll(io.LimitReader(body, int64(maxTNEFBytes)+1))
	if len(raw) > maxTNEFBytes {
		p.warn(WarnBadTNEF, fmt.Sprintf("winmail.dat over %d bytes not decoded; kept as it is", maxTNEFBytes))
		p.attachment(a, io.MultiReader(bytes.NewReader(raw), body))
		return
	}
	room := p.opts.MaxParts - p.parts + 1 // the files replace the winmail.dat part
	files, more, derr := decodeTNEF(raw, max(room, 1))
	if derr != nil || len(files) == 0 {
		if derr != nil {
			p.warn(WarnBadTNEF, "winmail.dat not decoded: "+derr.Error())
		}
		p.attachment(a, bytes.NewReader(raw))
		return
	}
	p.parts += len(files) - 1
	if more && !p.partsWarned {
		p.partsWarned = true
		p.warn(WarnTooManyParts, fmt.Sprintf("more than %d MIME parts (winmail.dat files count as parts); the rest are ignored", p.opts.MaxParts))
	}
	for _, f := range files {
		name := p.fixUTF8(f.Name)
		ct := f.ContentType
		if ct == "" || !strings.Contains(ct, "/") {
			ct = typeByName(name)
		}
		p.attachment(Attachment{Filename: name, ContentType: ct}, bytes.NewReader(f.Data))
	}
}
