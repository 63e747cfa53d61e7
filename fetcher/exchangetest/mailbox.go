// Package exchangetest provides in-process fakes of Exchange Web Services
// and Microsoft Graph mail servers for tests, plus a recording fetcher.Sink.
//
// The fakes are httptest servers built from the request and response shapes
// documented on Microsoft Learn (samples and sources in
// fetcher/testdata/ews and fetcher/testdata/graph). They check what a real
// server checks — SOAP envelope and namespaces, SOAPAction,
// RequestServerVersion, Basic/NTLM/Bearer authorization, impersonation with
// X-AnchorMailbox; Graph paths, query options, the Prefer header and the
// bearer token — and report a malformed request as a test error. Both hold
// an in-memory Mailbox seeded with raw MIME and can inject paging,
// throttling, faults, expired sync states and messages that vanish between
// sync and fetch.
package exchangetest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"time"
)

// Folder is a mail folder of a Mailbox.
type Folder struct {
	ID        string
	Name      string // display name
	WellKnown string // distinguished / well-known name ("inbox"), "" for user folders
	Parent    string // parent folder id, "" for the root
}

// Message is a message held by a Mailbox.
type Message struct {
	ID       string
	Folder   string // folder id
	Raw      []byte
	IsRead   bool
	Received time.Time
	seq      int64 // change number when it arrived in its folder
	readSeq  int64 // change number of its last IsRead change
}

type tombstone struct {
	id      string
	folder  string
	seq     int64 // when it left the folder
	created int64 // when it had arrived there
}

// Mailbox is an in-memory mailbox: folders, messages and a change log
// from which sync states and delta tokens are computed. It is safe for
// concurrent use.
type Mailbox struct {
	mu      sync.Mutex
	seq     int64
	folders map[string]*Folder
	msgs    map[string]*Message
	gone    []tombstone
	clock   time.Time
}

// NewMailbox returns a mailbox with the usual well-known folders.
func NewMailbox() *Mailbox {
	m := &Mailbox{folders: map[string]*Folder{}, msgs: map[string]*Message{},
		clock: time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)}
	root := m.addFolder("", "Top of Information Store", "msgfolderroot")
	for _, f := range []struct{ name, wk string }{
		{"Inbox", "inbox"}, {"Deleted Items", "deleteditems"}, {"Sent Items", "sentitems"},
		{"Drafts", "drafts"}, {"Junk Email", "junkemail"}, {"Archive", "archive"},
	} {
		m.addFolder(root.ID, f.name, f.wk)
	}
	return m
}

func newID(prefix string) string {
	var b [24]byte
	rand.Read(b[:])
	// Real ids are long base64 strings ending in '='; URL-safe here so
	// they also fit into Graph paths.
	return prefix + base64.URLEncoding.EncodeToString(b[:]) + "AAA="
}

func (m *Mailbox) addFolder(parent, name, wk string) *Folder {
	f := &Folder{ID: newID("AAMkF"), Name: name, WellKnown: wk, Parent: parent}
	m.folders[f.ID] = f
	return f
}

// AddFolder creates the folders of path ("Inbox/Support", "Processed";
// relative to the root) as needed and returns the last one's id.
func (m *Mailbox) AddFolder(path string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	parent := m.wellKnownLocked("msgfolderroot")
	for _, seg := range strings.Split(strings.Trim(path, "/"), "/") {
		var next *Folder
		for _, f := range m.folders {
			if f.Parent == parent.ID && strings.EqualFold(f.Name, seg) {
				next = f
			}
		}
		if next == nil {
			next = m.addFolder(parent.ID, seg, "")
		}
		parent = next
	}
	return parent.ID
}

func (m *Mailbox) wellKnownLocked(name string) *Folder {
	for _, f := range m.folders {
		if f.WellKnown != "" && strings.EqualFold(f.WellKnown, name) {
			return f
		}
	}
	return nil
}

// FolderID returns the id of a folder given by well-known name, id or
// path; "" when there is none.
func (m *Mailbox) FolderID(name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.folderLocked(name); f != nil {
		return f.ID
	}
	return ""
}

func (m *Mailbox) folderLocked(name string) *Folder {
	if f := m.wellKnownLocked(name); f != nil {
		return f
	}
	if f, ok := m.folders[name]; ok {
		return f
	}
	parent := m.wellKnownLocked("msgfolderroot")
	for _, seg := range strings.Split(strings.Trim(name, "/"), "/") {
		var next *Folder
		for _, f := range m.folders {
			if f.Parent == parent.ID && strings.EqualFold(f.Name, seg) {
				next = f
			}
		}
		if next == nil {
			return nil
		}
		parent = next
	}
	return parent
}

// Deliver adds raw to the folder (well-known name, id or path) and returns
// the new message's id. Each message is received one minute after the
// previous one.
func (m *Mailbox) Deliver(folder string, raw []byte, isRead bool) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.folderLocked(folder)
	if f == nil {
		panic(fmt.Sprintf("exchangetest: no folder %q", folder))
	}
	m.seq++
	m.clock = m.clock.Add(time.Minute)
	msg := &Message{ID: newID("AAMkAG"), Folder: f.ID, Raw: raw, IsRead: isRead, Received: m.clock, seq: m.seq}
	m.msgs[msg.ID] = msg
	return msg.ID
}

// Delete removes message id, as a user or another client would.
func (m *Mailbox) Delete(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.removeLocked(id)
}

func (m *Mailbox) removeLocked(id string) *Message {
	msg, ok := m.msgs[id]
	if !ok {
		return nil
	}
	delete(m.msgs, id)
	m.seq++
	m.gone = append(m.gone, tombstone{id: id, folder: msg.Folder, seq: m.seq, created: msg.seq})
	return msg
}

// moveLocked moves a message to folder f; like Exchange it gets a new id.
func (m *Mailbox) moveLocked(id string, f *Folder) *Message {
	old := m.removeLocked(id)
	if old == nil {
		return nil
	}
	m.seq++
	msg := &Message{ID: newID("AAMkAG"), Folder: f.ID, Raw: old.Raw, IsRead: old.IsRead, Received: old.Received, seq: m.seq}
	m.msgs[msg.ID] = msg
	return msg
}

func (m *Mailbox) markReadLocked(msg *Message, read bool) {
	if msg.IsRead != read {
		m.seq++
		msg.IsRead = read
		msg.readSeq = m.seq
	}
}

// Messages returns copies of the messages in folder (well-known name, id
// or path) in arrival order.
func (m *Mailbox) Messages(folder string) []Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.folderLocked(folder)
	if f == nil {
		return nil
	}
	var out []Message
	for _, msg := range m.msgs {
		if msg.Folder == f.ID {
			out = append(out, *msg)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

// Get returns a copy of message id.
func (m *Mailbox) Get(id string) (Message, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	msg, ok := m.msgs[id]
	if !ok {
		return Message{}, false
	}
	return *msg, true
}

// change is one entry of a folder's change log.
type change struct {
	kind string // Create, ReadFlagChange, Delete
	id   string
	seq  int64
	read bool
}

// changesLocked lists the changes of folder after watermark, oldest first.
func (m *Mailbox) changesLocked(folder string, after int64) []change {
	var out []change
	for _, msg := range m.msgs {
		if msg.Folder != folder {
			continue
		}
		switch {
		case msg.seq > after:
			out = append(out, change{kind: "Create", id: msg.ID, seq: msg.seq})
		case msg.readSeq > after:
			out = append(out, change{kind: "ReadFlagChange", id: msg.ID, seq: msg.readSeq, read: msg.IsRead})
		}
	}
	for _, g := range m.gone {
		if g.folder == folder && g.seq > after && g.created <= after {
			out = append(out, change{kind: "Delete", id: g.id, seq: g.seq})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

// syncToken is the state behind an EWS SyncState or a Graph delta/skip
// token: an epoch (bumped to invalidate every state) and a watermark.
func syncToken(epoch int, watermark int64) string {
	return base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("mwfake:%d:%d", epoch, watermark)))
}

func parseSyncToken(s string) (epoch int, watermark int64, ok bool) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return 0, 0, false
	}
	if _, err := fmt.Sscanf(string(b), "mwfake:%d:%d", &epoch, &watermark); err != nil {
		return 0, 0, false
	}
	return epoch, watermark, true
}

func startServer(s *httptest.Server, tls bool) {
	if tls {
		s.StartTLS()
		return
	}
	s.Start()
}

// certPEM returns the PEM of a TLS test server's certificate.
func certPEM(s *httptest.Server) []byte {
	c := s.Certificate()
	if c == nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// CertPEM returns the fake's certificate (PEM) when it serves TLS, for a
// server's tls.ca_file.
func (f *EWS) CertPEM() []byte { return certPEM(f.srv) }

// CertPEM returns the fake's certificate (PEM) when it serves TLS, for a
// server's tls.ca_file.
func (g *Graph) CertPEM() []byte { return certPEM(g.srv) }
