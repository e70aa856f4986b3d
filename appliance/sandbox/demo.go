package sandbox

import (
	_ "embed"
	"net/http"
)

// demoPage is the frontend integration example: it logs in through the
// appliance's /auth like an existing frontend would and shows the user.
//
//go:embed demo/index.html
var demoPage []byte

func (s *Sandbox) serveDemo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(demoPage)
}
