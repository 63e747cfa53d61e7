// Package oauth gives mailbox fetchers OAuth 2.0 access tokens (RFC 6749)
// for IMAP SASL XOAUTH2/OAUTHBEARER, EWS and Microsoft Graph.
//
// A Manager resolves a server's provider settings (Google, Microsoft,
// custom), runs the flows that obtain a grant (authorization code, PKCE per
// RFC 7636, client credentials, or a token pasted by hand), stores the
// resulting tokens sealed with AES-256-GCM (see secret.Box) in the
// oauth_tokens table, and refreshes them ahead of expiry. Every stored token
// is bound to a fingerprint of the settings that produced it; when the
// provider, tenant, client id, token URL, scopes or mailbox change, the token
// is deleted and the server needs authorization again.
//
// Failure handling is part of the contract: a dead grant (invalid_grant and
// friends) marks the server needs_reauth once, logs one error line and then
// fails fast with ErrNeedsReauth until someone authorizes again; network
// errors and 5xx answers are ErrTemporary, with backoff between attempts.
//
// Secrets (client secrets, access and refresh tokens, authorization codes,
// PKCE verifiers) never appear in logs or error messages: token endpoint
// errors are reduced to their RFC 6749 error code and a sanitized
// description (see TokenError).
//
// What is left to others: the admin HTTP listener (and its bearer token)
// mounts Handler; fetchers consume Credentials; the CLI verbs live in
// cmd/mailworker/oauth.go.
package oauth
