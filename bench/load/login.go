package main

import "github.com/100steps/wxappliance/appliance/sandbox"

// login logs a browser in as the sandbox user openid through the appliance
// at base, wherever its fake WeChat is, and returns the session id.
func login(base, openid string) (string, error) { return sandbox.Login(base, openid) }
