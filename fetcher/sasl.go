package fetcher

import (
	"errors"
	"fmt"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-sasl"
)

// SASL mechanism names as advertised in AUTH= capabilities.
const (
	mechPlain       = "PLAIN"
	mechLogin       = "LOGIN" // the IMAP LOGIN command, not SASL LOGIN
	mechXOAuth2     = "XOAUTH2"
	mechOAuthBearer = sasl.OAuthBearer
)

// xoauth2Client is the SASL XOAUTH2 client (Google and Microsoft, non
// standard; go-sasl deliberately has none). The initial response is
// "user=<user>^Aauth=Bearer <token>^A^A".
//
// On failure the server sends a continuation carrying a JSON status. The
// proper answer is an empty response, but imapclient encodes an empty
// response as "=", which Dovecot rejects (go-imap issue #760), so Next
// returns the JSON as an error instead and the caller closes the
// connection: the exchange is then left unfinished on purpose.
type xoauth2Client struct{ user, token string }

func (c *xoauth2Client) Start() (string, []byte, error) {
	return mechXOAuth2, []byte("user=" + c.user + "\x01auth=Bearer " + c.token + "\x01\x01"), nil
}

func (c *xoauth2Client) Next(challenge []byte) ([]byte, error) {
	return nil, &saslRejected{mech: mechXOAuth2, detail: string(challenge)}
}

// saslRejected is a server's in-band SASL failure (a challenge after the
// final client message). detail is the server's JSON status, which holds
// no secret.
type saslRejected struct{ mech, detail string }

func (e *saslRejected) Error() string {
	return fmt.Sprintf("%s rejected by server: %s", e.mech, e.detail)
}

// isAuthFailure reports whether err is the server refusing the credentials,
// as opposed to a network or protocol failure worth a plain retry.
func isAuthFailure(err error) bool {
	var rej *saslRejected
	var ob *sasl.OAuthBearerError
	if errors.As(err, &rej) || errors.As(err, &ob) {
		return true
	}
	var ie *imap.Error
	if errors.As(err, &ie) && ie.Type == imap.StatusResponseTypeNo {
		switch ie.Code {
		case imap.ResponseCodeUnavailable, imap.ResponseCodeServerBug, imap.ResponseCodeLimit:
			return false // server-side trouble: retry later
		}
		return true
	}
	return false
}
