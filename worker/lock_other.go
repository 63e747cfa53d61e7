//go:build !(linux || darwin || freebsd || openbsd || netbsd || dragonfly)

package worker

import "os"

// Elsewhere (Windows, Solaris…) the data directory is not locked: a second
// run on it is not refused. mailworker is built and tested on Linux.
func tryLock(*os.File) (bool, error) { return true, nil }

func unlock(*os.File) {}
