// Package samples holds the sample mail shipped with mailworker: ten small
// hand-written messages (mail/*.eml) covering the kinds of mail a helpdesk
// mailbox receives. They are embedded in the binary so that `mailworker
// demo` works from any directory (an installed binary, `go run
// module@version`), and they stay plain files in the repository for
// `mailworker replay samples/mail` and the docker-compose stack.
package samples

import (
	"embed"
	"io/fs"
	"sort"
)

//go:embed mail/*.eml
var files embed.FS

// Mail returns the sample messages, sorted by file name, as stored (LF line
// ends).
func Mail() ([]Message, error) {
	names, err := fs.Glob(files, "mail/*.eml")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	msgs := make([]Message, 0, len(names))
	for _, n := range names {
		b, err := files.ReadFile(n)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, Message{Name: n[len("mail/"):], Data: b})
	}
	return msgs, nil
}

// Message is one sample: its file name (e.g. "01-new-request.eml") and
// bytes.
type Message struct {
	Name string
	Data []byte
}
