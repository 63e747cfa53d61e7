//go:build !unix

package worker

import "os"

// Without flock the data directory is not locked (mailworker is built and
// tested for Unix).
func tryLock(*os.File) (bool, error) { return true, nil }

func unlock(*os.File) {}
