package appliance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/sandbox"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func noEnv(string) string { return "" }

func TestExampleConfigLoads(t *testing.T) {
	cfg, err := LoadConfig("../config.example.toml", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.WeChat.Sandbox || cfg.WeChat.AppID != sandbox.DefaultAppID || cfg.WeChat.AppSecret != sandbox.DefaultAppSecret {
		t.Fatalf("example is not a runnable sandbox config: %+v", cfg.WeChat)
	}
	if cfg.WeChat.Timeout.D() != 5*time.Second || cfg.OAuth.SessionTTL.D() != 720*time.Hour {
		t.Fatalf("durations: %v %v", cfg.WeChat.Timeout, cfg.OAuth.SessionTTL)
	}
}

// Every key the appliance knows must be documented in the example, which is
// the configuration reference.
func TestExampleDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, key := range []string{
		"listen", "base_url", "log_format", "log_level", "read_header_timeout", "read_timeout",
		"write_timeout", "idle_timeout", "shutdown_timeout", "max_header_bytes", "max_body_bytes", "memory_limit",
		"dir", "sandbox", "app_id", "app_secret", "api_base", "api_fallback", "oauth_base", "timeout",
		"token_api", "allowed_return_hosts", "scope", "session_cookie", "cookie_path", "session_ttl",
		"allowed_hosts", "max_bytes", "allowed_origins", "path", "token", "encoding_aes_key",
		"previous_encoding_aes_key", "keys",
		"reply_timeout", "timestamp_window", "verify_files", "subscribe", "default", "keyword", "match",
		"type", "content", "media_id", "title", "description", "music_url", "hq_music_url",
		"thumb_media_id", "articles",
	} {
		if !strings.Contains(text, "\n"+key+" =") && !strings.Contains(text, "# "+key+" =") && !strings.Contains(text, "[["+"rpc."+key+"]]") {
			t.Errorf("config.example.toml does not document %q", key)
		}
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"misspelt key", "[wechat]\nsandbox = true\ntimeuot = \"5s\"\n", "wechat.timeuot"},
		{"unknown table", "[wechat]\nsandbox = true\n[webchat]\napp_id = \"x\"\n", "webchat.app_id"},
		{"bad duration", "[wechat]\nsandbox = true\ntimeout = \"5 seconds\"\n", "wechat.timeout"},
		{"bare number duration", "[wechat]\nsandbox = true\ntimeout = 5\n", "wechat.timeout"},
		{"negative duration", "[wechat]\nsandbox = true\ntimeout = \"-1s\"\n", "wechat.timeout"},
		{"zero session ttl", "[wechat]\nsandbox = true\n[oauth]\nsession_ttl = \"0s\"\n", "oauth.session_ttl"},
		{"no app_id outside sandbox", "[wechat]\napp_secret = \"s\"\n", "wechat.app_id"},
		{"no secret outside sandbox", "[wechat]\napp_id = \"wx1\"\n", "wechat.app_secret"},
		{"bad api_base", "[wechat]\nsandbox = true\napi_base = \"api.weixin.qq.com\"\n", "wechat.api_base"},
		{"bad fallback", "[wechat]\nsandbox = true\napi_fallback = [\"https://ok.example\", \"::\"]\n", "wechat.api_fallback[1]"},
		{"token_api", "[wechat]\nsandbox = true\ntoken_api = \"fast\"\n", "wechat.token_api"},
		{"42-char key", "[wechat]\nsandbox = true\n[callback]\ntoken = \"tok\"\nencoding_aes_key = \"" + strings.Repeat("a", 42) + "\"\n", "callback.encoding_aes_key"},
		{"44-char key", "[wechat]\nsandbox = true\n[callback]\ntoken = \"tok\"\nencoding_aes_key = \"" + strings.Repeat("a", 44) + "\"\n", "callback.encoding_aes_key"},
		{"key without token", "[wechat]\nsandbox = true\n[callback]\nencoding_aes_key = \"" + strings.Repeat("a", 43) + "\"\n", "callback.token"},
		{"callback token chars", "[wechat]\nsandbox = true\n[callback]\ntoken = \"a-b\"\n", "callback.token"},
		{"scope", "[wechat]\nsandbox = true\n[oauth]\nscope = \"snsapi_login\"\n", "oauth.scope"},
		{"cookie name", "[wechat]\nsandbox = true\n[oauth]\nsession_cookie = \"a b\"\n", "oauth.session_cookie"},
		{"return hosts empty", "[wechat]\nsandbox = true\n[oauth]\nallowed_return_hosts = []\n", "oauth.allowed_return_hosts"},
		{"return host with scheme", "[wechat]\nsandbox = true\n[oauth]\nallowed_return_hosts = [\"https://x.com\"]\n", "oauth.allowed_return_hosts[0]"},
		{"cors wildcard", "[wechat]\nsandbox = true\n[cors]\nallowed_origins = [\"*\"]\n", "cors.allowed_origins[0]"},
		{"cors path", "[wechat]\nsandbox = true\n[cors]\nallowed_origins = [\"https://a.com/x\"]\n", "cors.allowed_origins[0]"},
		{"listen", "[server]\nlisten = \"8080\"\n[wechat]\nsandbox = true\n", "server.listen"},
		{"base_url", "[server]\nbase_url = \"example.com/wechat\"\n[wechat]\nsandbox = true\n", "server.base_url"},
		{"log format", "[server]\nlog_format = \"xml\"\n[wechat]\nsandbox = true\n", "server.log_format"},
		{"storage", "[storage]\ndir = \"\"\n[wechat]\nsandbox = true\n", "storage.dir"},
		{"storage backend", "[storage]\nbackend = \"mysql\"\n[wechat]\nsandbox = true\n", "storage.backend"},
		{"redis without url", "[storage]\nbackend = \"redis\"\n[wechat]\nsandbox = true\n", "storage.redis.url"},
		{"redis url scheme", "[storage]\nbackend = \"redis\"\n[storage.redis]\nurl = \"http://x\"\n[wechat]\nsandbox = true\n", "storage.redis.url"},
		{"sentinel without master", "[storage]\nbackend = \"redis\"\n[storage.redis]\nurl = \"redis://x\"\nsentinel_addrs = [\"a:1\"]\n[wechat]\nsandbox = true\n", "storage.redis.master_name"},
		{"sentinel and cluster", "[storage]\nbackend = \"redis\"\n[storage.redis]\nurl = \"redis://x\"\nsentinel_addrs = [\"a:1\"]\nmaster_name = \"m\"\ncluster_addrs = [\"b:1\"]\n[wechat]\nsandbox = true\n", "storage.redis.cluster_addrs"},
		{"empty prefix", "[storage]\nbackend = \"redis\"\n[storage.redis]\nurl = \"redis://x\"\nprefix = \"\"\n[wechat]\nsandbox = true\n", "storage.redis.prefix"},
		{"callback path collides", "[wechat]\nsandbox = true\n[callback]\npath = \"/auth/cb\"\n", "callback.path"},
		{"rpc short key", "[wechat]\nsandbox = true\n[[rpc.keys]]\nname = \"b\"\nkey = \"short\"\n", "rpc.keys[0].key"},
		{"rpc duplicate name", "[wechat]\nsandbox = true\n[[rpc.keys]]\nname = \"b\"\nkey = \"0123456789abcdef\"\n[[rpc.keys]]\nname = \"b\"\nkey = \"0123456789abcdefg\"\n", "rpc.keys[1].name"},
		{"wrong type", "[wechat]\nsandbox = \"yes\"\n", "wechat.sandbox"},
		{"memory limit unit", "[server]\nmemory_limit = \"64 lots\"\n[wechat]\nsandbox = true\n", "server.memory_limit"},
		{"memory limit tiny", "[server]\nmemory_limit = \"1MiB\"\n[wechat]\nsandbox = true\n", "server.memory_limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadConfig(writeConfig(t, tt.body), noEnv)
			if err == nil {
				t.Fatal("config accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not name %q", err, tt.want)
			}
		})
	}
}

// Sizes are one type: a number of bytes as before, or a string with a unit.
func TestConfigSizes(t *testing.T) {
	for _, tt := range []struct {
		body string
		want ByteSize
	}{
		{"max_body_bytes = 2048\n[media]\nmax_bytes = 4096", 2048},
		{"max_body_bytes = \"2KiB\"\n[media]\nmax_bytes = \"4KiB\"", 2048},
	} {
		cfg, err := LoadConfig(writeConfig(t, "[server]\n"+tt.body+"\n[wechat]\nsandbox = true\n[oauth]\nallowed_return_hosts = [\"a.com\"]\n"), noEnv)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Server.MaxBodyBytes != tt.want || cfg.Media.MaxBytes != 2*tt.want {
			t.Fatalf("%q: max_body_bytes %d, media.max_bytes %d", tt.body, cfg.Server.MaxBodyBytes, cfg.Media.MaxBytes)
		}
	}
	_, err := LoadConfig(writeConfig(t, "[wechat]\nsandbox = true\n[media]\nmax_bytes = \"10 lots\"\n"), noEnv)
	if err == nil || !strings.Contains(err.Error(), "media.max_bytes") {
		t.Fatalf("bad size: %v", err)
	}
}

// check-config reports everything in one run: unknown keys in every table,
// each with the key it most likely meant, and the invalid values too.
func TestConfigReportsUnknownKeysWithValueProblems(t *testing.T) {
	_, err := LoadConfig(writeConfig(t, `[server]
listn = "127.0.0.1:1"
[wechat]
app_id = "wx1"
timeuot = "5s"
token_api = "fast"
[webchat]
app_id = "x"
[oauth]
allowed_return_hosts = ["a.com"]
[[rpc.keys]]
nmae = "b"
key = "0123456789abcdef"
[callback.rules.default]
contnt = "x"
[media]
completely_unrelated_setting = 1
`), noEnv)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"server.listn: unknown key (did you mean server.listen?)",
		"wechat.timeuot: unknown key (did you mean wechat.timeout?)",
		"webchat.app_id: unknown key (did you mean wechat.app_id?)",
		"rpc.keys.nmae: unknown key (did you mean rpc.keys.name?)",
		"callback.rules.default.contnt: unknown key (did you mean callback.rules.default.content?)",
		"media.completely_unrelated_setting: unknown key\n",
		"wechat.app_secret: must be set",
		"wechat.token_api",
	} {
		if !strings.Contains(err.Error()+"\n", want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func TestConfigReportsAllProblems(t *testing.T) {
	_, err := LoadConfig(writeConfig(t, "[wechat]\ntoken_api = \"x\"\n[oauth]\nscope = \"y\"\n"), noEnv)
	for _, key := range []string{"wechat.app_id", "wechat.app_secret", "wechat.token_api", "oauth.scope"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("error %v misses %s", err, key)
		}
	}
}

// The Redis URL carries the password: an error about it never repeats it,
// and the environment's wins over the file's.
func TestRedisURL(t *testing.T) {
	body := "[storage]\nbackend = \"redis\"\n[storage.redis]\nurl = \"http://user:hunter2@x\"\n[wechat]\nsandbox = true\n[oauth]\nallowed_return_hosts = [\"a.com\"]\n"
	_, err := LoadConfig(writeConfig(t, body), noEnv)
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("bad URL: %v", err)
	}
	cfg, err := LoadConfig(writeConfig(t, body), func(k string) string {
		if k == EnvRedisURL {
			return "rediss://:from-env@redis.internal:6380/2"
		}
		return ""
	})
	if err != nil || cfg.Storage.Redis.URL != "rediss://:from-env@redis.internal:6380/2" || !cfg.Storage.Shared() {
		t.Fatalf("%v %+v", err, cfg.Storage)
	}
}

func TestSecretsFromEnvironment(t *testing.T) {
	key := strings.Repeat("k", 43)
	env := map[string]string{
		EnvAppSecret:      "from-env",
		EnvCallbackToken:  "envtoken",
		EnvEncodingAESKey: key,
		EnvRPCKeys:        "shop=0123456789abcdef==,crm=fedcba9876543210",
	}
	cfg, err := LoadConfig(writeConfig(t, "[wechat]\napp_id = \"wx1\"\napp_secret = \"from-file\"\n[oauth]\nallowed_return_hosts = [\"example.com\"]\n"), func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.WeChat.AppSecret != "from-env" || cfg.Callback.Token != "envtoken" || cfg.Callback.EncodingAESKey != key {
		t.Fatalf("env not applied: %+v %+v", cfg.WeChat, cfg.Callback)
	}
	want := []RPCKey{{"shop", "0123456789abcdef=="}, {"crm", "fedcba9876543210"}}
	if len(cfg.RPC.Keys) != 2 || cfg.RPC.Keys[0] != want[0] || cfg.RPC.Keys[1] != want[1] {
		t.Fatalf("rpc keys %+v", cfg.RPC.Keys)
	}
	if _, err := LoadConfig(writeConfig(t, "[wechat]\nsandbox = true\n"), func(k string) string {
		if k == EnvRPCKeys {
			return "no-equals-sign"
		}
		return ""
	}); err == nil || !strings.Contains(err.Error(), EnvRPCKeys) {
		t.Fatalf("bad %s accepted or not named: %v", EnvRPCKeys, err)
	}
}

func TestHostMatcher(t *testing.T) {
	match := hostMatcher([]string{"example.com", "app.test:8443", "*.school.edu.cn"})
	tests := map[string]bool{
		"example.com":          true,
		"EXAMPLE.com":          true,
		"example.com:8080":     true,
		"app.test:8443":        true,
		"app.test:9999":        false,
		"app.test":             false,
		"a.school.edu.cn":      true,
		"a.b.school.edu.cn":    true,
		"school.edu.cn":        false,
		"evilschool.edu.cn":    false,
		"example.com.evil.com": false,
		"evil.com":             false,
	}
	for host, want := range tests {
		if got := match(host); got != want {
			t.Errorf("match(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestLoopbackAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:8080":   "127.0.0.1:8080",
		"[::]:8080":      "[::1]:8080",
		":8080":          "127.0.0.1:8080",
		"127.0.0.1:9000": "127.0.0.1:9000",
		"10.0.0.5:80":    "10.0.0.5:80",
	} {
		if got := LoopbackAddr(in); got != want {
			t.Errorf("LoopbackAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"64MiB": 64 << 20, "512 KiB": 512 << 10, "1GiB": 1 << 30, "100MB": 100e6, "0": 0, "2048": 2048, "10B": 10} {
		var b ByteSize
		if err := b.UnmarshalText([]byte(in)); err != nil || b != want {
			t.Errorf("%q -> %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1MiB", "1.5GiB", "64 mib", "99999999999GiB"} {
		var b ByteSize
		if err := b.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%q accepted as %d", in, b)
		}
	}
}
