package oauthtest

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// code runs /authorize and returns the code from the redirect.
func code(t *testing.T, s *Server, conf *oauth2.Config, opts ...oauth2.AuthCodeOption) string {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(conf.AuthCodeURL("st4te", opts...))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	u, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || u.Query().Get("state") != "st4te" || u.Query().Get("code") == "" {
		t.Fatalf("authorize redirect %q", resp.Header.Get("Location"))
	}
	return u.Query().Get("code")
}

func introspect(t *testing.T, s *Server, tok string) map[string]any {
	t.Helper()
	resp, err := http.PostForm(s.IntrospectURL(), url.Values{"token": {tok}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func isGrantErr(err error, code string) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.ErrorCode == code
}

func TestServer(t *testing.T) {
	clock := NewClock()
	s := Start(t, Options{Clock: clock.Now, AccessTokenLifetime: time.Minute})
	ctx := context.Background()
	conf := &oauth2.Config{ClientID: s.ClientID, ClientSecret: s.ClientSecret, RedirectURL: "http://127.0.0.1:1/cb",
		Endpoint: oauth2.Endpoint{AuthURL: s.AuthURL(), TokenURL: s.TokenURL(), AuthStyle: oauth2.AuthStyleInHeader}}

	t.Run("pkce", func(t *testing.T) {
		v := oauth2.GenerateVerifier()
		c := code(t, s, conf, oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("login_hint", "p@x"))
		if _, err := conf.Exchange(ctx, c, oauth2.VerifierOption(oauth2.GenerateVerifier())); !isGrantErr(err, "invalid_grant") {
			t.Fatalf("wrong verifier: %v", err)
		}
		c = code(t, s, conf, oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("login_hint", "p@x"))
		tok, err := conf.Exchange(ctx, c, oauth2.VerifierOption(v))
		if err != nil || tok.RefreshToken == "" {
			t.Fatalf("Exchange = %+v, %v", tok, err)
		}
		if _, err := conf.Exchange(ctx, c, oauth2.VerifierOption(v)); !isGrantErr(err, "invalid_grant") {
			t.Fatalf("code reuse: %v", err)
		}
		if got := introspect(t, s, tok.AccessToken); got["active"] != true || got["username"] != "p@x" {
			t.Fatalf("introspect = %v", got)
		}
		clock.Advance(time.Minute)
		if got := introspect(t, s, tok.AccessToken); got["active"] != false {
			t.Fatalf("expired token introspects %v", got)
		}
	})

	t.Run("rotation and revocation", func(t *testing.T) {
		tok, err := conf.Exchange(ctx, code(t, s, conf))
		if err != nil {
			t.Fatal(err)
		}
		old := tok.RefreshToken
		next, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: old}).Token()
		if err != nil || next.RefreshToken == old || next.RefreshToken == "" {
			t.Fatalf("refresh = %+v, %v; want a rotated refresh token", next, err)
		}
		_, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: old}).Token()
		if !isGrantErr(err, "invalid_grant") {
			t.Fatalf("old refresh token: %v", err)
		}
		resp, err := http.PostForm(s.RevokeURL(), url.Values{"token": {next.RefreshToken}, "client_id": {s.ClientID}, "client_secret": {s.ClientSecret}})
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("revoke: %v %v", resp, err)
		}
		resp.Body.Close()
		if s.RefreshTokenValid(next.RefreshToken) {
			t.Fatal("revoked refresh token still valid")
		}
		if _, ok := s.Active(next.AccessToken); ok {
			t.Fatal("access token of a revoked grant still active")
		}
	})

	t.Run("client credentials", func(t *testing.T) {
		cc := clientcredentials.Config{ClientID: s.ClientID, ClientSecret: "wrong", TokenURL: s.TokenURL()}
		if _, err := cc.Token(ctx); !isGrantErr(err, "invalid_client") {
			t.Fatalf("wrong secret: %v", err)
		}
		cc.ClientSecret = s.ClientSecret
		tok, err := cc.Token(ctx)
		if err != nil || tok.RefreshToken != "" {
			t.Fatalf("client credentials = %+v, %v", tok, err)
		}
	})

	t.Run("fail next", func(t *testing.T) {
		s.FailNext(1, http.StatusServiceUnavailable)
		// AuthStyleInHeader: auto-detection would retry the failed request.
		cc := clientcredentials.Config{ClientID: s.ClientID, ClientSecret: s.ClientSecret, TokenURL: s.TokenURL(), AuthStyle: oauth2.AuthStyleInHeader}
		if _, err := cc.Token(ctx); err == nil {
			t.Fatal("FailNext had no effect")
		}
		if _, err := cc.Token(ctx); err != nil {
			t.Fatalf("after the failure: %v", err)
		}
	})

	for _, sec := range s.Issued() {
		if !strings.Contains(sec, "_") {
			t.Fatalf("issued secret %q without prefix", sec)
		}
	}
	if c := s.Counts(); c.Authorize != 3 || c.Introspect != 2 || c.Revoke != 1 {
		t.Fatalf("counts = %+v", c)
	}
}
