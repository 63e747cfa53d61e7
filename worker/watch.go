package worker

import (
	"context"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchDebounce lets an editor finish writing (or renaming) a file before
// it is read.
const watchDebounce = 300 * time.Millisecond

// WatchFile calls onChange after path is written, created or replaced,
// until ctx is done. It watches the file's directory, so editors that save
// by writing a new file and renaming it over the old one are seen too.
func WatchFile(ctx context.Context, path string, logger *slog.Logger, onChange func()) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	if err := fw.Add(filepath.Dir(abs)); err != nil {
		fw.Close()
		return err
	}
	go func() {
		defer fw.Close()
		var timer *time.Timer
		var fire <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-fw.Events:
				if !ok {
					return
				}
				if filepath.Clean(ev.Name) != abs || !ev.Has(fsnotify.Write|fsnotify.Create|fsnotify.Rename) {
					continue
				}
				if timer == nil {
					timer = time.NewTimer(watchDebounce)
				} else {
					timer.Reset(watchDebounce)
				}
				fire = timer.C
			case <-fire:
				fire = nil
				onChange()
			case err, ok := <-fw.Errors:
				if !ok {
					return
				}
				logger.Warn("watch config file", "err", err)
			}
		}
	}()
	return nil
}
