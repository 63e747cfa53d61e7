package fetcher

// A small hand-written EWS SOAP client: the envelope, the seven operations
// mailworker uses, and the parsing of response messages and SOAP faults.
// Shapes follow the EWS reference on Microsoft Learn
// (https://learn.microsoft.com/exchange/client-developer/web-service-reference/ews-operations-in-exchange);
// samples are in testdata/ews.

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// EWS XML namespaces.
const (
	nsSOAP     = "http://schemas.xmlsoap.org/soap/envelope/"
	nsMessages = "http://schemas.microsoft.com/exchange/services/2006/messages"
	nsTypes    = "http://schemas.microsoft.com/exchange/services/2006/types"
)

// DefaultEWSVersion is the RequestServerVersion sent when the server's
// ews_version is empty.
const DefaultEWSVersion = "Exchange2013_SP1"

// EWS response codes mailworker branches on
// (https://learn.microsoft.com/exchange/client-developer/web-service-reference/responsecode).
const (
	EWSErrorServerBusy           = "ErrorServerBusy"
	EWSErrorInvalidSyncStateData = "ErrorInvalidSyncStateData"
	EWSErrorItemNotFound         = "ErrorItemNotFound"
	EWSErrorFolderNotFound       = "ErrorFolderNotFound"
)

// EWSError is an EWS failure: a SOAP fault or a response message whose
// ResponseClass is Error. Code is the EWS ResponseCode (or the fault code
// when the fault carries none).
type EWSError struct {
	Server    string // config name
	Operation string // SOAP operation, e.g. SyncFolderItems
	Code      string // e.g. ErrorServerBusy, ErrorItemNotFound
	Message   string // MessageText or faultstring
	HTTP      int    // HTTP status of the response
	// BackOff is the BackOffMilliseconds hint of ErrorServerBusy, else zero.
	BackOff time.Duration
}

func (e *EWSError) Error() string {
	s := fmt.Sprintf("ews %s %s: %s", e.Server, e.Operation, e.Code)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// IsEWSCode reports whether err is an *EWSError with the given code.
func IsEWSCode(err error, code string) bool {
	var e *EWSError
	return errors.As(err, &e) && e.Code == code
}

// ewsEnvelopeOpts is what goes into every request's SOAP header.
type ewsEnvelopeOpts struct {
	version     string
	impersonate string // PrimarySmtpAddress, "" = none
}

// ewsEnvelope wraps body (one operation element) in a SOAP envelope.
func ewsEnvelope(o ewsEnvelopeOpts, body string) string {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?>` + "\n")
	b.WriteString(`<soap:Envelope xmlns:soap="` + nsSOAP + `" xmlns:t="` + nsTypes + `" xmlns:m="` + nsMessages + `">`)
	b.WriteString(`<soap:Header><t:RequestServerVersion Version="` + xmlEsc(o.version) + `"/>`)
	if o.impersonate != "" {
		b.WriteString(`<t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>` + xmlEsc(o.impersonate) +
			`</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>`)
	}
	b.WriteString(`</soap:Header><soap:Body>`)
	b.WriteString(body)
	b.WriteString(`</soap:Body></soap:Envelope>`)
	return b.String()
}

func xmlEsc(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s)) //nolint:errcheck // strings.Builder never fails
	return b.String()
}

// ewsFolderRef names a folder: a distinguished folder id (inbox) or a
// FolderId found with FindFolder.
type ewsFolderRef struct {
	Distinguished string
	ID            string
	ChangeKey     string
}

func (f ewsFolderRef) xml() string {
	if f.Distinguished != "" {
		return `<t:DistinguishedFolderId Id="` + xmlEsc(f.Distinguished) + `"/>`
	}
	s := `<t:FolderId Id="` + xmlEsc(f.ID) + `"`
	if f.ChangeKey != "" {
		s += ` ChangeKey="` + xmlEsc(f.ChangeKey) + `"`
	}
	return s + `/>`
}

func (f ewsFolderRef) String() string {
	if f.Distinguished != "" {
		return f.Distinguished
	}
	return f.ID
}

// ewsDistinguished are the distinguished folder ids a folder path may
// start with (https://learn.microsoft.com/exchange/client-developer/web-service-reference/distinguishedfolderid).
var ewsDistinguished = map[string]bool{
	"inbox": true, "deleteditems": true, "drafts": true, "sentitems": true, "outbox": true,
	"junkemail": true, "msgfolderroot": true, "root": true, "archivemsgfolderroot": true,
	"archiveinbox": true, "conversationhistory": true,
}

func ewsSyncFolderItemsBody(folder ewsFolderRef, state string, max int) string {
	s := `<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>` +
		`<m:SyncFolderId>` + folder.xml() + `</m:SyncFolderId>`
	if state != "" {
		s += `<m:SyncState>` + xmlEsc(state) + `</m:SyncState>`
	}
	return s + `<m:MaxChangesReturned>` + strconv.Itoa(max) + `</m:MaxChangesReturned></m:SyncFolderItems>`
}

func ewsGetItemMIMEBody(id string) string {
	return `<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:IncludeMimeContent>true</t:IncludeMimeContent>` +
		`<t:AdditionalProperties><t:FieldURI FieldURI="item:DateTimeReceived"/></t:AdditionalProperties></m:ItemShape>` +
		`<m:ItemIds><t:ItemId Id="` + xmlEsc(id) + `"/></m:ItemIds></m:GetItem>`
}

func ewsMarkReadBody(id, changeKey string) string {
	ck := ""
	if changeKey != "" {
		ck = ` ChangeKey="` + xmlEsc(changeKey) + `"`
	}
	return `<m:UpdateItem MessageDisposition="SaveOnly" ConflictResolution="AutoResolve"><m:ItemChanges><t:ItemChange>` +
		`<t:ItemId Id="` + xmlEsc(id) + `"` + ck + `/><t:Updates><t:SetItemField><t:FieldURI FieldURI="message:IsRead"/>` +
		`<t:Message><t:IsRead>true</t:IsRead></t:Message></t:SetItemField></t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>`
}

func ewsMoveItemBody(id string, to ewsFolderRef) string {
	return `<m:MoveItem><m:ToFolderId>` + to.xml() + `</m:ToFolderId><m:ItemIds><t:ItemId Id="` + xmlEsc(id) + `"/></m:ItemIds></m:MoveItem>`
}

func ewsDeleteItemBody(id string) string {
	return `<m:DeleteItem DeleteType="MoveToDeletedItems"><m:ItemIds><t:ItemId Id="` + xmlEsc(id) + `"/></m:ItemIds></m:DeleteItem>`
}

func ewsFindFolderBody(parent ewsFolderRef) string {
	return `<m:FindFolder Traversal="Shallow"><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape>` +
		`<m:IndexedPageFolderView MaxEntriesReturned="1000" Offset="0" BasePoint="Beginning"/>` +
		`<m:ParentFolderIds>` + parent.xml() + `</m:ParentFolderIds></m:FindFolder>`
}

func ewsGetFolderBody(f ewsFolderRef) string {
	return `<m:GetFolder><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape>` +
		`<m:FolderIds>` + f.xml() + `</m:FolderIds></m:GetFolder>`
}

func ewsFindOldestBody(f ewsFolderRef) string {
	return `<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>` +
		`<m:IndexedPageItemView MaxEntriesReturned="1" Offset="0" BasePoint="Beginning"/>` +
		`<m:SortOrder><t:FieldOrder Order="Ascending"><t:FieldURI FieldURI="item:DateTimeReceived"/></t:FieldOrder></m:SortOrder>` +
		`<m:ParentFolderIds>` + f.xml() + `</m:ParentFolderIds></m:FindItem>`
}

// Response shapes. Local names only: encoding/xml then matches any
// namespace, which tolerates the prefixes servers choose.

type ewsResponseEnvelope struct {
	Header struct {
		Version *ewsServerVersion `xml:"ServerVersionInfo"`
	} `xml:"Header"`
	Body struct {
		Fault    *ewsFault    `xml:"Fault"`
		Response *ewsResponse `xml:",any"`
	} `xml:"Body"`
}

type ewsServerVersion struct {
	Major   string `xml:"MajorVersion,attr"`
	Minor   string `xml:"MinorVersion,attr"`
	Build   string `xml:"MajorBuildNumber,attr"`
	Rev     string `xml:"MinorBuildNumber,attr"`
	Version string `xml:"Version,attr"`
}

func (v *ewsServerVersion) String() string {
	return fmt.Sprintf("%s.%s.%s.%s (%s)", v.Major, v.Minor, v.Build, v.Rev, v.Version)
}

type ewsFault struct {
	Code   string `xml:"faultcode"`
	String string `xml:"faultstring"`
	Detail struct {
		ResponseCode string     `xml:"ResponseCode"`
		Message      string     `xml:"Message"`
		Values       []ewsValue `xml:"MessageXml>Value"`
	} `xml:"detail"`
}

type ewsValue struct {
	Name  string `xml:"Name,attr"`
	Value string `xml:",chardata"`
}

type ewsResponse struct {
	XMLName  xml.Name
	Messages struct {
		List []ewsResponseMessage `xml:",any"`
	} `xml:"ResponseMessages"`
}

type ewsResponseMessage struct {
	Class        string     `xml:"ResponseClass,attr"`
	Text         string     `xml:"MessageText"`
	Code         string     `xml:"ResponseCode"`
	Values       []ewsValue `xml:"MessageXml>Value"`
	SyncState    string     `xml:"SyncState"`
	IncludesLast bool       `xml:"IncludesLastItemInRange"`
	Changes      struct {
		List []ewsChange `xml:",any"`
	} `xml:"Changes"`
	Folders    []ewsFolder `xml:"Folders>Folder"`
	RootFolder struct {
		Folders []ewsFolder `xml:"Folders>Folder"`
		Items   []ewsItem   `xml:"Items>Message"`
	} `xml:"RootFolder"`
}

// ewsChange is one t:Create, t:Update, t:Delete or t:ReadFlagChange.
type ewsChange struct {
	XMLName xml.Name
	Item    *ewsItem `xml:",any"` // Create and Update wrap an item element
}

type ewsItem struct {
	XMLName xml.Name
	ItemID  struct {
		ID        string `xml:"Id,attr"`
		ChangeKey string `xml:"ChangeKey,attr"`
	} `xml:"ItemId"`
	DateTimeReceived string `xml:"DateTimeReceived"`
}

type ewsFolder struct {
	FolderID struct {
		ID        string `xml:"Id,attr"`
		ChangeKey string `xml:"ChangeKey,attr"`
	} `xml:"FolderId"`
	DisplayName string `xml:"DisplayName"`
	TotalCount  int    `xml:"TotalCount"`
	UnreadCount int    `xml:"UnreadCount"`
}

// backOff returns the BackOffMilliseconds value among vs, or zero.
func backOff(vs []ewsValue) time.Duration {
	for _, v := range vs {
		if v.Name == "BackOffMilliseconds" {
			if ms, err := strconv.ParseInt(strings.TrimSpace(v.Value), 10, 64); err == nil && ms > 0 {
				return time.Duration(ms) * time.Millisecond
			}
		}
	}
	return 0
}

// faultError turns a SOAP fault into an *EWSError.
func (f *ewsFault) err(server, op string, status int) *EWSError {
	code := f.Detail.ResponseCode
	if code == "" {
		code = f.Code
		if i := strings.IndexByte(code, ':'); i >= 0 {
			code = code[i+1:]
		}
	}
	msg := f.String
	if msg == "" {
		msg = f.Detail.Message
	}
	return &EWSError{Server: server, Operation: op, Code: code, Message: msg, HTTP: status, BackOff: backOff(f.Detail.Values)}
}

// err returns the response message's failure, or nil when it succeeded
// (Success, or Warning without an error code).
func (m *ewsResponseMessage) err(server, op string) *EWSError {
	if m.Class == "Success" || (m.Class == "Warning" && (m.Code == "" || m.Code == "NoError")) {
		return nil
	}
	return &EWSError{Server: server, Operation: op, Code: m.Code, Message: m.Text, HTTP: 200, BackOff: backOff(m.Values)}
}

// ewsMIMEResult is what streamGetItemMIME found.
type ewsMIMEResult struct {
	respMsg  ewsResponseMessage // the GetItemResponseMessage, without items
	fault    *ewsFault
	received string
	found    bool // a MimeContent element was present
}

// streamGetItemMIME reads a GetItem response from r, decoding the base64
// MimeContent into w without holding the message in memory: the XML
// decoder reads from a bufio.Reader that is shared with the base64 loop,
// so the text content of MimeContent is consumed directly, chunk by chunk.
func streamGetItemMIME(r io.Reader, w io.Writer) (*ewsMIMEResult, error) {
	br := &lastBytesReader{r: bufio.NewReaderSize(r, 64<<10)}
	dec := xml.NewDecoder(br)
	res := &ewsMIMEResult{}
	var stack []string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return res, nil
		}
		if err != nil {
			return res, fmt.Errorf("parse GetItem response: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			name := t.Name.Local
			switch {
			case name == "Fault":
				res.fault = &ewsFault{}
				if err := dec.DecodeElement(res.fault, &t); err != nil {
					return res, fmt.Errorf("parse SOAP fault: %w", err)
				}
				continue
			case name == "GetItemResponseMessage":
				for _, a := range t.Attr {
					if a.Name.Local == "ResponseClass" {
						res.respMsg.Class = a.Value
					}
				}
			case name == "ResponseCode" || name == "MessageText" || name == "DateTimeReceived":
				var s string
				if err := dec.DecodeElement(&s, &t); err != nil {
					return res, fmt.Errorf("parse GetItem %s: %w", name, err)
				}
				switch name {
				case "ResponseCode":
					res.respMsg.Code = s
				case "MessageText":
					res.respMsg.Text = s
				default:
					res.received = s
				}
				continue
			case name == "MessageXml":
				var vs struct {
					V []ewsValue `xml:"Value"`
				}
				if err := dec.DecodeElement(&vs, &t); err != nil {
					return res, fmt.Errorf("parse GetItem MessageXml: %w", err)
				}
				res.respMsg.Values = vs.V
				continue
			case name == "MimeContent":
				res.found = true
				if br.last[0] == '/' && br.last[1] == '>' {
					continue // <t:MimeContent/>: empty
				}
				if err := copyBase64Text(br.r, w); err != nil {
					return res, err
				}
				continue
			}
			stack = append(stack, name)
		case xml.EndElement:
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		}
	}
}

// copyBase64Text decodes base64 text from br up to (not including) the next
// '<' into w, skipping whitespace.
func copyBase64Text(br *bufio.Reader, w io.Writer) error {
	if _, err := io.Copy(w, base64.NewDecoder(base64.StdEncoding, &xmlTextReader{br: br})); err != nil {
		return fmt.Errorf("decode MimeContent: %w", err)
	}
	return nil
}

// xmlTextReader reads the base64 text of an element from br, dropping
// whitespace, and stops (io.EOF) before the '<' of the next tag, leaving it
// unread for the XML decoder.
type xmlTextReader struct {
	br   *bufio.Reader
	done bool
}

func (x *xmlTextReader) Read(p []byte) (int, error) {
	if x.done {
		return 0, io.EOF
	}
	if x.br.Buffered() == 0 {
		if _, err := x.br.Peek(1); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
	}
	chunk, _ := x.br.Peek(x.br.Buffered()) // cannot fail: the bytes are buffered
	end := bytes.IndexByte(chunk, '<')
	if end >= 0 {
		chunk = chunk[:end]
	}
	n, used := 0, 0
	for _, c := range chunk {
		if n == len(p) {
			break
		}
		used++
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '&':
			// Entities never occur in base64 text.
			return n, errors.New("unexpected entity in base64 MimeContent")
		}
		p[n] = c
		n++
	}
	if _, err := x.br.Discard(used); err != nil {
		return n, err
	}
	if end >= 0 && used == end {
		x.done = true
		if n == 0 {
			return 0, io.EOF
		}
	}
	return n, nil
}

// lastBytesReader remembers the last two bytes read through ReadByte, so
// that a self-closing element can be told apart after the decoder returns
// its StartElement. It implements io.ByteReader, so xml.Decoder reads from
// it without buffering of its own.
type lastBytesReader struct {
	r    *bufio.Reader
	last [2]byte
}

func (l *lastBytesReader) ReadByte() (byte, error) {
	c, err := l.r.ReadByte()
	if err == nil {
		l.last[0], l.last[1] = l.last[1], c
	}
	return c, err
}

func (l *lastBytesReader) Read(p []byte) (int, error) { return l.r.Read(p) }
