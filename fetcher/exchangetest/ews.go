package exchangetest

import (
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// EWS XML namespaces.
const (
	nsSOAP     = "http://schemas.xmlsoap.org/soap/envelope/"
	nsMessages = "http://schemas.microsoft.com/exchange/services/2006/messages"
	nsTypes    = "http://schemas.microsoft.com/exchange/services/2006/types"
)

// EWSAuth is the authentication an EWS fake demands.
type EWSAuth int

const (
	EWSBasic  EWSAuth = iota // Authorization: Basic
	EWSNTLM                  // NTLM handshake (MS-NLMP, NTLMv2 verified)
	EWSBearer                // Authorization: Bearer <Token>
)

// EWSOptions configures an EWS fake.
type EWSOptions struct {
	Auth     EWSAuth
	Username string // Basic and NTLM; NTLM as DOMAIN\user
	Password string
	Token    string // Bearer
	// Impersonate, when set, is the mailbox an app-only caller must
	// impersonate: every request must carry ExchangeImpersonation with this
	// PrimarySmtpAddress and an equal X-AnchorMailbox header.
	Impersonate string
	// PageSize caps the changes one SyncFolderItems returns below the
	// client's MaxChangesReturned (0 = no cap), to force paging.
	PageSize int
	// TLS serves HTTPS with a self-signed certificate (see CertPEM).
	TLS bool
	// Mailbox to serve; nil = NewMailbox().
	Mailbox *Mailbox
}

// EWS is a fake EWS endpoint. Its URL is the EWS connect URL.
type EWS struct {
	*Mailbox
	URL string

	t    testing.TB
	opts EWSOptions
	srv  *httptest.Server

	mu         sync.Mutex
	epoch      int
	ops        []string
	busy       []busy
	throttle   []httpThrottle
	faults     map[string]string // op -> fault code, once
	vanish     map[string]bool
	ntlm       map[string][]byte // connection -> server challenge issued
	ntlmAuthed map[string]bool   // connection authenticated by NTLM
	stall      stall
}

type busy struct {
	op         string // "" = any operation
	backoff    time.Duration
	inResponse bool
}

type httpThrottle struct {
	status     int
	retryAfter string
}

// NewEWS starts a fake EWS server, stopped at cleanup.
func NewEWS(t testing.TB, opts EWSOptions) *EWS {
	if opts.Mailbox == nil {
		opts.Mailbox = NewMailbox()
	}
	f := &EWS{Mailbox: opts.Mailbox, t: t, opts: opts, faults: map[string]string{}, vanish: map[string]bool{},
		ntlm: map[string][]byte{}, ntlmAuthed: map[string]bool{}}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	startServer(f.srv, opts.TLS)
	t.Cleanup(f.srv.Close)
	f.URL = f.srv.URL + "/EWS/Exchange.asmx"
	return f
}

// ServerBusy makes the next n requests of operation op ("" = any) fail
// with ErrorServerBusy and the given BackOffMilliseconds: as a SOAP fault in
// HTTP 500, or, with inResponse, inside an HTTP 200 response message.
func (f *EWS) ServerBusy(op string, n int, backoff time.Duration, inResponse bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.busy = append(f.busy, busy{op, backoff, inResponse})
	}
}

// HTTPThrottle makes the next n requests fail with status (503, 429) and
// the Retry-After header value retryAfter ("" = none).
func (f *EWS) HTTPThrottle(n, status int, retryAfter string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.throttle = append(f.throttle, httpThrottle{status, retryAfter})
	}
}

// Fault makes the next request of operation op fail with a SOAP fault
// carrying code (e.g. ErrorInternalServerError) in HTTP 500.
func (f *EWS) Fault(op, code string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults[op] = code
}

// InvalidateSyncStates makes every SyncState issued so far fail with
// ErrorInvalidSyncStateData.
func (f *EWS) InvalidateSyncStates() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.epoch++
}

// VanishOnFetch deletes message id when a GetItem asks for it, as if a user
// deleted it between SyncFolderItems and GetItem.
func (f *EWS) VanishOnFetch(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vanish[id] = true
}

// Ops returns the SOAP operations served so far, in order (handshake legs
// and rejected requests excluded).
func (f *EWS) Ops() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ops...)
}

// CountOps returns how many times op was served.
func (f *EWS) CountOps(op string) int {
	n := 0
	for _, o := range f.Ops() {
		if o == op {
			n++
		}
	}
	return n
}

// node is a generic XML element.
type node struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Nodes   []node     `xml:",any"`
	Text    string     `xml:",chardata"`
}

func (n *node) attr(name string) string {
	for _, a := range n.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// child returns the first child with namespace ns and local name.
func (n *node) child(ns, name string) *node {
	if n == nil {
		return nil
	}
	for i := range n.Nodes {
		if n.Nodes[i].XMLName.Space == ns && n.Nodes[i].XMLName.Local == name {
			return &n.Nodes[i]
		}
	}
	return nil
}

// path follows children in the types namespace.
func (n *node) path(names ...string) *node {
	for _, name := range names {
		n = n.child(nsTypes, name)
	}
	return n
}

// errBadRequest is a schema violation found in a request.
type errBadRequest string

func (f *EWS) serve(w http.ResponseWriter, r *http.Request) {
	if th, ok := f.popThrottle(); ok {
		if th.retryAfter != "" {
			w.Header().Set("Retry-After", th.retryAfter)
		}
		http.Error(w, http.StatusText(th.status), th.status)
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/EWS/Exchange.asmx" {
		f.t.Errorf("ews fake: %s %s: want POST /EWS/Exchange.asmx", r.Method, r.URL.Path)
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	if !f.authenticate(w, r) {
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	op, req, bad := f.validate(r, body)
	if bad != "" {
		f.t.Errorf("ews fake: malformed request: %s", bad)
		f.fault(w, "ErrorSchemaValidation", string(bad), 0)
		return
	}
	f.mu.Lock()
	f.ops = append(f.ops, op)
	var b *busy
	for i := range f.busy {
		if f.busy[i].op == "" || f.busy[i].op == op {
			bb := f.busy[i]
			b = &bb
			f.busy = append(f.busy[:i], f.busy[i+1:]...)
			break
		}
	}
	faultCode := f.faults[op]
	delete(f.faults, op)
	f.mu.Unlock()
	if b != nil {
		if !b.inResponse {
			f.fault(w, "ErrorServerBusy", "The server cannot service this request right now. Try again later.", b.backoff)
			return
		}
		f.respond(w, op, errorMessage(op, "ErrorServerBusy", "The server cannot service this request right now. Try again later.", b.backoff))
		return
	}
	if faultCode != "" {
		f.fault(w, faultCode, "Injected fault.", 0)
		return
	}
	var resp string
	switch op {
	case "SyncFolderItems":
		resp = f.syncFolderItems(req)
	case "GetItem":
		resp = f.getItem(req)
	case "UpdateItem":
		resp = f.updateItem(req)
	case "MoveItem":
		resp = f.moveItem(req)
	case "DeleteItem":
		resp = f.deleteItem(req)
	case "FindFolder":
		resp = f.findFolder(req)
	case "GetFolder":
		resp = f.getFolder(req)
	case "FindItem":
		resp = f.findItem(req)
	default:
		f.t.Errorf("ews fake: operation %s not implemented", op)
		f.fault(w, "ErrorInvalidOperation", "not implemented by the fake", 0)
		return
	}
	f.respond(f.stall.wrap(w, r, op), op, resp)
}

func (f *EWS) popThrottle() (httpThrottle, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.throttle) == 0 {
		return httpThrottle{}, false
	}
	th := f.throttle[0]
	f.throttle = f.throttle[1:]
	return th, true
}

// validate checks the envelope the way Exchange's schema validation does
// and returns the operation and its element.
func (f *EWS) validate(r *http.Request, body []byte) (string, *node, errBadRequest) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/xml") {
		return "", nil, errBadRequest("Content-Type " + ct + ", want text/xml; charset=utf-8")
	}
	var env node
	if err := xml.Unmarshal(body, &env); err != nil {
		return "", nil, errBadRequest("not XML: " + err.Error())
	}
	if env.XMLName.Space != nsSOAP || env.XMLName.Local != "Envelope" {
		return "", nil, errBadRequest(fmt.Sprintf("root element %v, want soap:Envelope", env.XMLName))
	}
	hdr := env.child(nsSOAP, "Header")
	rsv := hdr.child(nsTypes, "RequestServerVersion")
	if rsv == nil {
		return "", nil, errBadRequest("no t:RequestServerVersion in soap:Header")
	}
	switch rsv.attr("Version") {
	case "Exchange2007_SP1", "Exchange2010", "Exchange2010_SP1", "Exchange2010_SP2", "Exchange2013", "Exchange2013_SP1", "Exchange2016", "V2017_07_11":
	default:
		return "", nil, errBadRequest("RequestServerVersion Version=" + strconv.Quote(rsv.attr("Version")))
	}
	imp := hdr.child(nsTypes, "ExchangeImpersonation")
	if f.opts.Impersonate != "" {
		smtp := imp.path("ConnectingSID", "PrimarySmtpAddress")
		if smtp == nil || !strings.EqualFold(strings.TrimSpace(smtp.Text), f.opts.Impersonate) {
			return "", nil, errBadRequest("missing or wrong t:ExchangeImpersonation/t:ConnectingSID/t:PrimarySmtpAddress")
		}
		if !strings.EqualFold(r.Header.Get("X-AnchorMailbox"), f.opts.Impersonate) {
			return "", nil, errBadRequest("impersonation without X-AnchorMailbox " + f.opts.Impersonate)
		}
	} else if imp != nil {
		return "", nil, errBadRequest("unexpected ExchangeImpersonation")
	}
	bodyNode := env.child(nsSOAP, "Body")
	if bodyNode == nil || len(bodyNode.Nodes) != 1 {
		return "", nil, errBadRequest("soap:Body must hold exactly one operation")
	}
	op := &bodyNode.Nodes[0]
	if op.XMLName.Space != nsMessages {
		return "", nil, errBadRequest(fmt.Sprintf("operation %v not in the messages namespace", op.XMLName))
	}
	action := strings.Trim(r.Header.Get("SOAPAction"), `"`)
	if action != nsMessages+"/"+op.XMLName.Local {
		return "", nil, errBadRequest("SOAPAction " + strconv.Quote(action) + " for operation " + op.XMLName.Local)
	}
	// Children of an operation are in the messages namespace, everything
	// below them in the types namespace.
	for _, c := range op.Nodes {
		if c.XMLName.Space != nsMessages {
			return "", nil, errBadRequest(fmt.Sprintf("%s: child %v not in the messages namespace", op.XMLName.Local, c.XMLName))
		}
		if bad := allTypes(c.Nodes); bad != "" {
			return "", nil, errBadRequest(fmt.Sprintf("%s/%s: %s", op.XMLName.Local, c.XMLName.Local, bad))
		}
	}
	if op.XMLName.Local == "SyncFolderItems" {
		// The schema restricts MaxChangesReturned to 1..512.
		n, err := strconv.Atoi(strings.TrimSpace(op.child(nsMessages, "MaxChangesReturned").textOr("")))
		if err != nil || n < 1 || n > 512 {
			return "", nil, errBadRequest("SyncFolderItems MaxChangesReturned must be 1..512")
		}
	}
	return op.XMLName.Local, op, ""
}

func allTypes(ns []node) string {
	for _, n := range ns {
		if n.XMLName.Space != nsTypes {
			return fmt.Sprintf("element %v not in the types namespace", n.XMLName)
		}
		if bad := allTypes(n.Nodes); bad != "" {
			return bad
		}
	}
	return ""
}

// authenticate checks the request's credentials; on failure it has written
// the 401 (or the NTLM challenge) and returns false.
func (f *EWS) authenticate(w http.ResponseWriter, r *http.Request) bool {
	auth := r.Header.Get("Authorization")
	switch f.opts.Auth {
	case EWSBasic:
		u, p, ok := r.BasicAuth()
		if ok && u == f.opts.Username && p == f.opts.Password {
			return true
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="mail.example.com"`)
	case EWSBearer:
		if auth == "Bearer "+f.opts.Token && f.opts.Token != "" {
			return true
		}
		w.Header().Set("WWW-Authenticate", `Bearer client_id="00000002-0000-0ff1-ce00-000000000000", error="invalid_token"`)
	case EWSNTLM:
		return f.ntlmStep(w, r)
	}
	http.Error(w, "401 - Unauthorized", http.StatusUnauthorized)
	return false
}

func (f *EWS) respond(w http.ResponseWriter, op, inner string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="%s"><s:Header>`+
		`<h:ServerVersionInfo MajorVersion="15" MinorVersion="1" MajorBuildNumber="2507" MinorBuildNumber="6" Version="V2017_07_11" `+
		`xmlns:h="%s" xmlns="%s" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/>`+
		`</s:Header><s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">`+
		`<m:%sResponse xmlns:m="%s" xmlns:t="%s"><m:ResponseMessages>%s</m:ResponseMessages></m:%sResponse></s:Body></s:Envelope>`,
		nsSOAP, nsTypes, nsTypes, op, nsMessages, nsTypes, inner, op)
}

// fault writes a SOAP fault in HTTP 500 as Exchange does for ErrorServerBusy
// and schema errors.
func (f *EWS) fault(w http.ResponseWriter, code, text string, backoff time.Duration) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	xmlDetail := ""
	if backoff > 0 {
		xmlDetail = fmt.Sprintf(`<t:MessageXml xmlns:t="%s"><t:Value Name="BackOffMilliseconds">%d</t:Value></t:MessageXml>`, nsTypes, backoff.Milliseconds())
	}
	fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="%s"><s:Body><s:Fault>`+
		`<faultcode xmlns:a="http://schemas.microsoft.com/exchange/services/2006/types">a:%s</faultcode>`+
		`<faultstring xml:lang="en-US">%s</faultstring><detail>`+
		`<e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">%s</e:ResponseCode>`+
		`<e:Message xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">%s</e:Message>%s</detail></s:Fault></s:Body></s:Envelope>`,
		nsSOAP, code, esc(text), code, esc(text), xmlDetail)
}

func esc(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

func errorMessage(op, code, text string, backoff time.Duration) string {
	x := ""
	if backoff > 0 {
		x = fmt.Sprintf(`<m:MessageXml><t:Value Name="BackOffMilliseconds">%d</t:Value></m:MessageXml>`, backoff.Milliseconds())
	}
	return fmt.Sprintf(`<m:%sResponseMessage ResponseClass="Error"><m:MessageText>%s</m:MessageText><m:ResponseCode>%s</m:ResponseCode>`+
		`<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>%s</m:%sResponseMessage>`, op, esc(text), code, x, op)
}

func successOpen(op string) string {
	return fmt.Sprintf(`<m:%sResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>`, op)
}

// folderRef resolves a t:DistinguishedFolderId or t:FolderId under n.
func (f *EWS) folderRefLocked(n *node) *Folder {
	if d := n.child(nsTypes, "DistinguishedFolderId"); d != nil {
		return f.wellKnownLocked(d.attr("Id"))
	}
	if id := n.child(nsTypes, "FolderId"); id != nil {
		return f.folders[id.attr("Id")]
	}
	return nil
}

func (f *EWS) syncFolderItems(op *node) string {
	const name = "SyncFolderItems"
	if shape := op.child(nsMessages, "ItemShape").path("BaseShape"); shape == nil {
		f.t.Errorf("ews fake: SyncFolderItems without ItemShape/BaseShape")
		return errorMessage(name, "ErrorSchemaValidation", "ItemShape is required", 0)
	}
	maxN, _ := strconv.Atoi(strings.TrimSpace(op.child(nsMessages, "MaxChangesReturned").textOr(""))) // range checked by validate
	if f.opts.PageSize > 0 && f.opts.PageSize < maxN {
		maxN = f.opts.PageSize
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Mailbox.mu.Lock()
	defer f.Mailbox.mu.Unlock()
	folder := f.folderRefLocked(op.child(nsMessages, "SyncFolderId"))
	if folder == nil {
		return errorMessage(name, "ErrorFolderNotFound", "The specified folder could not be found in the store.", 0)
	}
	var after int64
	if s := op.child(nsMessages, "SyncState"); s != nil && strings.TrimSpace(s.Text) != "" {
		epoch, wm, ok := parseSyncToken(strings.TrimSpace(s.Text))
		if !ok || epoch != f.epoch {
			return errorMessage(name, "ErrorInvalidSyncStateData", "Synchronization state data is corrupt or otherwise invalid.", 0)
		}
		after = wm
	}
	changes := f.changesLocked(folder.ID, after)
	last := len(changes) <= maxN
	if !last {
		changes = changes[:maxN]
	}
	wm := f.Mailbox.seq
	if !last {
		wm = changes[len(changes)-1].seq
	}
	var b strings.Builder
	b.WriteString(successOpen(name))
	fmt.Fprintf(&b, `<m:SyncState>%s</m:SyncState><m:IncludesLastItemInRange>%t</m:IncludesLastItemInRange><m:Changes>`, syncToken(f.epoch, wm), last)
	for _, c := range changes {
		switch c.kind {
		case "Create":
			fmt.Fprintf(&b, `<t:Create><t:Message><t:ItemId Id="%s" ChangeKey="CQAAABYAAAD%d"/></t:Message></t:Create>`, esc(c.id), c.seq)
		case "ReadFlagChange":
			fmt.Fprintf(&b, `<t:ReadFlagChange><t:ItemId Id="%s" ChangeKey="CQAAABYAAAD%d"/><t:IsRead>%t</t:IsRead></t:ReadFlagChange>`, esc(c.id), c.seq, c.read)
		case "Delete":
			fmt.Fprintf(&b, `<t:Delete><t:ItemId Id="%s" ChangeKey="CQAAABYAAAD%d"/></t:Delete>`, esc(c.id), c.seq)
		}
	}
	b.WriteString(`</m:Changes></m:SyncFolderItemsResponseMessage>`)
	return b.String()
}

func (n *node) textOr(def string) string {
	if n == nil {
		return def
	}
	return n.Text
}

func (f *EWS) itemIDs(op *node) []string {
	var ids []string
	for _, c := range op.child(nsMessages, "ItemIds").nodes() {
		if c.XMLName.Local == "ItemId" {
			ids = append(ids, c.attr("Id"))
		}
	}
	return ids
}

func (n *node) nodes() []node {
	if n == nil {
		return nil
	}
	return n.Nodes
}

func (f *EWS) getItem(op *node) string {
	const name = "GetItem"
	shape := op.child(nsMessages, "ItemShape")
	if shape.path("BaseShape") == nil {
		f.t.Errorf("ews fake: GetItem without ItemShape/BaseShape")
		return errorMessage(name, "ErrorSchemaValidation", "ItemShape is required", 0)
	}
	withMIME := strings.TrimSpace(shape.path("IncludeMimeContent").textOr("")) == "true"
	ids := f.itemIDs(op)
	if len(ids) == 0 {
		f.t.Errorf("ews fake: GetItem without ItemIds/ItemId")
	}
	var b strings.Builder
	for _, id := range ids {
		f.mu.Lock()
		if f.vanish[id] {
			delete(f.vanish, id)
			f.Mailbox.Delete(id)
		}
		f.mu.Unlock()
		msg, ok := f.Get(id)
		if !ok {
			b.WriteString(errorMessage(name, "ErrorItemNotFound", "The specified object was not found in the store., The process failed to get the correct properties.", 0))
			continue
		}
		b.WriteString(successOpen(name))
		b.WriteString(`<m:Items><t:Message>`)
		if withMIME {
			// One long base64 line, as Exchange sends it.
			fmt.Fprintf(&b, `<t:MimeContent CharacterSet="UTF-8">%s</t:MimeContent>`, base64.StdEncoding.EncodeToString(msg.Raw))
		}
		fmt.Fprintf(&b, `<t:ItemId Id="%s" ChangeKey="CQAAABYAAAD%d"/><t:DateTimeReceived>%s</t:DateTimeReceived>`,
			esc(msg.ID), msg.seq, msg.Received.Format(time.RFC3339))
		b.WriteString(`</t:Message></m:Items></m:GetItemResponseMessage>`)
	}
	return b.String()
}

func (f *EWS) updateItem(op *node) string {
	const name = "UpdateItem"
	if op.attr("MessageDisposition") == "" || op.attr("ConflictResolution") == "" {
		f.t.Errorf("ews fake: UpdateItem on a message needs MessageDisposition and ConflictResolution")
		return errorMessage(name, "ErrorInvalidArgument", "MessageDisposition is required for message items", 0)
	}
	var b strings.Builder
	for _, ch := range op.child(nsMessages, "ItemChanges").nodes() {
		id := ch.child(nsTypes, "ItemId")
		set := ch.child(nsTypes, "Updates").path("SetItemField")
		if id == nil || set == nil || set.path("FieldURI") == nil || set.path("FieldURI").attr("FieldURI") != "message:IsRead" {
			f.t.Errorf("ews fake: UpdateItem change must set message:IsRead")
			b.WriteString(errorMessage(name, "ErrorInvalidPropertySet", "unsupported update", 0))
			continue
		}
		read := strings.TrimSpace(set.path("Message", "IsRead").textOr("")) == "true"
		f.Mailbox.mu.Lock()
		msg, ok := f.msgs[id.attr("Id")]
		if ok {
			f.markReadLocked(msg, read)
		}
		f.Mailbox.mu.Unlock()
		if !ok {
			b.WriteString(errorMessage(name, "ErrorItemNotFound", "The specified object was not found in the store.", 0))
			continue
		}
		b.WriteString(successOpen(name))
		fmt.Fprintf(&b, `<m:Items><t:Message><t:ItemId Id="%s" ChangeKey="CQAAABYAAAD%d"/></t:Message></m:Items><m:ConflictResults><t:Count>0</t:Count></m:ConflictResults></m:UpdateItemResponseMessage>`, esc(msg.ID), msg.readSeq)
	}
	return b.String()
}

func (f *EWS) moveItem(op *node) string {
	const name = "MoveItem"
	f.Mailbox.mu.Lock()
	defer f.Mailbox.mu.Unlock()
	dest := f.folderRefLocked(op.child(nsMessages, "ToFolderId"))
	if dest == nil {
		return errorMessage(name, "ErrorFolderNotFound", "The specified folder could not be found in the store.", 0)
	}
	var b strings.Builder
	for _, id := range f.itemIDs(op) {
		msg := f.moveLocked(id, dest)
		if msg == nil {
			b.WriteString(errorMessage(name, "ErrorItemNotFound", "The specified object was not found in the store.", 0))
			continue
		}
		b.WriteString(successOpen(name))
		fmt.Fprintf(&b, `<m:Items><t:Message><t:ItemId Id="%s" ChangeKey="CQAAABYAAAD%d"/></t:Message></m:Items></m:MoveItemResponseMessage>`, esc(msg.ID), msg.seq)
	}
	return b.String()
}

func (f *EWS) deleteItem(op *node) string {
	const name = "DeleteItem"
	dt := op.attr("DeleteType")
	if dt != "HardDelete" && dt != "SoftDelete" && dt != "MoveToDeletedItems" {
		f.t.Errorf("ews fake: DeleteItem DeleteType=%q", dt)
		return errorMessage(name, "ErrorInvalidArgument", "DeleteType is required", 0)
	}
	f.Mailbox.mu.Lock()
	defer f.Mailbox.mu.Unlock()
	var b strings.Builder
	for _, id := range f.itemIDs(op) {
		var ok bool
		if dt == "MoveToDeletedItems" {
			ok = f.moveLocked(id, f.wellKnownLocked("deleteditems")) != nil
		} else {
			ok = f.removeLocked(id) != nil
		}
		if !ok {
			b.WriteString(errorMessage(name, "ErrorItemNotFound", "The specified object was not found in the store.", 0))
			continue
		}
		b.WriteString(successOpen(name) + `</m:DeleteItemResponseMessage>`)
	}
	return b.String()
}

func (f *EWS) findFolder(op *node) string {
	const name = "FindFolder"
	if op.attr("Traversal") == "" {
		f.t.Errorf("ews fake: FindFolder without Traversal")
	}
	f.Mailbox.mu.Lock()
	defer f.Mailbox.mu.Unlock()
	parent := f.folderRefLocked(op.child(nsMessages, "ParentFolderIds"))
	if parent == nil {
		return errorMessage(name, "ErrorFolderNotFound", "The specified folder could not be found in the store.", 0)
	}
	var kids []*Folder
	for _, c := range f.folders {
		if c.Parent == parent.ID {
			kids = append(kids, c)
		}
	}
	sort.Slice(kids, func(i, j int) bool { return kids[i].Name < kids[j].Name })
	var b strings.Builder
	b.WriteString(successOpen(name))
	fmt.Fprintf(&b, `<m:RootFolder IndexedPagingOffset="%d" TotalItemsInView="%d" IncludesLastItemInRange="true"><t:Folders>`, len(kids), len(kids))
	for _, c := range kids {
		b.WriteString(f.folderXMLLocked(c))
	}
	b.WriteString(`</t:Folders></m:RootFolder></m:FindFolderResponseMessage>`)
	return b.String()
}

func (f *EWS) folderXMLLocked(c *Folder) string {
	total, unread := 0, 0
	for _, m := range f.msgs {
		if m.Folder == c.ID {
			total++
			if !m.IsRead {
				unread++
			}
		}
	}
	return fmt.Sprintf(`<t:Folder><t:FolderId Id="%s" ChangeKey="AQAAABYAAAA"/><t:DisplayName>%s</t:DisplayName>`+
		`<t:TotalCount>%d</t:TotalCount><t:ChildFolderCount>0</t:ChildFolderCount><t:UnreadCount>%d</t:UnreadCount></t:Folder>`,
		esc(c.ID), esc(c.Name), total, unread)
}

func (f *EWS) getFolder(op *node) string {
	const name = "GetFolder"
	f.Mailbox.mu.Lock()
	defer f.Mailbox.mu.Unlock()
	folder := f.folderRefLocked(op.child(nsMessages, "FolderIds"))
	if folder == nil {
		return errorMessage(name, "ErrorFolderNotFound", "The specified folder could not be found in the store.", 0)
	}
	return successOpen(name) + `<m:Folders>` + f.folderXMLLocked(folder) + `</m:Folders></m:GetFolderResponseMessage>`
}

func (f *EWS) findItem(op *node) string {
	const name = "FindItem"
	order := op.child(nsMessages, "SortOrder").path("FieldOrder")
	if order == nil || order.path("FieldURI").attr("FieldURI") != "item:DateTimeReceived" {
		f.t.Errorf("ews fake: FindItem must sort by item:DateTimeReceived")
	}
	view := op.child(nsMessages, "IndexedPageItemView")
	if view == nil {
		f.t.Errorf("ews fake: FindItem without IndexedPageItemView")
		return errorMessage(name, "ErrorSchemaValidation", "a paging view is required", 0)
	}
	maxN, _ := strconv.Atoi(view.attr("MaxEntriesReturned"))
	f.Mailbox.mu.Lock()
	defer f.Mailbox.mu.Unlock()
	folder := f.folderRefLocked(op.child(nsMessages, "ParentFolderIds"))
	if folder == nil {
		return errorMessage(name, "ErrorFolderNotFound", "The specified folder could not be found in the store.", 0)
	}
	var msgs []*Message
	for _, m := range f.msgs {
		if m.Folder == folder.ID {
			msgs = append(msgs, m)
		}
	}
	sort.Slice(msgs, func(i, j int) bool { return msgs[i].Received.Before(msgs[j].Received) })
	if order != nil && order.attr("Order") == "Descending" {
		sort.Slice(msgs, func(i, j int) bool { return msgs[i].Received.After(msgs[j].Received) })
	}
	total := len(msgs)
	if maxN > 0 && len(msgs) > maxN {
		msgs = msgs[:maxN]
	}
	var b strings.Builder
	b.WriteString(successOpen(name))
	fmt.Fprintf(&b, `<m:RootFolder IndexedPagingOffset="%d" TotalItemsInView="%d" IncludesLastItemInRange="%t"><t:Items>`, len(msgs), total, len(msgs) == total)
	for _, m := range msgs {
		fmt.Fprintf(&b, `<t:Message><t:ItemId Id="%s" ChangeKey="CQAAABYAAAD%d"/></t:Message>`, esc(m.ID), m.seq)
	}
	b.WriteString(`</t:Items></m:RootFolder></m:FindItemResponseMessage>`)
	return b.String()
}
