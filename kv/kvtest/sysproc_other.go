//go:build !linux

package kvtest

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
