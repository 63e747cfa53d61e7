package worker

import (
	"context"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/oauth"
	"github.com/mailworker/mailworker/pipeline"
	"github.com/mailworker/mailworker/secret"
	"github.com/mailworker/mailworker/storage"
)

// ServerStatus is what `mailworker status` shows for one server.
type ServerStatus struct {
	Server   string                `json:"server"`
	Protocol string                `json:"protocol"`
	Endpoint string                `json:"endpoint"`
	Interval string                `json:"fetch_interval"`
	Run      *pipeline.ServerState `json:"run"`   // nil before the first run
	Token    *TokenStatus          `json:"token"` // nil unless auth is oauth2
}

// TokenStatus is an OAuth token's state, never the token.
type TokenStatus struct {
	Provider    string     `json:"provider"`
	Flow        string     `json:"flow"`
	State       string     `json:"state"`             // valid | expired | needs_reauth | settings_changed | missing | on_demand
	Changed     []string   `json:"changed,omitempty"` // settings_changed: names of the changed settings
	Expiry      *time.Time `json:"expiry,omitempty"`
	LastRefresh *time.Time `json:"last_refresh,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
}

// Status reports every configured server's run state and token state.
func (w *Worker) Status(ctx context.Context) ([]ServerStatus, error) {
	return status(ctx, w.Config(), w.pipe, w.tokens)
}

// ReadStatus reports the same as Worker.Status from the database alone, for
// `mailworker status` run beside a running worker. Like Worker.Status it
// only reads: a token whose settings changed is reported, never deleted.
func ReadStatus(ctx context.Context, cfg *config.Config, getenv func(string) string) ([]ServerStatus, error) {
	db, err := storage.Open(ctx, cfg.Database, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	return readStatus(ctx, cfg, db, getenv)
}

func readStatus(ctx context.Context, cfg *config.Config, db *sqlx.DB, getenv func(string) string) ([]ServerStatus, error) {
	var tokens *oauth.Manager
	for _, s := range cfg.Servers {
		if s.Auth.Method == config.AuthOAuth2 {
			box, err := secret.LoadKey(cfg.DataDir, cfg.Secrets.KeyFile, getenv, nil)
			if err != nil {
				return nil, err
			}
			tokens = oauth.New(db, box, nil, nil)
			if getenv != nil {
				tokens.SetGetenv(getenv)
			}
			tokens.SetServers(cfg.Servers)
			break
		}
	}
	return status(ctx, cfg, pipeline.New(pipeline.Deps{DB: db}), tokens)
}

func status(ctx context.Context, cfg *config.Config, pipe *pipeline.Pipeline, tokens *oauth.Manager) ([]ServerStatus, error) {
	runs, err := pipe.Status(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]*pipeline.ServerState{}
	for i := range runs {
		byName[runs[i].Server] = &runs[i]
	}
	tok := map[string]*TokenStatus{}
	if tokens != nil {
		sts, err := tokens.Status(ctx, cfg.Servers)
		if err != nil {
			return nil, err
		}
		for _, s := range sts {
			ts := &TokenStatus{Provider: s.Provider, Flow: s.Flow, State: s.State, Changed: s.Changed, LastError: s.LastError}
			if !s.Expiry.IsZero() {
				e := s.Expiry
				ts.Expiry = &e
			}
			if !s.LastRefresh.IsZero() {
				r := s.LastRefresh
				ts.LastRefresh = &r
			}
			tok[s.Server] = ts
		}
	}
	out := make([]ServerStatus, 0, len(cfg.Servers))
	for _, s := range cfg.Servers {
		out = append(out, ServerStatus{
			Server:   s.Name,
			Protocol: string(s.Protocol),
			Endpoint: s.Endpoint(),
			Interval: s.FetchInterval.String(),
			Run:      byName[s.Name],
			Token:    tok[s.Name],
		})
	}
	return out, nil
}
