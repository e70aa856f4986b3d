package kv

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestRedisOptions(t *testing.T) {
	cases := []struct {
		name     string
		opts     RedisOptions
		check    func(t *testing.T, uo *redis.UniversalOptions)
		wantDesc string
	}{
		{
			name: "defaults",
			opts: RedisOptions{URL: "redis://:pw@10.0.0.5:6380/3"},
			check: func(t *testing.T, uo *redis.UniversalOptions) {
				want := redis.UniversalOptions{
					Addrs: []string{"10.0.0.5:6380"}, DB: 3, Password: "pw",
					DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
					PoolTimeout: 2 * time.Second, PoolSize: 32, DialerRetries: 2,
					MaxRetries: -1, ContextTimeoutEnabled: true,
				}
				got := redis.UniversalOptions{
					Addrs: uo.Addrs, DB: uo.DB, Password: uo.Password,
					DialTimeout: uo.DialTimeout, ReadTimeout: uo.ReadTimeout, WriteTimeout: uo.WriteTimeout,
					PoolTimeout: uo.PoolTimeout, PoolSize: uo.PoolSize, DialerRetries: uo.DialerRetries,
					MaxRetries: uo.MaxRetries, ContextTimeoutEnabled: uo.ContextTimeoutEnabled,
				}
				if !equalOpts(got, want) {
					t.Errorf("got  %+v\nwant %+v", got, want)
				}
				if uo.TLSConfig != nil || uo.MasterName != "" || uo.IsClusterMode {
					t.Errorf("plain URL gave TLS %v, master %q, cluster %v", uo.TLSConfig != nil, uo.MasterName, uo.IsClusterMode)
				}
			},
			wantDesc: "redis 10.0.0.5:6380",
		},
		{
			name: "TLS, user and URL parameters",
			opts: RedisOptions{URL: "rediss://app:pw@redis.example:6390/0?read_timeout=3s&pool_size=7&dial_timeout=-1&protocol=2"},
			check: func(t *testing.T, uo *redis.UniversalOptions) {
				if uo.TLSConfig == nil || uo.TLSConfig.ServerName != "redis.example" {
					t.Errorf("rediss:// gave TLS config %+v", uo.TLSConfig)
				}
				if uo.Username != "app" || uo.Protocol != 2 {
					t.Errorf("username %q protocol %d", uo.Username, uo.Protocol)
				}
				if uo.ReadTimeout != 3*time.Second || uo.PoolSize != 7 {
					t.Errorf("URL parameters not used: read timeout %v, pool size %d", uo.ReadTimeout, uo.PoolSize)
				}
				if uo.DialTimeout != time.Second {
					t.Errorf("dial_timeout=-1 (no timeout) gave %v, want the one-second default", uo.DialTimeout)
				}
			},
			wantDesc: "redis redis.example:6390 (TLS)",
		},
		{
			name: "options override the URL",
			opts: RedisOptions{URL: "redis://h?read_timeout=3s", ReadTimeout: 500 * time.Millisecond, PoolSize: 4, PoolTimeout: time.Second},
			check: func(t *testing.T, uo *redis.UniversalOptions) {
				if uo.ReadTimeout != 500*time.Millisecond || uo.PoolSize != 4 || uo.PoolTimeout != time.Second {
					t.Errorf("read timeout %v pool size %d pool timeout %v", uo.ReadTimeout, uo.PoolSize, uo.PoolTimeout)
				}
				if uo.WriteTimeout != time.Second {
					t.Errorf("write timeout %v, want the default", uo.WriteTimeout)
				}
			},
			wantDesc: "redis h:6379",
		},
		{
			name: "sentinel",
			opts: RedisOptions{URL: "redis://:pw@ignored/2", SentinelAddrs: []string{"s1:26379", "s2:26379"}, MasterName: "mymaster", SentinelPassword: "spw"},
			check: func(t *testing.T, uo *redis.UniversalOptions) {
				if strings.Join(uo.Addrs, ",") != "s1:26379,s2:26379" || uo.MasterName != "mymaster" || uo.SentinelPassword != "spw" || uo.DB != 2 || uo.Password != "pw" {
					t.Errorf("sentinel options %+v", uo)
				}
				if _, ok := redis.NewUniversalClient(uo).(*redis.Client); !ok {
					t.Errorf("go-redis did not pick its failover client")
				}
			},
			wantDesc: `redis sentinel s1:26379,s2:26379 master "mymaster"`,
		},
		{
			name: "cluster",
			opts: RedisOptions{URL: "redis://:pw@ignored", ClusterAddrs: []string{"n1:7000"}},
			check: func(t *testing.T, uo *redis.UniversalOptions) {
				if strings.Join(uo.Addrs, ",") != "n1:7000" || !uo.IsClusterMode {
					t.Errorf("cluster options %+v", uo)
				}
				if _, ok := redis.NewUniversalClient(uo).(*redis.ClusterClient); !ok {
					t.Errorf("one seed address did not give a cluster client")
				}
			},
			wantDesc: "redis cluster n1:7000",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			uo, desc, err := universalOptions(c.opts)
			if err != nil {
				t.Fatalf("universalOptions: %v", err)
			}
			c.check(t, uo)
			if desc != c.wantDesc {
				t.Errorf("description %q, want %q", desc, c.wantDesc)
			}
		})
	}
}

func equalOpts(a, b redis.UniversalOptions) bool {
	return strings.Join(a.Addrs, ",") == strings.Join(b.Addrs, ",") && a.DB == b.DB && a.Password == b.Password &&
		a.DialTimeout == b.DialTimeout && a.ReadTimeout == b.ReadTimeout && a.WriteTimeout == b.WriteTimeout &&
		a.PoolTimeout == b.PoolTimeout && a.PoolSize == b.PoolSize && a.DialerRetries == b.DialerRetries &&
		a.MaxRetries == b.MaxRetries && a.ContextTimeoutEnabled == b.ContextTimeoutEnabled
}

// Every rejected configuration names the problem and never the password,
// however the password garbles the URL.
func TestRedisOptionsRejected(t *testing.T) {
	const pw = "Secr3tPw"
	cases := []struct {
		name string
		opts RedisOptions
		want string
	}{
		{"empty URL", RedisOptions{}, "url is empty"},
		{"control character", RedisOptions{URL: "redis://:" + pw + "\x7f@host"}, "not a valid URL"},
		{"space in host", RedisOptions{URL: "redis://:" + pw + "@ho st"}, "not a valid URL"},
		{"slash in password", RedisOptions{URL: "redis://user:12/" + pw + "@host"}, "percent-encode"},
		{"hash in password", RedisOptions{URL: "redis://:" + pw + "#x@host"}, ""},
		{"question mark in password", RedisOptions{URL: "redis://:1?" + pw + "@host"}, ""},
		{"bad database", RedisOptions{URL: "redis://:" + pw + "@host/" + pw}, "database number"},
		{"scheme", RedisOptions{URL: "http://:" + pw + "@host"}, "redis:// or rediss://"},
		{"unknown parameter", RedisOptions{URL: "redis://:" + pw + "@host?bogus=" + pw}, "bogus"},
		{"bad duration", RedisOptions{URL: "redis://:" + pw + "@host?read_timeout=" + pw}, "read_timeout"},
		{"sentinel without master", RedisOptions{URL: "redis://h", SentinelAddrs: []string{"s:1"}}, "master name"},
		{"master without sentinels", RedisOptions{URL: "redis://h", MasterName: "m"}, "sentinel addresses"},
		{"sentinel and cluster", RedisOptions{URL: "redis://h", SentinelAddrs: []string{"s:1"}, MasterName: "m", ClusterAddrs: []string{"c:1"}}, "not both"},
		{"cluster with a database", RedisOptions{URL: "redis://h/1", ClusterAddrs: []string{"c:1"}}, "only database 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewRedis(c.opts)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
			if strings.Contains(err.Error(), pw) {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}

func TestRoundTTL(t *testing.T) {
	for _, c := range []struct{ in, want time.Duration }{
		{0, 0},
		{time.Nanosecond, time.Millisecond},
		{time.Millisecond, time.Millisecond},
		{1500 * time.Microsecond, 2 * time.Millisecond},
		{time.Hour, time.Hour},
	} {
		if got := roundTTL(c.in); got != c.want {
			t.Errorf("roundTTL(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	if got := ttlMillis(0); got != "0" {
		t.Errorf("ttlMillis(0) = %q, want 0 (no expiry)", got)
	}
	if got := ttlMillis(time.Microsecond); got != "1" {
		t.Errorf("ttlMillis(1µs) = %q, want 1", got)
	}
}

// FuzzRedisURLPassword puts arbitrary passwords into a URL: whatever the
// parse makes of it, neither the error nor the description of the
// deployment may show any stretch of the password that the rest of the
// URL does not contain anyway.
func FuzzRedisURLPassword(f *testing.F) {
	f.Add("Secr3tPassword", "127.0.0.1:6379", "/0")
	f.Add("ab/cdefgh", "host", "")
	f.Add("12/secretpart", "host:1", "/0?x=1")
	f.Add("p#ss?word%zz", "h", "")
	f.Add("pass word\n", "h:1", "?read_timeout=secret")
	f.Add("p@ssw0rd@x", "[::1]:6379", "/15")
	f.Fuzz(func(t *testing.T, pw, host, tail string) {
		const window = 6
		rest := "redis://user:@" + host + tail
		raw := "redis://user:" + pw + "@" + host + tail
		var shown string
		uo, desc, err := universalOptions(RedisOptions{URL: raw})
		if err != nil {
			shown = err.Error()
		} else {
			shown = desc
			_ = uo
		}
		for i := 0; i+window <= len(pw); i++ {
			w := pw[i : i+window]
			// Plain lowercase words can come from the messages themselves
			// ("password" is in one).
			if strings.Contains(rest, w) || strings.Trim(w, "abcdefghijklmnopqrstuvwxyz .-'") == "" {
				continue
			}
			if strings.Contains(shown, w) {
				t.Fatalf("URL %q: %q shows %q from the password", raw, shown, w)
			}
		}
	})
}
