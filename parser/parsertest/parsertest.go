// Package parsertest builds inputs for tests of the parser and of what
// uses it: TNEF streams (winmail.dat) and messages carrying them.
package parsertest

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
)

// TNEFFile is one file to put in a TNEF stream.
type TNEFFile struct {
	Name string
	Data []byte
}

// TNEF encodes files as a TNEF stream ([MS-OXTNEF]): for each file an
// attAttachRendData, an attAttachTitle and an attAttachData attribute.
func TNEF(files []TNEFFile) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint32(0x223E9F78))
	binary.Write(&b, binary.LittleEndian, uint16(1)) // legacy key
	attr := func(id uint32, data []byte) {
		b.WriteByte(2) // attachment level
		binary.Write(&b, binary.LittleEndian, id)
		binary.Write(&b, binary.LittleEndian, uint32(len(data)))
		b.Write(data)
		var sum uint16
		for _, c := range data {
			sum += uint16(c)
		}
		binary.Write(&b, binary.LittleEndian, sum)
	}
	for _, f := range files {
		attr(0x00069002, make([]byte, 14))               // attAttachRendData (atpByte)
		attr(0x00018010, append([]byte(f.Name), 0))      // attAttachTitle (atpString)
		attr(0x0006800F, append([]byte(nil), f.Data...)) // attAttachData (atpByte)
	}
	return b.Bytes()
}

// ManyTNEFFiles returns n tiny files named file00001.txt, ...
func ManyTNEFFiles(n int) []TNEFFile {
	fs := make([]TNEFFile, n)
	for i := range fs {
		fs[i] = TNEFFile{Name: fmt.Sprintf("file%05d.txt", i+1), Data: []byte(fmt.Sprintf("content %d\n", i+1))}
	}
	return fs
}

// WinmailMessage returns a message with a short text body and the TNEF
// stream of files attached as winmail.dat (base64), with the given
// Message-ID (without angle brackets).
func WinmailMessage(msgID string, files []TNEFFile) []byte {
	enc := base64.StdEncoding.EncodeToString(TNEF(files))
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Outlook User <outlook@example.com>\r\nTo: help@example.com\r\nSubject: winmail.dat with %d files\r\n", len(files))
	fmt.Fprintf(&b, "Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMessage-ID: <%s>\r\nMIME-Version: 1.0\r\n", msgID)
	b.WriteString("Content-Type: multipart/mixed; boundary=\"tnefboundary\"\r\n\r\n")
	b.WriteString("--tnefboundary\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nSee the attached files.\r\n")
	b.WriteString("--tnefboundary\r\nContent-Type: application/ms-tnef; name=\"winmail.dat\"\r\n")
	b.WriteString("Content-Disposition: attachment; filename=\"winmail.dat\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n--tnefboundary--\r\n")
	return b.Bytes()
}
