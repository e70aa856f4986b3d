package oauth

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// What an operator learns of upstream calls and credential fetches, through
// the Observe hooks of ClientConfig and CredentialConfig. The hooks get
// names and outcomes, never a credential's value.

// Errcode names the outcome of an upstream call in a few bounded words:
// "0" for success, WeChat's errcode as a number when it refused the call,
// "timeout" when the deadline passed, "http_5xx" when every host answered a
// server error, "network" when none could be reached, "malformed" for an
// answer that is not what WeChat documents, "canceled" when the caller gave
// up first, and "other" for anything else (a media download's own errors).
func Errcode(err error) string {
	var apiErr *APIError
	var srvErr *serverError
	switch {
	case err == nil:
		return "0"
	case errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.As(err, &apiErr):
		return strconv.Itoa(apiErr.Code)
	case errors.Is(err, ErrUnavailable) && errors.As(err, &srvErr):
		return "http_5xx"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, ErrUnavailable):
		return "network"
	case errors.Is(err, ErrBadResponse):
		return "malformed"
	}
	return "other"
}

// serverError is a host answering a 5xx; the client tries the next one.
type serverError struct {
	host, path string
	status     int
}

func (e *serverError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d", e.host, e.path, e.status)
}

// Fetched describes one upstream fetch of a credential by this process,
// for CredentialConfig.ObserveFetch. It never holds the credential itself.
type Fetched struct {
	Credential string    // CredentialConfig.Name
	At         time.Time // when the fetch ended
	ExpiresAt  time.Time // of the new credential; zero when the fetch failed
	// Err is why the fetch failed, nil when it worked. WeChat's refusal is
	// an *APIError in its chain, with the errcode and errmsg.
	Err error
}
