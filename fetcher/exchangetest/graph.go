package exchangetest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// GraphOptions configures a Graph fake.
type GraphOptions struct {
	// User is the mailbox (UPN) served under /users/{User}.
	User string
	// Token is the bearer token accepted; RotateToken changes it.
	Token string
	// PageSize caps delta pages below the client's odata.maxpagesize
	// (0 = the client's value, or Graph's default of 10).
	PageSize int
	// ParallelValues, when > 0, holds the first ParallelValues $value
	// requests until that many are in flight at once, proving that the
	// client downloads in parallel (a serial client times out).
	ParallelValues int
	// TLS serves HTTPS with a self-signed certificate (see CertPEM).
	TLS bool
	// Mailbox to serve; nil = NewMailbox().
	Mailbox *Mailbox
}

// Graph is a fake Microsoft Graph mail API. URL is the service root
// (like https://graph.microsoft.com/v1.0).
type Graph struct {
	*Mailbox
	URL string

	t    testing.TB
	opts GraphOptions
	srv  *httptest.Server

	mu          sync.Mutex
	token       string
	epoch       int
	inflight    int
	maxInflight int
	requests    []string
	throttle    []httpThrottle
	vanish      map[string]bool
	barrier     chan struct{} // closed when ParallelValues requests arrived
	arrived     int
	stall       stall
}

// GraphConcurrencyLimit is Exchange Online's concurrent request limit per
// mailbox; the fake answers 429 beyond it, as the real service does.
const GraphConcurrencyLimit = 4

// NewGraph starts a fake Graph server, stopped at cleanup.
func NewGraph(t testing.TB, opts GraphOptions) *Graph {
	if opts.Mailbox == nil {
		opts.Mailbox = NewMailbox()
	}
	g := &Graph{Mailbox: opts.Mailbox, t: t, opts: opts, token: opts.Token, vanish: map[string]bool{}, barrier: make(chan struct{})}
	g.srv = httptest.NewUnstartedServer(http.HandlerFunc(g.serve))
	startServer(g.srv, opts.TLS)
	t.Cleanup(g.srv.Close)
	g.URL = g.srv.URL + "/v1.0"
	return g
}

// RotateToken makes the fake accept only tok from now on (the client's
// cached token then gets a 401).
func (g *Graph) RotateToken(tok string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.token = tok
}

// Throttle makes the next n requests fail with status (429, 503, 504) and
// Retry-After retryAfter ("" = none).
func (g *Graph) Throttle(n, status int, retryAfter string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for range n {
		g.throttle = append(g.throttle, httpThrottle{status, retryAfter})
	}
}

// ExpireDeltaTokens makes every nextLink and deltaLink issued so far fail
// with HTTP 410 Gone (syncStateNotFound).
func (g *Graph) ExpireDeltaTokens() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.epoch++
}

// VanishOnFetch deletes message id when its $value is requested.
func (g *Graph) VanishOnFetch(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.vanish[id] = true
}

// MaxConcurrent is the most requests that were in flight at once.
func (g *Graph) MaxConcurrent() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.maxInflight
}

// Requests returns "METHOD path" of every authorized request, in order.
func (g *Graph) Requests() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.requests...)
}

// Count returns how many requests started with prefix ("PATCH ", "GET ").
func (g *Graph) Count(prefix string) int {
	n := 0
	for _, r := range g.Requests() {
		if strings.HasPrefix(r, prefix) {
			n++
		}
	}
	return n
}

func graphError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code": code, "message": msg,
		"innerError": map[string]string{"date": time.Now().UTC().Format(time.RFC3339), "request-id": "00000000-0000-0000-0000-000000000000"},
	}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (g *Graph) serve(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	g.inflight++
	if g.inflight > g.maxInflight {
		g.maxInflight = g.inflight
	}
	over := g.inflight > GraphConcurrencyLimit
	var th *httpThrottle
	if len(g.throttle) > 0 {
		th = &g.throttle[0]
		g.throttle = g.throttle[1:]
	}
	tok := g.token
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.inflight--
		g.mu.Unlock()
	}()
	if over {
		g.t.Errorf("graph fake: more than %d concurrent requests for one mailbox", GraphConcurrencyLimit)
		w.Header().Set("Retry-After", "1")
		graphError(w, http.StatusTooManyRequests, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.")
		return
	}
	if th != nil {
		if th.retryAfter != "" {
			w.Header().Set("Retry-After", th.retryAfter)
		}
		graphError(w, th.status, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.")
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+tok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"`)
		graphError(w, http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/v1.0/users/")
	if !ok {
		g.t.Errorf("graph fake: unexpected path %s", r.URL.Path)
		graphError(w, http.StatusBadRequest, "BadRequest", "Invalid version.")
		return
	}
	segs := strings.Split(rest, "/")
	for i := range segs {
		s, err := url.PathUnescape(segs[i])
		if err != nil {
			graphError(w, http.StatusBadRequest, "BadRequest", "bad path")
			return
		}
		segs[i] = s
	}
	if !strings.EqualFold(segs[0], g.opts.User) {
		graphError(w, http.StatusNotFound, "ErrorInvalidUser", "The requested user '"+segs[0]+"' is invalid.")
		return
	}
	g.mu.Lock()
	g.requests = append(g.requests, r.Method+" /users/"+strings.Join(segs, "/"))
	g.mu.Unlock()
	segs = segs[1:]
	q := r.URL.Query()
	switch {
	case r.Method == http.MethodGet && len(segs) == 4 && segs[0] == "mailFolders" && segs[2] == "messages" && segs[3] == "delta":
		g.delta(w, r, segs[1], q)
	case r.Method == http.MethodGet && len(segs) == 2 && segs[0] == "mailFolders":
		g.getFolder(w, segs[1], q)
	case r.Method == http.MethodGet && len(segs) == 3 && segs[0] == "mailFolders" && segs[2] == "childFolders":
		g.childFolders(w, segs[1], q)
	case r.Method == http.MethodGet && len(segs) == 3 && segs[0] == "mailFolders" && segs[2] == "messages":
		g.listMessages(w, segs[1], q)
	case r.Method == http.MethodGet && len(segs) == 3 && segs[0] == "messages" && segs[2] == "$value":
		g.value(w, r, segs[1])
	case r.Method == http.MethodPatch && len(segs) == 2 && segs[0] == "messages":
		g.patch(w, r, segs[1])
	case r.Method == http.MethodPost && len(segs) == 3 && segs[0] == "messages" && segs[2] == "move":
		g.move(w, r, segs[1])
	case r.Method == http.MethodDelete && len(segs) == 2 && segs[0] == "messages":
		g.delete(w, segs[1])
	default:
		g.t.Errorf("graph fake: unsupported request %s %s", r.Method, r.URL.Path)
		graphError(w, http.StatusBadRequest, "BadRequest", "Unsupported segment type.")
	}
}

// checkQuery fails the test on query options outside allowed.
func (g *Graph) checkQuery(w http.ResponseWriter, q url.Values, allowed ...string) bool {
	for k := range q {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			g.t.Errorf("graph fake: unexpected query option %q", k)
			graphError(w, http.StatusBadRequest, "BadRequest", "Query option '"+k+"' is not allowed.")
			return false
		}
	}
	return true
}

func (g *Graph) delta(w http.ResponseWriter, r *http.Request, folderName string, q url.Values) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.Mailbox.mu.Lock()
	defer g.Mailbox.mu.Unlock()
	folder := g.folderLocked(folderName)
	if folder == nil {
		graphError(w, http.StatusNotFound, "ErrorItemNotFound", "The specified object was not found in the store.")
		return
	}
	var after int64
	token := q.Get("$skiptoken")
	if token == "" {
		token = q.Get("$deltatoken")
	}
	if token != "" {
		// Query options live inside the token: the link is used as is.
		if len(q) != 1 {
			g.t.Errorf("graph fake: delta link was modified: %v", q)
		}
		epoch, wm, ok := parseSyncToken(token)
		if !ok || epoch != g.epoch {
			graphError(w, http.StatusGone, "SyncStateNotFound", "The sync state generation is not found.")
			return
		}
		after = wm
	} else {
		if !g.checkQuery(w, q, "$select", "changeType", "$filter", "$orderby", "$top") {
			return
		}
		if ct := q.Get("changeType"); ct != "" && ct != "created" && ct != "updated" && ct != "deleted" {
			graphError(w, http.StatusBadRequest, "BadRequest", "Invalid changeType.")
			return
		}
		if sel := q.Get("$select"); sel != "" && !strings.Contains(","+sel+",", ",id,") {
			g.t.Errorf("graph fake: $select %q without id", sel)
		}
	}
	size := 10 // Graph's default page size for message delta
	if p := r.Header.Get("Prefer"); p != "" {
		v, ok := strings.CutPrefix(p, "odata.maxpagesize=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 1 {
			g.t.Errorf("graph fake: Prefer %q, want odata.maxpagesize=N", p)
		} else {
			size = n
		}
	}
	if g.opts.PageSize > 0 && g.opts.PageSize < size {
		size = g.opts.PageSize
	}
	changes := g.changesLocked(folder.ID, after)
	var page []map[string]any
	var lastSeq int64
	n := 0
	for _, c := range changes {
		if n == size {
			break
		}
		switch c.kind {
		case "Create":
			m := g.msgs[c.id]
			page = append(page, map[string]any{
				"@odata.type": "#microsoft.graph.message", "@odata.etag": fmt.Sprintf(`W/"CQAAABYAAAD%d"`, m.seq),
				"id": m.ID, "receivedDateTime": m.Received.Format(time.RFC3339), "isRead": m.IsRead,
				"internetMessageId": fmt.Sprintf("<fake-%d@example.com>", m.seq),
			})
		case "Delete":
			page = append(page, map[string]any{"@odata.type": "#microsoft.graph.message", "id": c.id, "@removed": map[string]string{"reason": "deleted"}})
		default:
			continue // changeType=created: no updates
		}
		n++
		lastSeq = c.seq
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	base := scheme + "://" + r.Host + "/v1.0/users/" + url.PathEscape(g.opts.User) + "/mailFolders/" + url.PathEscape(folderName) + "/messages/delta"
	resp := map[string]any{"@odata.context": scheme + "://" + r.Host + "/v1.0/$metadata#Collection(message)", "value": page}
	more := false
	for _, c := range changes {
		if c.seq > lastSeq && c.kind != "ReadFlagChange" && n == size {
			more = true
		}
	}
	if more {
		resp["@odata.nextLink"] = base + "?$skiptoken=" + url.QueryEscape(syncToken(g.epoch, lastSeq))
	} else {
		resp["@odata.deltaLink"] = base + "?$deltatoken=" + url.QueryEscape(syncToken(g.epoch, g.Mailbox.seq))
	}
	writeJSON(w, http.StatusOK, resp)
}

func (g *Graph) getFolder(w http.ResponseWriter, name string, q url.Values) {
	if !g.checkQuery(w, q, "$select") {
		return
	}
	g.Mailbox.mu.Lock()
	defer g.Mailbox.mu.Unlock()
	f := g.folderLocked(name)
	if f == nil {
		graphError(w, http.StatusNotFound, "ErrorItemNotFound", "The specified object was not found in the store.")
		return
	}
	total, unread := 0, 0
	for _, m := range g.msgs {
		if m.Folder == f.ID {
			total++
			if !m.IsRead {
				unread++
			}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": f.ID, "displayName": f.Name, "parentFolderId": f.Parent,
		"childFolderCount": 0, "unreadItemCount": unread, "totalItemCount": total, "isHidden": false})
}

// childFolders lists the child folders of parent, optionally filtered by
// "displayName eq '<name>'" (the only $filter the fake understands).
func (g *Graph) childFolders(w http.ResponseWriter, parent string, q url.Values) {
	if !g.checkQuery(w, q, "$filter", "$select", "$top") {
		return
	}
	var name string
	filtered := false
	if f := q.Get("$filter"); f != "" {
		v, ok := strings.CutPrefix(f, "displayName eq '")
		if !ok || !strings.HasSuffix(v, "'") {
			g.t.Errorf("graph fake: unsupported $filter %q", f)
			graphError(w, http.StatusBadRequest, "BadRequest", "Invalid filter clause")
			return
		}
		name, filtered = strings.ReplaceAll(strings.TrimSuffix(v, "'"), "''", "'"), true
	}
	g.Mailbox.mu.Lock()
	defer g.Mailbox.mu.Unlock()
	p := g.folderLocked(parent)
	if p == nil {
		graphError(w, http.StatusNotFound, "ErrorItemNotFound", "The specified object was not found in the store.")
		return
	}
	var out []map[string]any
	for _, f := range g.folders {
		if f.Parent == p.ID && (!filtered || strings.EqualFold(f.Name, name)) {
			out = append(out, map[string]any{"id": f.ID, "displayName": f.Name, "parentFolderId": p.ID})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"value": out})
}

func (g *Graph) listMessages(w http.ResponseWriter, name string, q url.Values) {
	if !g.checkQuery(w, q, "$select", "$orderby", "$top", "$skip", "$filter") {
		return
	}
	ob := q.Get("$orderby")
	if ob != "" && ob != "receivedDateTime asc" && ob != "receivedDateTime desc" && ob != "receivedDateTime" {
		graphError(w, http.StatusBadRequest, "BadRequest", "unsupported $orderby")
		return
	}
	g.Mailbox.mu.Lock()
	defer g.Mailbox.mu.Unlock()
	f := g.folderLocked(name)
	if f == nil {
		graphError(w, http.StatusNotFound, "ErrorItemNotFound", "The specified object was not found in the store.")
		return
	}
	var msgs []*Message
	for _, m := range g.msgs {
		if m.Folder == f.ID {
			msgs = append(msgs, m)
		}
	}
	desc := ob == "" || ob == "receivedDateTime desc" // Graph's default is newest first
	sort.Slice(msgs, func(i, j int) bool {
		if desc {
			return msgs[i].Received.After(msgs[j].Received)
		}
		return msgs[i].Received.Before(msgs[j].Received)
	})
	top := 10
	if t := q.Get("$top"); t != "" {
		top, _ = strconv.Atoi(t)
	}
	if len(msgs) > top {
		msgs = msgs[:top]
	}
	var out []map[string]any
	for _, m := range msgs {
		out = append(out, map[string]any{"id": m.ID, "receivedDateTime": m.Received.Format(time.RFC3339), "isRead": m.IsRead})
	}
	writeJSON(w, http.StatusOK, map[string]any{"value": out})
}

func (g *Graph) value(w http.ResponseWriter, r *http.Request, id string) {
	g.mu.Lock()
	wait := g.arrived < g.opts.ParallelValues
	if wait {
		g.arrived++
		if g.arrived == g.opts.ParallelValues {
			close(g.barrier)
		}
	}
	g.mu.Unlock()
	if wait {
		select {
		case <-g.barrier:
		case <-r.Context().Done():
			return
		}
	}
	g.mu.Lock()
	if g.vanish[id] {
		delete(g.vanish, id)
		g.Mailbox.Delete(id)
	}
	g.mu.Unlock()
	m, ok := g.Get(id)
	if !ok {
		graphError(w, http.StatusNotFound, "ErrorItemNotFound", "The specified object was not found in the store.")
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	g.stall.wrap(w, r, "$value").Write(m.Raw)
}

func (g *Graph) readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		g.t.Errorf("graph fake: %s %s Content-Type %q, want application/json", r.Method, r.URL.Path, ct)
		graphError(w, http.StatusUnsupportedMediaType, "UnsupportedMediaType", "Content-Type must be application/json")
		return false
	}
	b, err := io.ReadAll(r.Body)
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		g.t.Errorf("graph fake: %s %s: bad JSON body: %v", r.Method, r.URL.Path, err)
		graphError(w, http.StatusBadRequest, "BadRequest", "Invalid JSON")
		return false
	}
	return true
}

func (g *Graph) patch(w http.ResponseWriter, r *http.Request, id string) {
	var body map[string]any
	if !g.readJSON(w, r, &body) {
		return
	}
	read, ok := body["isRead"].(bool)
	if !ok || len(body) != 1 {
		g.t.Errorf("graph fake: PATCH body %v, want {\"isRead\":true}", body)
	}
	g.Mailbox.mu.Lock()
	defer g.Mailbox.mu.Unlock()
	m, ok := g.msgs[id]
	if !ok {
		graphError(w, http.StatusNotFound, "ErrorItemNotFound", "The specified object was not found in the store.")
		return
	}
	g.markReadLocked(m, read)
	writeJSON(w, http.StatusOK, map[string]any{"id": m.ID, "isRead": m.IsRead})
}

func (g *Graph) move(w http.ResponseWriter, r *http.Request, id string) {
	var body struct {
		DestinationID string `json:"destinationId"`
	}
	if !g.readJSON(w, r, &body) {
		return
	}
	g.Mailbox.mu.Lock()
	defer g.Mailbox.mu.Unlock()
	dest := g.wellKnownLocked(body.DestinationID)
	if dest == nil {
		dest = g.folders[body.DestinationID]
	}
	if dest == nil {
		graphError(w, http.StatusNotFound, "ErrorInvalidIdMalformed", "Id is malformed.")
		return
	}
	m := g.moveLocked(id, dest)
	if m == nil {
		graphError(w, http.StatusNotFound, "ErrorItemNotFound", "The specified object was not found in the store.")
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": m.ID, "parentFolderId": dest.ID})
}

func (g *Graph) delete(w http.ResponseWriter, id string) {
	g.Mailbox.mu.Lock()
	defer g.Mailbox.mu.Unlock()
	// DELETE moves the message to Deleted Items.
	if g.moveLocked(id, g.wellKnownLocked("deleteditems")) == nil {
		graphError(w, http.StatusNotFound, "ErrorItemNotFound", "The specified object was not found in the store.")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
