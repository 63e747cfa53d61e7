package fetcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/spool"
)

// DefaultGraphURL is the Microsoft Graph endpoint used when the server's
// graph_url is empty.
const DefaultGraphURL = "https://graph.microsoft.com/v1.0"

const (
	// graphPageSize is the odata.maxpagesize asked for delta pages.
	graphPageSize = 50
	// graphConcurrency is Exchange Online's limit of concurrent requests
	// per mailbox ("MailboxConcurrency",
	// https://learn.microsoft.com/graph/throttling-limits#outlook-service-limits).
	graphConcurrency = 4
	// graphPrefetch is how many MIME downloads may run ahead of delivery.
	graphPrefetch = 4
)

// GraphError is an error answer of Microsoft Graph
// ({"error":{"code":…,"message":…}}) or an unexpected HTTP status.
type GraphError struct {
	Server    string // config name
	Operation string // e.g. "delta", "get $value", "mark read"
	Status    int    // HTTP status
	Code      string // Graph error code, e.g. ErrorItemNotFound, syncStateNotFound
	Message   string
}

func (e *GraphError) Error() string {
	s := fmt.Sprintf("graph %s %s: HTTP %d", e.Server, e.Operation, e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// syncReset reports whether err says the delta token is no longer valid:
// HTTP 410 Gone, or the codes syncStateNotFound / resyncRequired.
func syncReset(err error) bool {
	var ge *GraphError
	if !errors.As(err, &ge) {
		return false
	}
	return ge.Status == http.StatusGone || strings.EqualFold(ge.Code, "syncStateNotFound") ||
		strings.EqualFold(ge.Code, "resyncRequired") || strings.EqualFold(ge.Code, "SyncStateInvalid")
}

func graphNotFound(err error) bool {
	var ge *GraphError
	return errors.As(err, &ge) && ge.Status == http.StatusNotFound
}

// Graph fetches one mail folder of an Exchange Online mailbox through
// Microsoft Graph with an OAuth bearer token.
//
// New mail is found with a delta query (changeType=created). The
// checkpoint is the URL to continue from: the @odata.nextLink of the next
// page while a round is under way, the @odata.deltaLink once it is
// complete. Both are resumable states, so a checkpoint is stored after
// every page whose messages are all acknowledged, and a crash re-delivers
// at most one page. At most four requests run at once per mailbox, as
// Exchange Online allows; MIME downloads of a page run ahead of delivery
// in parallel but messages are delivered in delta order.
type Graph struct {
	srv    config.Server
	deps   Deps
	h      *exchangeHTTP
	rt     *http.Transport
	base   string
	folder string // resolved source folder id or well-known name, cached
	moveTo string // resolved move destination, cached
}

// NewGraph returns a Graph fetcher for srv. It does no I/O. deps.Logger may
// be nil; zero Timeouts mean the defaults.
func NewGraph(srv config.Server, deps Deps) (*Graph, error) {
	if srv.Mailbox == "" {
		return nil, fmt.Errorf("fetcher %s: graph needs mailbox (UPN or id)", srv.Name)
	}
	if srv.Auth.Method != config.AuthOAuth2 {
		return nil, fmt.Errorf("fetcher %s: graph needs auth method oauth2, not %q", srv.Name, srv.Auth.Method)
	}
	if deps.Credentials == nil {
		return nil, fmt.Errorf("fetcher %s: no credentials", srv.Name)
	}
	base := strings.TrimRight(srv.GraphURL, "/")
	if base == "" {
		base = DefaultGraphURL
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("fetcher %s: invalid graph_url %q", srv.Name, srv.GraphURL)
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	deps.Timeouts = deps.Timeouts.withDefaults()
	// The server's tls section (ca_file, server_name, client certificate,
	// insecure_skip_verify) applies to HTTPS as it does to IMAP.
	tlsConf, err := imapTLSConfig(srv, deps.TLSConfig)
	if err != nil {
		return nil, fmt.Errorf("fetcher %s: %w", srv.Name, err)
	}
	tr := newTransport(tlsConf, stallTimeout(srv, deps))
	return &Graph{
		srv:  srv,
		deps: deps,
		h:    newExchangeHTTP(srv.Name, deps, srv.EmailDebug, tr, graphConcurrency),
		rt:   tr,
		base: base,
	}, nil
}

func (g *Graph) folderName() string {
	if g.srv.Folder == "" {
		return "inbox"
	}
	return g.srv.Folder
}

func (g *Graph) user() string { return g.base + "/users/" + url.PathEscape(g.srv.Mailbox) }

func (g *Graph) messageURL(id string) string { return g.user() + "/messages/" + url.PathEscape(id) }

// deltaStart is the first URL of a delta round in folder (an id or a
// well-known name).
func (g *Graph) deltaStart(folder string) string {
	return g.user() + "/mailFolders/" + url.PathEscape(folder) +
		"/messages/delta?changeType=created&$select=id,internetMessageId,receivedDateTime,isRead"
}

// graphWellKnown are Graph's well-known folder names
// (https://learn.microsoft.com/graph/api/resources/mailfolder#well-known-folder-names).
var graphWellKnown = map[string]bool{
	"archive": true, "clutter": true, "conflicts": true, "conversationhistory": true, "deleteditems": true,
	"drafts": true, "inbox": true, "junkemail": true, "localfailures": true, "msgfolderroot": true,
	"outbox": true, "recoverableitemsdeletions": true, "scheduled": true, "searchfolders": true,
	"sentitems": true, "serverfailures": true, "syncissues": true,
}

// resolveFolder turns a folder name into something Graph takes in a path
// or as destinationId: a well-known name or an id is used as is; a path of
// display names ("Inbox/Processed", "Processed" under the mailbox root) is
// looked up with childFolders and $filter, one request per segment.
func (g *Graph) resolveFolder(ctx context.Context, name string) (string, error) {
	name = strings.Trim(name, "/")
	if name == "" {
		return "inbox", nil
	}
	if graphWellKnown[strings.ToLower(name)] {
		return strings.ToLower(name), nil
	}
	if len(name) > 60 && !strings.ContainsAny(name, "/ ") {
		return name, nil // a folder id
	}
	parent := "msgfolderroot"
	for i, seg := range strings.Split(name, "/") {
		if i == 0 && graphWellKnown[strings.ToLower(seg)] {
			parent = strings.ToLower(seg)
			continue
		}
		filter := "displayName eq '" + strings.ReplaceAll(seg, "'", "''") + "'"
		u := g.user() + "/mailFolders/" + url.PathEscape(parent) + "/childFolders?$filter=" +
			strings.ReplaceAll(url.QueryEscape(filter), "+", "%20") + "&$select=id,displayName"
		var list struct {
			Value []struct {
				ID string `json:"id"`
			} `json:"value"`
		}
		if err := g.getJSON(ctx, "find folder", u, "", &list); err != nil {
			return "", fmt.Errorf("graph %s: resolve folder %q: %w", g.srv.Name, name, err)
		}
		if len(list.Value) == 0 {
			return "", fmt.Errorf("graph %s: folder %q: no %q under %s: %w", g.srv.Name, name, seg, parent, ErrNoFolder)
		}
		parent = list.Value[0].ID
	}
	return parent, nil
}

func (g *Graph) source(ctx context.Context) (string, error) {
	if g.folder == "" {
		f, err := g.resolveFolder(ctx, g.folderName())
		if err != nil {
			return "", err
		}
		g.folder = f
	}
	return g.folder, nil
}

// ours reports whether link points into this fetcher's Graph endpoint, so
// that a stored or returned link never sends the token elsewhere.
func (g *Graph) ours(link string) bool { return strings.HasPrefix(link, g.base+"/") }

// graphReq is one Graph request.
type graphReq struct {
	op     string
	method string
	url    string
	body   []byte // JSON, nil = none
	prefer string
	stream bool
}

// send runs r with throttling waits and one token refresh after a 401,
// and returns the 2xx response; other statuses become *GraphError.
func (g *Graph) send(ctx context.Context, r graphReq) (*http.Response, error) {
	for authTry := 0; ; authTry++ {
		refresh := authTry > 0
		c := call{
			op:      r.op,
			stream:  r.stream,
			logBody: string(r.body),
			build: func(ctx context.Context) (*http.Request, error) {
				var body io.Reader
				if r.body != nil {
					body = bytes.NewReader(r.body)
				}
				req, err := http.NewRequestWithContext(ctx, r.method, r.url, body)
				if err != nil {
					return nil, err
				}
				if r.body != nil {
					req.Header.Set("Content-Type", "application/json")
				}
				if !r.stream {
					req.Header.Set("Accept", "application/json")
				}
				if r.prefer != "" {
					req.Header.Set("Prefer", r.prefer)
				}
				tok, err := g.deps.Credentials.AccessToken(ctx, refresh)
				if err != nil {
					return nil, fmt.Errorf("access token: %w", err)
				}
				req.Header.Set("Authorization", "Bearer "+tok)
				return req, nil
			},
		}
		if r.stream {
			c.timeout = g.deps.Timeouts.Literal
		}
		resp, err := g.h.do(ctx, c, g.check(r.op))
		if errors.Is(err, errUnauthorized) {
			if authTry == 0 {
				continue
			}
			return nil, fmt.Errorf("graph %s %s: token refused after refresh: %w", g.srv.Name, r.op, ErrAuth)
		}
		return resp, err
	}
}

func (g *Graph) check(op string) func(*http.Response) error {
	return func(resp *http.Response) error {
		switch s := resp.StatusCode; {
		case s >= 200 && s < 300:
			return nil
		case s == http.StatusUnauthorized:
			return errUnauthorized
		case s == http.StatusTooManyRequests || s == http.StatusServiceUnavailable || s == http.StatusGatewayTimeout:
			return &throttleError{wait: retryAfter(resp.Header), why: "HTTP " + resp.Status}
		}
		ge := &GraphError{Server: g.srv.Name, Operation: op, Status: resp.StatusCode}
		var body struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body) == nil {
			ge.Code, ge.Message = body.Error.Code, body.Error.Message
		}
		if resp.StatusCode == http.StatusForbidden {
			return fmt.Errorf("%w (check Mail.ReadWrite consent and the application access policy): %w", ge, ErrAuth)
		}
		return ge
	}
}

// getJSON sends a GET and decodes the JSON answer into v.
func (g *Graph) getJSON(ctx context.Context, op, u, prefer string, v any) error {
	resp, err := g.send(ctx, graphReq{op: op, method: http.MethodGet, url: u, prefer: prefer})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("graph %s %s: parse response: %w", g.srv.Name, op, err)
	}
	return nil
}

type graphPage struct {
	Value     []graphItem `json:"value"`
	NextLink  string      `json:"@odata.nextLink"`
	DeltaLink string      `json:"@odata.deltaLink"`
}

type graphItem struct {
	ID                string           `json:"id"`
	InternetMessageID string           `json:"internetMessageId"`
	Received          string           `json:"receivedDateTime"`
	IsRead            bool             `json:"isRead"`
	Removed           *json.RawMessage `json:"@removed"`
}

// Fetch implements Fetcher.
func (g *Graph) Fetch(ctx context.Context, sink Sink) (Stats, error) {
	var st Stats
	if g.deps.Checkpoints == nil {
		return st, fmt.Errorf("graph %s: fetch: no checkpoint store", g.srv.Name)
	}
	key := g.folderName()
	folder, err := g.source(ctx)
	if err != nil {
		return st, err
	}
	cp, err := g.deps.Checkpoints.Get(ctx, g.srv.Name, key)
	if err != nil {
		return st, err
	}
	link := cp.SyncState
	if link != "" && !g.ours(link) {
		g.deps.Logger.Warn("graph checkpoint points at another endpoint, starting a new delta round",
			"account", g.srv.Name, "mailbox", key)
		link = ""
	}
	if link == "" {
		link = g.deltaStart(folder)
	}
	max := g.srv.MaxPerFetch
	if max <= 0 {
		max = defaultMaxPerFetch
	}
	pageSize := min(graphPageSize, max)
	prefer := fmt.Sprintf("odata.maxpagesize=%d", pageSize)
	processed := 0
	restarted := false
	for {
		// Stop at a page boundary: a page is checkpointed only as a whole.
		if processed > 0 && processed+pageSize > max {
			st.More = true
			return st, nil
		}
		var page graphPage
		err := g.getJSON(ctx, "delta", link, prefer, &page)
		if syncReset(err) && !restarted {
			// The token expired: start a new round. Messages come again;
			// the Sink's ledger drops those already published.
			g.deps.Logger.Warn("graph delta token expired, syncing folder from scratch", "account", g.srv.Name, "mailbox", key, "err", err)
			link, restarted = g.deltaStart(folder), true
			continue
		}
		if err != nil {
			return st, err
		}
		next := page.NextLink
		if next == "" {
			next = page.DeltaLink
		}
		if next == "" || !g.ours(next) {
			return st, fmt.Errorf("graph %s delta: page has no usable @odata.nextLink or @odata.deltaLink", g.srv.Name)
		}
		items := page.Value[:0]
		for _, it := range page.Value {
			if it.Removed == nil && it.ID != "" {
				items = append(items, it)
			}
		}
		st.Seen += len(items)
		processed += len(items)
		if err := g.deliverPage(ctx, sink, key, items, &st); err != nil {
			return st, err
		}
		if err := g.deps.Checkpoints.Put(ctx, g.srv.Name, key, Checkpoint{SyncState: next}); err != nil {
			return st, err
		}
		if page.DeltaLink != "" {
			return st, nil
		}
		link = next
	}
}

type graphDownload struct {
	sp  *spool.Spool
	err error
}

// deliverPage downloads the MIME of items, up to graphPrefetch ahead, and
// delivers them in order, each acknowledged before its after_fetch.
func (g *Graph) deliverPage(ctx context.Context, sink Sink, folder string, items []graphItem, st *Stats) error {
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]chan graphDownload, len(items))
	for i := range results {
		results[i] = make(chan graphDownload, 1)
	}
	window := make(chan struct{}, graphPrefetch)
	go func() {
		for i, it := range items {
			select {
			case window <- struct{}{}:
			case <-dctx.Done():
				for j := i; j < len(items); j++ {
					results[j] <- graphDownload{err: context.Cause(dctx)}
				}
				return
			}
			go func() {
				sp, err := g.download(dctx, it.ID)
				results[i] <- graphDownload{sp: sp, err: err}
			}()
		}
	}()
	// Every results[i] receives exactly one value; on the way out the rest
	// are drained so no download outlives this call and no spool leaks.
	next := 0
	defer func() {
		cancel()
		for ; next < len(items); next++ {
			if r := <-results[next]; r.sp != nil {
				r.sp.Close()
			}
		}
	}()
	for ; next < len(items); next++ {
		r := <-results[next]
		<-window
		if err := g.deliverOne(ctx, sink, folder, items[next], r, st); err != nil {
			next++
			return err
		}
	}
	return nil
}

func (g *Graph) deliverOne(ctx context.Context, sink Sink, folder string, it graphItem, r graphDownload, st *Stats) error {
	log := g.deps.Logger.With("account", g.srv.Name, "mailbox", folder, "uid", "graph:"+shortID(it.ID))
	if r.sp != nil {
		defer r.sp.Close()
	}
	if graphNotFound(r.err) {
		log.Info("graph message deleted before it could be fetched, skipped")
		return nil
	}
	if r.err != nil {
		return r.err
	}
	received, _ := time.Parse(time.RFC3339, it.Received) // zero when absent
	msg := &Message{Server: g.srv.Name, Folder: folder, Ref: "graph:" + it.ID, Received: received, Body: r.sp}
	ack, err := sink.Deliver(ctx, msg)
	if err != nil {
		return fmt.Errorf("graph %s: deliver message %s: %w", g.srv.Name, shortID(it.ID), err)
	}
	if err := ack.Wait(ctx); err != nil {
		return fmt.Errorf("graph %s: ack message %s: %w", g.srv.Name, shortID(it.ID), err)
	}
	st.Delivered++
	st.Bytes += r.sp.Size()
	if g.srv.EmailDebug {
		log.Debug("graph message delivered", "bytes", r.sp.Size(), "after_fetch", g.srv.AfterFetch.String())
	}
	return g.afterFetch(ctx, it.ID, log)
}

// download streams the MIME content of message id into a new spool.
func (g *Graph) download(ctx context.Context, id string) (*spool.Spool, error) {
	resp, err := g.send(ctx, graphReq{op: "get $value", method: http.MethodGet, url: g.messageURL(id) + "/$value", stream: true})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	sp, err := spool.ReadFrom(resp.Body, g.deps.SpoolDir, 0)
	if err != nil {
		return nil, fmt.Errorf("graph %s get $value %s: %w", g.srv.Name, shortID(id), err)
	}
	return sp, nil
}

// afterFetch applies after_fetch to an acknowledged message; a message
// that is gone already counts as done.
func (g *Graph) afterFetch(ctx context.Context, id string, log *slog.Logger) error {
	var r graphReq
	switch g.srv.AfterFetch.Action {
	case config.ActionNone:
		return nil
	case config.ActionDelete:
		r = graphReq{op: "delete", method: http.MethodDelete, url: g.messageURL(id)}
	case config.ActionMove:
		if g.moveTo == "" {
			f, err := g.resolveFolder(ctx, g.srv.AfterFetch.Folder)
			if err != nil {
				return err
			}
			g.moveTo = f
		}
		b, err := json.Marshal(map[string]string{"destinationId": g.moveTo})
		if err != nil {
			return err
		}
		r = graphReq{op: "move", method: http.MethodPost, url: g.messageURL(id) + "/move", body: b}
	default:
		r = graphReq{op: "mark read", method: http.MethodPatch, url: g.messageURL(id), body: []byte(`{"isRead":true}`)}
	}
	resp, err := g.send(ctx, r)
	if graphNotFound(err) && r.op != "move" {
		log.Info("graph message gone before after_fetch, nothing to do", "op", r.op)
		return nil
	}
	if err != nil {
		return fmt.Errorf("graph %s: after_fetch %s: %w", g.srv.Name, g.srv.AfterFetch, err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	if cerr := resp.Body.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("graph %s: after_fetch %s: read response: %w", g.srv.Name, g.srv.AfterFetch, err)
	}
	return nil
}

// Test implements Fetcher: folder counts and the oldest message, read
// without changing it.
func (g *Graph) Test(ctx context.Context) (*TestReport, error) {
	rep := &TestReport{
		Server:       g.srv.Name,
		Protocol:     string(config.ProtocolGraph),
		Endpoint:     g.base,
		AuthMethod:   "Bearer",
		Folder:       g.folderName(),
		Unseen:       -1,
		Pending:      -1,
		Capabilities: []string{"Graph " + g.base, "Mailbox " + g.srv.Mailbox},
	}
	folder, err := g.source(ctx)
	if err != nil {
		return nil, err
	}
	var f struct {
		DisplayName string `json:"displayName"`
		Total       int    `json:"totalItemCount"`
		Unread      int    `json:"unreadItemCount"`
	}
	if err := g.getJSON(ctx, "get folder", g.user()+"/mailFolders/"+url.PathEscape(folder), "", &f); err != nil {
		return nil, err
	}
	rep.Messages, rep.Unseen = f.Total, f.Unread
	if f.DisplayName != "" {
		rep.Capabilities = append(rep.Capabilities, "Folder "+f.DisplayName)
	}
	if g.deps.Checkpoints != nil {
		cp, err := g.deps.Checkpoints.Get(ctx, g.srv.Name, g.folderName())
		if err != nil {
			return nil, err
		}
		if cp.SyncState == "" {
			rep.Pending = rep.Messages
		}
	}
	var list struct {
		Value []graphItem `json:"value"`
	}
	u := g.user() + "/mailFolders/" + url.PathEscape(folder) +
		"/messages?$orderby=receivedDateTime%20asc&$top=1&$select=id,receivedDateTime"
	if err := g.getJSON(ctx, "list oldest", u, "", &list); err != nil {
		return nil, err
	}
	if len(list.Value) == 0 {
		return rep, nil
	}
	id := list.Value[0].ID
	sp, err := g.download(ctx, id)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(sp.Open())
	sp.Close()
	if err != nil {
		return nil, fmt.Errorf("graph %s: read sample: %w", g.srv.Name, err)
	}
	rep.Sample = bytes.NewReader(b)
	rep.SampleRef = "graph:" + id
	return rep, nil
}

// Close implements Fetcher.
func (g *Graph) Close() error {
	g.rt.CloseIdleConnections()
	return nil
}
