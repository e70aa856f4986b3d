package appliance

import (
	"net/http"
	"net/netip"
	"testing"
	"time"
)

func TestLimiterTokenBucket(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLimiter(60, 3, func() time.Time { return now })
	a, b := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2")
	for i := range 3 {
		if ok, _ := l.allow(a); !ok {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	ok, wait := l.allow(a)
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("over the burst: %v, retry after %v, want refused for at most 1s", ok, wait)
	}
	if ok, _ := l.allow(b); !ok {
		t.Fatal("another client was refused")
	}
	now = now.Add(time.Second) // one token a second
	if ok, _ := l.allow(a); !ok {
		t.Fatal("refused after refilling one token")
	}
	if ok, _ := l.allow(a); ok {
		t.Fatal("two requests on one token")
	}
	now = now.Add(time.Hour) // a full bucket, never more
	for range 3 {
		l.allow(a)
	}
	if ok, _ := l.allow(a); ok {
		t.Fatal("the bucket grew past its burst")
	}
}

// Addresses within one IPv6 /64 share a bucket: rotating them gains
// nothing.
func TestLimiterIPv6Networks(t *testing.T) {
	l := newLimiter(60, 1, func() time.Time { return time.Unix(0, 0) })
	if ok, _ := l.allow(netip.MustParseAddr("2001:db8:1:2::1")); !ok {
		t.Fatal("first refused")
	}
	if ok, _ := l.allow(netip.MustParseAddr("2001:db8:1:2:ffff::9")); ok {
		t.Fatal("same /64, second address got a fresh bucket")
	}
	if ok, _ := l.allow(netip.MustParseAddr("2001:db8:1:3::1")); !ok {
		t.Fatal("another /64 refused")
	}
}

func TestLimiterForgetsRefilledClients(t *testing.T) {
	now := time.Unix(0, 0)
	l := newLimiter(60, 1, func() time.Time { return now })
	for i := range maxClients {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.allow(ip)
	}
	fresh := netip.MustParseAddr("198.51.100.7")
	if ok, _ := l.allow(fresh); ok {
		t.Fatal("a new client got a bucket beyond maxClients while none had refilled")
	}
	now = now.Add(time.Second)
	if ok, _ := l.allow(fresh); !ok {
		t.Fatal("refilled clients were not forgotten to make room")
	}
	if len(l.buckets) > maxClients {
		t.Fatalf("%d buckets", len(l.buckets))
	}
}

func TestClientIP(t *testing.T) {
	proxies, err := parseProxies([]string{"127.0.0.1", "::1", "10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	a := &Appliance{trustedProxies: proxies}
	for _, tt := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"direct client", "203.0.113.9:5555", nil, "203.0.113.9"},
		{"direct client lying", "203.0.113.9:5555", []string{"1.2.3.4"}, "203.0.113.9"},
		{"behind nginx", "127.0.0.1:4000", []string{"203.0.113.9"}, "203.0.113.9"},
		{"client wrote its own header", "127.0.0.1:4000", []string{"1.2.3.4, 203.0.113.9"}, "203.0.113.9"},
		{"two proxies", "127.0.0.1:4000", []string{"203.0.113.9, 10.1.2.3"}, "203.0.113.9"},
		{"two headers", "127.0.0.1:4000", []string{"1.2.3.4", "203.0.113.9"}, "203.0.113.9"},
		{"proxy without header", "[::1]:4000", nil, "::1"},
		{"garbage in header", "127.0.0.1:4000", []string{"203.0.113.9, nonsense"}, "127.0.0.1"},
		{"mapped v4", "[::ffff:203.0.113.9]:1", nil, "203.0.113.9"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest(http.MethodGet, "/auth", nil)
			r.RemoteAddr = tt.peer
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := a.clientIP(r); got.String() != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
	if _, err := parseProxies([]string{"10.0.0.0/33"}); err == nil {
		t.Fatal("bad prefix accepted")
	}
}
