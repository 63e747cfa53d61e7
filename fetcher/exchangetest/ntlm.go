package exchangetest

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"net/http"
	"strings"
	"unicode/utf16"

	"golang.org/x/crypto/md4" //nolint:staticcheck // MD4 is what NTLM (MS-NLMP 3.3.2) is built on
)

// NTLM server side, enough to verify an NTLMv2 client (MS-NLMP,
// https://learn.microsoft.com/openspecs/windows_protocols/ms-nlmp/):
// anonymous request → 401 "WWW-Authenticate: NTLM"; NEGOTIATE_MESSAGE →
// 401 with a CHALLENGE_MESSAGE; AUTHENTICATE_MESSAGE → verified NTProofStr.
// Like IIS, a connection stays authenticated afterwards.

var ntlmSignature = []byte("NTLMSSP\x00")

func (f *EWS) ntlmStep(w http.ResponseWriter, r *http.Request) bool {
	conn := r.RemoteAddr
	auth := r.Header.Get("Authorization")
	f.mu.Lock()
	authed := f.ntlmAuthed[conn]
	f.mu.Unlock()
	if auth == "" && authed {
		return true
	}
	deny := func() bool {
		w.Header().Set("WWW-Authenticate", "NTLM")
		w.Header().Add("WWW-Authenticate", "Negotiate")
		http.Error(w, "401 - Unauthorized", http.StatusUnauthorized)
		return false
	}
	scheme, tok, _ := strings.Cut(auth, " ")
	if !strings.EqualFold(scheme, "NTLM") && !strings.EqualFold(scheme, "Negotiate") {
		if strings.EqualFold(scheme, "Basic") {
			f.t.Errorf("ews fake: NTLM server received Basic credentials")
		}
		return deny()
	}
	msg, err := base64.StdEncoding.DecodeString(tok)
	if err != nil || len(msg) < 12 || !bytes.Equal(msg[:8], ntlmSignature) {
		return deny()
	}
	switch binary.LittleEndian.Uint32(msg[8:12]) {
	case 1: // NEGOTIATE
		var chal [8]byte
		rand.Read(chal[:])
		f.mu.Lock()
		f.ntlm[conn] = chal[:]
		f.mu.Unlock()
		w.Header().Set("WWW-Authenticate", scheme+" "+base64.StdEncoding.EncodeToString(ntlmChallenge(chal)))
		http.Error(w, "401 - Unauthorized", http.StatusUnauthorized)
		return false
	case 3: // AUTHENTICATE
		f.mu.Lock()
		chal := f.ntlm[conn]
		delete(f.ntlm, conn)
		f.mu.Unlock()
		if chal == nil || !f.ntlmVerify(msg, chal) {
			return deny()
		}
		f.mu.Lock()
		f.ntlmAuthed[conn] = true
		f.mu.Unlock()
		return true
	}
	return deny()
}

// ntlmChallenge builds a CHALLENGE_MESSAGE (MS-NLMP 2.2.1.2) with
// Unicode, NTLM and extended session security, a target name and target
// info holding the domain name and the MsvAvEOL terminator.
func ntlmChallenge(chal [8]byte) []byte {
	target := utf16le("EXAMPLE")
	var info bytes.Buffer
	binary.Write(&info, binary.LittleEndian, uint16(2)) // MsvAvNbDomainName
	binary.Write(&info, binary.LittleEndian, uint16(len(target)))
	info.Write(target)
	binary.Write(&info, binary.LittleEndian, uint32(0)) // MsvAvEOL
	const hdr = 48
	flags := uint32(0x00000001 | 0x00000004 | 0x00000200 | 0x00080000 | 0x00800000 | 0x20000000)
	var b bytes.Buffer
	b.Write(ntlmSignature)
	binary.Write(&b, binary.LittleEndian, uint32(2))
	binary.Write(&b, binary.LittleEndian, uint16(len(target)))
	binary.Write(&b, binary.LittleEndian, uint16(len(target)))
	binary.Write(&b, binary.LittleEndian, uint32(hdr))
	binary.Write(&b, binary.LittleEndian, flags)
	b.Write(chal[:])
	b.Write(make([]byte, 8))
	binary.Write(&b, binary.LittleEndian, uint16(info.Len()))
	binary.Write(&b, binary.LittleEndian, uint16(info.Len()))
	binary.Write(&b, binary.LittleEndian, uint32(hdr+len(target)))
	b.Write(target)
	b.Write(info.Bytes())
	return b.Bytes()
}

// ntlmVerify checks an AUTHENTICATE_MESSAGE's user and NTLMv2 proof
// (MS-NLMP 3.3.2) against the configured credentials.
func (f *EWS) ntlmVerify(msg, chal []byte) bool {
	field := func(off int) []byte {
		if len(msg) < off+8 {
			return nil
		}
		l := int(binary.LittleEndian.Uint16(msg[off:]))
		p := int(binary.LittleEndian.Uint32(msg[off+4:]))
		if p < 0 || p+l > len(msg) {
			return nil
		}
		return msg[p : p+l]
	}
	nt := field(20)
	domain := fromUTF16le(field(28))
	user := fromUTF16le(field(36))
	wantDomain, wantUser, ok := strings.Cut(f.opts.Username, `\`)
	if !ok {
		wantDomain, wantUser = "", f.opts.Username
	}
	if !strings.EqualFold(user, wantUser) || !strings.EqualFold(domain, wantDomain) || len(nt) < 24 {
		return false
	}
	h := md4.New()
	h.Write(utf16le(f.opts.Password))
	v2 := hmacMD5(h.Sum(nil), utf16le(strings.ToUpper(user)+domain))
	proof := hmacMD5(v2, chal, nt[16:])
	return hmac.Equal(proof, nt[:16])
}

func hmacMD5(key []byte, data ...[]byte) []byte {
	m := hmac.New(md5.New, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

func utf16le(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

func fromUTF16le(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}
