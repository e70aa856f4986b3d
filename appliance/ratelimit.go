package appliance

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/100steps/wxappliance/appliance/wire"
)

// Anonymous requests that make the appliance write (/auth stores a login
// state, /auth/code a session) are limited per client, so that no single
// client can fill the disk or crowd out everyone else's logins.

// maxClients bounds the limiter's memory: beyond it, clients whose bucket
// has refilled are forgotten, and while none has, new clients wait.
const maxClients = 65536

// limiter is a token bucket per client network: one IPv4 address, or one
// IPv6 /64 (what one subscriber usually gets, so rotating addresses within
// it gains nothing).
type limiter struct {
	perSecond float64
	burst     float64
	now       func() time.Time

	mu      sync.Mutex
	buckets map[netip.Prefix]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

// newLimiter allows burst requests at once and perMinute after that; a
// perMinute of zero turns limiting off (nil).
func newLimiter(perMinute, burst int, now func() time.Time) *limiter {
	if perMinute <= 0 {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	return &limiter{
		perSecond: float64(perMinute) / 60,
		burst:     float64(max(burst, 1)),
		now:       now,
		buckets:   map[netip.Prefix]*bucket{},
	}
}

// allow takes a token for client, or says how long until one is there.
func (l *limiter) allow(client netip.Addr) (bool, time.Duration) {
	key := clientNetwork(client)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= maxClients && !l.forgetRefilled(now) {
			return false, time.Duration(1 / l.perSecond * float64(time.Second))
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.perSecond)
	b.at = now
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) / l.perSecond * float64(time.Second))
	}
	b.tokens--
	return true, 0
}

// forgetRefilled drops the clients whose bucket is full again: they are
// indistinguishable from clients never seen.
func (l *limiter) forgetRefilled(now time.Time) bool {
	refill := time.Duration(l.burst / l.perSecond * float64(time.Second))
	for key, b := range l.buckets {
		if now.Sub(b.at) >= refill {
			delete(l.buckets, key)
		}
	}
	return len(l.buckets) < maxClients
}

func clientNetwork(ip netip.Addr) netip.Prefix {
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// limit wraps h with the per-client limit; over it, 429 with Retry-After.
func (a *Appliance) limit(h handlerFunc) handlerFunc {
	if a.limiter == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) error {
		ok, wait := a.limiter.allow(a.clientIP(r))
		if !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
			return errTooManyRequests
		}
		return h(w, r)
	}
}

var errTooManyRequests = wire.Errorf(wire.TooManyRequests, "请求过于频繁，请稍后再试", nil)

// clientIP is the address of the client: the peer's, unless the peer is
// one of server.trusted_proxies, in which case the X-Forwarded-For entry
// the nearest untrusted hop added. Entries a client wrote itself are to
// the left of it and never believed.
func (a *Appliance) clientIP(r *http.Request) netip.Addr {
	peer := parseAddr(r.RemoteAddr)
	if !a.trusted(peer) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop := parseAddr(strings.TrimSpace(hops[i]))
		if !hop.IsValid() {
			break // garbage: stop believing the header here
		}
		if !a.trusted(hop) {
			return hop
		}
		peer = hop
	}
	return peer
}

func (a *Appliance) trusted(ip netip.Addr) bool {
	for _, p := range a.trustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// parseAddr reads "ip", "ip:port" or "[ipv6]:port"; IPv4-mapped IPv6
// addresses count as IPv4.
func parseAddr(s string) netip.Addr {
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return ip.Unmap()
}

// parseProxies reads server.trusted_proxies: addresses or CIDR prefixes.
func parseProxies(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, err
		}
		out = append(out, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
	}
	return out, nil
}
