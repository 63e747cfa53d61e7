package main

import (
	"errors"
	"flag"
	"io/fs"
	"os"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/publisher"
	"github.com/mailworker/mailworker/worker"
)

// defaultConfigPath is read when neither --config nor $MAILWORKER_CONFIG is given.
const defaultConfigPath = "mailworker.yaml"

// configFlag defines --config on fs; pass its value to resolveConfigPath or
// loadConfig.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", "", "configuration `FILE` (default $MAILWORKER_CONFIG, then ./"+defaultConfigPath+")")
}

// resolveConfigPath returns the configuration file to read: flagValue when
// set, else $MAILWORKER_CONFIG, else ./mailworker.yaml.
func resolveConfigPath(env *cliEnv, flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if p := env.getenv("MAILWORKER_CONFIG"); p != "" {
		return p
	}
	return defaultConfigPath
}

// loadConfig loads and validates the configuration file chosen by
// resolveConfigPath, with overrides from env's environment. A validation
// failure is a config.Errors listing every problem, one per line.
func loadConfig(env *cliEnv, flagValue string) (*config.Config, error) {
	return config.LoadWith(resolveConfigPath(env, flagValue), config.LoadOptions{Getenv: env.getenv})
}

// loadConfigOrDefaults is loadConfig for verbs that are useful without a
// configuration file (parse, events, failed, replay): when no file is named
// (no --config, no $MAILWORKER_CONFIG) and ./mailworker.yaml does not exist,
// it returns the defaults (SQLite and the embedded NATS in ./data) with the
// environment's MAILWORKER_* overrides applied.
func loadConfigOrDefaults(env *cliEnv, flagValue string) (*config.Config, error) {
	if flagValue == "" && env.getenv("MAILWORKER_CONFIG") == "" {
		if _, err := os.Stat(defaultConfigPath); errors.Is(err, fs.ErrNotExist) {
			c, err := config.Parse("(defaults, no "+defaultConfigPath+")", []byte("{}"), env.getenv)
			if err != nil {
				return nil, err
			}
			if err := c.Validate(); err != nil {
				return nil, err
			}
			c.SetDefaults()
			return c, nil
		}
	}
	return loadConfig(env, flagValue)
}

// useRunningWorker points cfg at the embedded NATS server of a worker
// running on the same data_dir, when cfg has no nats.url and such a worker
// has written its URL (with the token when it requires one; the file is
// mode 0600): that worker owns the store, so a second embedded server must
// not open it. A URL file left by a worker that is gone (killed: nobody
// holds the data_dir lock) is ignored.
func useRunningWorker(cfg *config.Config) (*config.Config, error) {
	if cfg.NATS.URL != "" {
		return cfg, nil
	}
	u, err := publisher.ReadURLFile(cfg.DataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return nil, err
	}
	if !worker.DataDirLocked(cfg.DataDir) {
		return cfg, nil // stale
	}
	c := *cfg
	c.NATS.URL = u
	return &c, nil
}
