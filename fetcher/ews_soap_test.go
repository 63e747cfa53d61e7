package fetcher

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailworker/mailworker/config"
)

// Parsing of the documented EWS and Graph response samples in testdata/.

func readSample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEWSParseSyncFolderItemsSample(t *testing.T) {
	var env ewsResponseEnvelope
	if err := xml.Unmarshal(readSample(t, "ews/syncfolderitems-response.xml"), &env); err != nil {
		t.Fatal(err)
	}
	if env.Body.Response == nil || len(env.Body.Response.Messages.List) != 1 {
		t.Fatalf("parsed %+v, want one response message", env.Body)
	}
	m := env.Body.Response.Messages.List[0]
	if m.err("s", "SyncFolderItems") != nil || !m.IncludesLast || !strings.HasPrefix(m.SyncState, "H4sI") {
		t.Errorf("message = class %q state %.8q last %v", m.Class, m.SyncState, m.IncludesLast)
	}
	var creates []string
	var kinds []string
	for _, c := range m.Changes.List {
		kinds = append(kinds, c.XMLName.Local)
		if c.XMLName.Local == "Create" && c.Item != nil {
			creates = append(creates, c.Item.ItemID.ID)
		}
	}
	if fmt.Sprint(kinds) != "[Create Update Delete ReadFlagChange Create]" {
		t.Errorf("change kinds %v", kinds)
	}
	if fmt.Sprint(creates) != "[AAAtAEF/swbAAA= AAAtAEF/swbBAA=]" {
		t.Errorf("created ids %v, want the Message and the MeetingRequest", creates)
	}
	if env.Header.Version == nil || env.Header.Version.Major != "8" {
		t.Errorf("server version %+v", env.Header.Version)
	}
}

func TestEWSParseErrors(t *testing.T) {
	var env ewsResponseEnvelope
	if err := xml.Unmarshal(readSample(t, "ews/syncfolderitems-invalid-syncstate.xml"), &env); err != nil {
		t.Fatal(err)
	}
	ee := env.Body.Response.Messages.List[0].err("exch", "SyncFolderItems")
	if ee == nil || ee.Code != EWSErrorInvalidSyncStateData || !IsEWSCode(ee, EWSErrorInvalidSyncStateData) {
		t.Errorf("invalid sync state = %v", ee)
	}
	if got := ee.Error(); got != "ews exch SyncFolderItems: ErrorInvalidSyncStateData: Synchronization state data is corrupt or otherwise invalid." {
		t.Errorf("Error() = %q", got)
	}

	env = ewsResponseEnvelope{}
	if err := xml.Unmarshal(readSample(t, "ews/serverbusy-fault.xml"), &env); err != nil {
		t.Fatal(err)
	}
	if env.Body.Fault == nil {
		t.Fatal("no fault parsed")
	}
	fe := env.Body.Fault.err("exch", "GetItem", 500)
	if fe.Code != EWSErrorServerBusy || fe.BackOff != 297749*time.Millisecond {
		t.Errorf("fault = %+v, want ErrorServerBusy with 297749 ms", fe)
	}
}

func TestEWSStreamGetItemMIME(t *testing.T) {
	var out bytes.Buffer
	res, err := streamGetItemMIME(bytes.NewReader(readSample(t, "ews/getitem-mime-response.xml")), &out)
	if err != nil || !res.found || res.respMsg.err("s", "GetItem") != nil {
		t.Fatalf("stream = %+v, %v", res, err)
	}
	if !strings.HasPrefix(out.String(), "From: Sadie Daniels") || !strings.HasSuffix(out.String(), "My password expired.\r\n") {
		t.Errorf("MIME = %q", out.String())
	}
	if res.received != "2026-01-06T10:12:05Z" {
		t.Errorf("received %q", res.received)
	}

	for _, tc := range []struct{ file, code string }{
		{"ews/getitem-itemnotfound.xml", EWSErrorItemNotFound},
		{"ews/getitem-serverbusy-responsemessage.xml", EWSErrorServerBusy},
	} {
		out.Reset()
		res, err := streamGetItemMIME(bytes.NewReader(readSample(t, tc.file)), &out)
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if ee := res.respMsg.err("s", "GetItem"); ee == nil || ee.Code != tc.code || out.Len() != 0 {
			t.Errorf("%s: err %v, %d bytes; want %s", tc.file, ee, out.Len(), tc.code)
		}
	}
	if res, _ := streamGetItemMIME(bytes.NewReader(readSample(t, "ews/getitem-serverbusy-responsemessage.xml")), io.Discard); backOff(res.respMsg.Values) != 2500*time.Millisecond {
		t.Errorf("BackOffMilliseconds in response message not parsed")
	}
}

// TestEWSStreamGetItemMIMEShapes covers wrapped base64, self-closing and
// empty MimeContent, and a body split across many small reads.
func TestEWSStreamGetItemMIMEShapes(t *testing.T) {
	raw := bytes.Repeat([]byte("Subject: x\r\n\r\nline of text é\r\n"), 500)
	b64 := base64.StdEncoding.EncodeToString(raw)
	var wrapped strings.Builder
	for i := 0; i < len(b64); i += 76 {
		wrapped.WriteString(b64[i:min(i+76, len(b64))] + "\r\n")
	}
	doc := func(mime string) string {
		return `<?xml version="1.0"?><s:Envelope xmlns:s="` + nsSOAP + `"><s:Body><m:GetItemResponse xmlns:m="` + nsMessages + `" xmlns:t="` + nsTypes + `">` +
			`<m:ResponseMessages><m:GetItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Items><t:Message>` +
			mime + `<t:ItemId Id="x"/></t:Message></m:Items></m:GetItemResponseMessage></m:ResponseMessages></m:GetItemResponse></s:Body></s:Envelope>`
	}
	for _, tc := range []struct {
		name, doc string
		want      []byte
	}{
		{"one-line", doc(`<t:MimeContent CharacterSet="UTF-8">` + b64 + `</t:MimeContent>`), raw},
		{"wrapped", doc(`<t:MimeContent CharacterSet="UTF-8">` + wrapped.String() + `</t:MimeContent>`), raw},
		{"self-closing", doc(`<t:MimeContent CharacterSet="UTF-8"/>`), nil},
		{"empty", doc(`<t:MimeContent></t:MimeContent>`), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			// iotest-style one-byte-at-a-time reader: exercises buffer edges.
			res, err := streamGetItemMIME(&oneByteReader{r: strings.NewReader(tc.doc)}, &out)
			if err != nil || !res.found {
				t.Fatalf("stream: %+v, %v", res, err)
			}
			if !bytes.Equal(out.Bytes(), tc.want) {
				t.Errorf("decoded %d bytes, want %d", out.Len(), len(tc.want))
			}
		})
	}
	t.Run("truncated", func(t *testing.T) {
		d := doc(`<t:MimeContent CharacterSet="UTF-8">` + b64 + `</t:MimeContent>`)
		_, err := streamGetItemMIME(strings.NewReader(d[:len(d)/2]), io.Discard)
		if err == nil {
			t.Fatal("truncated response parsed without error")
		}
	})
}

type oneByteReader struct{ r io.Reader }

func (o *oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

// BenchmarkEWSStreamGetItemMIME measures decoding a 20 MB message: the
// allocations stay far below the message size because the base64 text is
// never held whole.
func BenchmarkEWSStreamGetItemMIME(b *testing.B) {
	raw := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz\r\n"), 20<<20/38)
	doc := []byte(`<?xml version="1.0"?><s:Envelope xmlns:s="` + nsSOAP + `"><s:Body><m:GetItemResponse xmlns:m="` + nsMessages + `" xmlns:t="` + nsTypes + `">` +
		`<m:ResponseMessages><m:GetItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Items><t:Message>` +
		`<t:MimeContent CharacterSet="UTF-8">` + base64.StdEncoding.EncodeToString(raw) + `</t:MimeContent>` +
		`<t:ItemId Id="x"/></t:Message></m:Items></m:GetItemResponseMessage></m:ResponseMessages></m:GetItemResponse></s:Body></s:Envelope>`)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := streamGetItemMIME(bytes.NewReader(doc), io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

func TestGraphParseSamples(t *testing.T) {
	var page graphPage
	if err := json.Unmarshal(readSample(t, "graph/delta-page.json"), &page); err != nil {
		t.Fatal(err)
	}
	var live []string
	for _, it := range page.Value {
		if it.Removed == nil {
			live = append(live, it.ID)
		}
	}
	if fmt.Sprint(live) != "[AAMkADNkNAAASq35xAAA= AAMkADNkNAAASq35zAAA=]" || page.NextLink == "" || page.DeltaLink != "" {
		t.Errorf("page: live %v next %q delta %q", live, page.NextLink, page.DeltaLink)
	}
	page = graphPage{}
	if err := json.Unmarshal(readSample(t, "graph/delta-last.json"), &page); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.DeltaLink, "$deltatoken=") || page.NextLink != "" || len(page.Value) != 0 {
		t.Errorf("last page: %+v", page)
	}

	g := &Graph{srv: srvNamed("m365")}
	for _, tc := range []struct {
		file   string
		status int
		reset  bool
	}{
		{"graph/error-syncstatenotfound.json", http.StatusGone, true},
		{"graph/error-syncstatenotfound.json", http.StatusBadRequest, true}, // code alone suffices
		{"graph/error-throttled.json", http.StatusBadRequest, false},
	} {
		resp := &http.Response{StatusCode: tc.status, Status: http.StatusText(tc.status), Header: http.Header{},
			Body: io.NopCloser(bytes.NewReader(readSample(t, tc.file)))}
		err := g.check("delta")(resp)
		if syncReset(err) != tc.reset {
			t.Errorf("%s with %d: syncReset(%v) = %v, want %v", tc.file, tc.status, err, !tc.reset, tc.reset)
		}
	}
	resp := &http.Response{StatusCode: 429, Header: http.Header{"Retry-After": {"7"}}, Body: io.NopCloser(bytes.NewReader(readSample(t, "graph/error-throttled.json")))}
	if te, ok := g.check("delta")(resp).(*throttleError); !ok || te.wait != 7*time.Second {
		t.Errorf("429 Retry-After 7 = %v, want a 7s throttle wait", te)
	}
	var f struct {
		Total  int `json:"totalItemCount"`
		Unread int `json:"unreadItemCount"`
	}
	if err := json.Unmarshal(readSample(t, "graph/mailfolder.json"), &f); err != nil || f.Total != 71 || f.Unread != 70 {
		t.Errorf("mailFolder counts %+v, %v", f, err)
	}
}

func srvNamed(name string) config.Server { return config.Server{Name: name} }
