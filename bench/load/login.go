package main

import "github.com/100steps/wxappliance/appliance/sandbox"

// login logs a browser in as a sandbox user and returns the session id.
func login(base string) (string, error) { return sandbox.Login(base, sandbox.OpenIDZhangsan) }

// sandboxCounts are the appliance's sandbox's calls per endpoint.
func sandboxCounts(base string) (map[string]int, error) { return sandbox.Counts(base + "/sandbox") }
