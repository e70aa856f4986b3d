package oauth_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"wxappliance/oauth"
)

func TestMarginClampedToLifetime(t *testing.T) {
	tests := []struct {
		name      string
		expiresIn time.Duration
		margin    time.Duration
	}{
		{"normal", 7200 * time.Second, 5 * time.Minute},
		{"lifetime shorter than margin", 60 * time.Second, 5 * time.Minute},
		{"one second", time.Second, 5 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Now()
			cred := oauth.NewCredential(oauth.CredentialConfig{
				Name: "t", Key: "cred/t", Store: openStore(t, t.TempDir()), Margin: tt.margin,
				Now: func() time.Time { return now },
				Fetch: func(context.Context) (string, time.Duration, error) {
					return "v", tt.expiresIn, nil
				},
			})
			tok, err := cred.Get(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !tok.RefreshAt.After(now) {
				t.Fatalf("refresh at %v is not after now %v: the margin ate the lifetime", tok.RefreshAt, now)
			}
			if !tok.RefreshAt.Before(tok.ExpiresAt) {
				t.Fatalf("refresh at %v is not before expiry %v", tok.RefreshAt, tok.ExpiresAt)
			}
			if want := now.Add(tt.expiresIn); !tok.ExpiresAt.Equal(want) {
				t.Fatalf("expires at %v, want %v", tok.ExpiresAt, want)
			}
		})
	}
}

func TestCredentialRejectsEmptyAnswer(t *testing.T) {
	for name, fetch := range map[string]oauth.FetchFunc{
		"empty value":      func(context.Context) (string, time.Duration, error) { return "", time.Hour, nil },
		"zero expires_in":  func(context.Context) (string, time.Duration, error) { return "v", 0, nil },
		"negative expires": func(context.Context) (string, time.Duration, error) { return "v", -time.Second, nil },
	} {
		t.Run(name, func(t *testing.T) {
			cred := oauth.NewCredential(oauth.CredentialConfig{Name: "t", Key: "cred/t", Store: openStore(t, t.TempDir()), Fetch: fetch})
			if _, err := cred.Get(context.Background()); !errors.Is(err, oauth.ErrBadResponse) {
				t.Fatalf("err = %v, want ErrBadResponse", err)
			}
		})
	}
}

func TestBackgroundRefresh(t *testing.T) {
	var n atomic.Int32
	cred := oauth.NewCredential(oauth.CredentialConfig{
		Name: "t", Key: "cred/t", Store: openStore(t, t.TempDir()),
		Fetch: func(context.Context) (string, time.Duration, error) {
			return "v" + string(rune('0'+n.Add(1))), 2 * time.Second, nil
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { cred.Run(ctx); close(done) }()

	// The loop fetches at once, then again before the 2s lifetime ends.
	deadline := time.Now().Add(5 * time.Second)
	for n.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if n.Load() < 2 {
		t.Fatalf("background loop fetched %d times in 5s for a 2s credential, want >= 2", n.Load())
	}
	tok, ok := cred.Peek()
	if !ok || tok.Value == "v1" {
		t.Fatalf("peek = %q, %v; want the refreshed value", tok.Value, ok)
	}
}

func TestCallerGivingUpDoesNotFailOthers(t *testing.T) {
	release := make(chan struct{})
	cred := oauth.NewCredential(oauth.CredentialConfig{
		Name: "t", Key: "cred/t", Store: openStore(t, t.TempDir()),
		Fetch: func(context.Context) (string, time.Duration, error) {
			<-release
			return "v", time.Hour, nil
		},
	})
	impatient, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	result := make(chan error, 1)
	go func() {
		_, err := cred.Get(context.Background())
		result <- err
	}()
	if _, err := cred.Get(impatient); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("impatient caller: %v", err)
	}
	close(release)
	if err := <-result; err != nil {
		t.Fatalf("patient caller failed because another gave up: %v", err)
	}
}
