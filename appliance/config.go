package appliance

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/100steps/wxappliance/appliance/menu"
	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/oauth"
	"github.com/100steps/wxappliance/rpc"
)

// Config is the whole configuration file. Every key is documented in
// config.example.toml; keep the two in step.
type Config struct {
	Server   ServerConfig   `toml:"server"`
	Storage  StorageConfig  `toml:"storage"`
	WeChat   WeChatConfig   `toml:"wechat"`
	OAuth    OAuthConfig    `toml:"oauth"`
	JSSDK    JSSDKConfig    `toml:"jssdk"`
	Media    MediaConfig    `toml:"media"`
	CORS     CORSConfig     `toml:"cors"`
	Callback CallbackConfig `toml:"callback"`
	RPC      RPCConfig      `toml:"rpc"`
	Menu     MenuConfig     `toml:"menu"`
}

// MenuConfig is the custom menu the menu command applies: inline
// [[menu.button]] tables, or a file (WeChat's JSON or TOML) relative to the
// config file.
type MenuConfig struct {
	File   string        `toml:"file"`
	Button []menu.Button `toml:"button"`
}

// Load returns the configured menu; ok is false when none is configured.
func (m MenuConfig) Load() (_ menu.Menu, ok bool, err error) {
	switch {
	case m.File != "":
		loaded, err := menu.Load(m.File)
		return loaded, true, err
	case len(m.Button) > 0:
		return menu.Menu{Button: m.Button}, true, nil
	}
	return menu.Menu{}, false, nil
}

type ServerConfig struct {
	Listen            string   `toml:"listen"`
	AdminListen       string   `toml:"admin_listen"`
	Pprof             bool     `toml:"pprof"`
	TrustedProxies    []string `toml:"trusted_proxies"`
	BaseURL           string   `toml:"base_url"`
	LogFormat         string   `toml:"log_format"`
	LogLevel          string   `toml:"log_level"`
	ReadHeaderTimeout Duration `toml:"read_header_timeout"`
	ReadTimeout       Duration `toml:"read_timeout"`
	WriteTimeout      Duration `toml:"write_timeout"`
	IdleTimeout       Duration `toml:"idle_timeout"`
	ShutdownTimeout   Duration `toml:"shutdown_timeout"`
	MaxHeaderBytes    int      `toml:"max_header_bytes"`
	MaxBodyBytes      ByteSize `toml:"max_body_bytes"`
	MemoryLimit       ByteSize `toml:"memory_limit"`
}

type WeChatConfig struct {
	Sandbox     bool     `toml:"sandbox"`
	AppID       string   `toml:"app_id"`
	AppSecret   string   `toml:"app_secret"`
	APIBase     string   `toml:"api_base"`
	APIFallback []string `toml:"api_fallback"`
	OAuthBase   string   `toml:"oauth_base"`
	Timeout     Duration `toml:"timeout"`
	TokenAPI    string   `toml:"token_api"`
}

type OAuthConfig struct {
	AllowedReturnHosts []string `toml:"allowed_return_hosts"`
	Scope              string   `toml:"scope"`
	SessionCookie      string   `toml:"session_cookie"`
	CookiePath         string   `toml:"cookie_path"`
	SessionTTL         Duration `toml:"session_ttl"`
	// LoginRate and LoginBurst limit /auth and /auth/code per client:
	// LoginBurst at once, then LoginRate a minute. LoginRate 0 is no limit.
	LoginRate        int `toml:"login_rate"`
	LoginBurst       int `toml:"login_burst"`
	MaxPendingLogins int `toml:"max_pending_logins"`
}

type JSSDKConfig struct {
	// AllowedHosts limits which pages are signed; empty means the
	// oauth.allowed_return_hosts list.
	AllowedHosts []string `toml:"allowed_hosts"`
}

type MediaConfig struct {
	MaxBytes ByteSize `toml:"max_bytes"`
	Timeout  Duration `toml:"timeout"`
}

type CORSConfig struct {
	AllowedOrigins []string `toml:"allowed_origins"`
}

type CallbackConfig struct {
	Path                   string `toml:"path"`
	Token                  string `toml:"token"`
	EncodingAESKey         string `toml:"encoding_aes_key"`
	PreviousEncodingAESKey string `toml:"previous_encoding_aes_key"`
	// The rest is described in callback_config.go.
	ReplyTimeout    Duration          `toml:"reply_timeout"`
	LateReply       string            `toml:"late_reply"`
	LateReplyWindow Duration          `toml:"late_reply_window"`
	TimestampWindow Duration          `toml:"timestamp_window"`
	VerifyFiles     map[string]string `toml:"verify_files"`
	Rules           CallbackRules     `toml:"rules"`
}

type RPCConfig struct {
	Path        string   `toml:"path"`
	Keys        []RPCKey `toml:"keys"`
	MediaBudget ByteSize `toml:"media_budget"`
}

// RPCKey is one backend allowed on the RPC endpoint; Name shows in logs.
type RPCKey struct {
	Name string `toml:"name"`
	Key  string `toml:"key"`
}

// DefaultConfig is the configuration before the file is applied.
func DefaultConfig() Config {
	return Config{
		Server: ServerConfig{
			Listen:            "127.0.0.1:8080",
			AdminListen:       "127.0.0.1:8081",
			TrustedProxies:    []string{"127.0.0.1", "::1"},
			LogFormat:         "text",
			LogLevel:          "info",
			ReadHeaderTimeout: Duration(5 * time.Second),
			ReadTimeout:       Duration(15 * time.Second),
			WriteTimeout:      Duration(60 * time.Second),
			IdleTimeout:       Duration(2 * time.Minute),
			ShutdownTimeout:   Duration(15 * time.Second),
			MaxHeaderBytes:    16 << 10,
			MaxBodyBytes:      1 << 20,
			MemoryLimit:       64 << 20,
		},
		Storage: StorageConfig{Backend: BackendBadger, Dir: "data", MinFree: kv.DefaultMinFree, Redis: RedisConfig{Prefix: kv.DefaultRedisPrefix}},
		WeChat: WeChatConfig{
			APIBase:     "https://api.weixin.qq.com",
			APIFallback: []string{"https://api2.weixin.qq.com"},
			OAuthBase:   "https://open.weixin.qq.com",
			Timeout:     Duration(5 * time.Second),
			TokenAPI:    oauth.TokenAPIStable,
		},
		OAuth: OAuthConfig{
			Scope:         oauth.ScopeUserInfo,
			SessionCookie: "wxappliance_session",
			CookiePath:    "/",
			SessionTTL:    Duration(30 * 24 * time.Hour),
			// A login is two requests; a class behind one campus NAT
			// logging in together needs room.
			LoginRate:        60,
			LoginBurst:       60,
			MaxPendingLogins: oauth.DefaultMaxPendingLogins,
		},
		Media: MediaConfig{MaxBytes: 10 << 20, Timeout: Duration(30 * time.Second)},
		Callback: CallbackConfig{Path: "/callback", ReplyTimeout: Duration(callback.DefaultReplyTimeout), LateReply: LateReplyCustomMessage,
			LateReplyWindow: Duration(callback.DefaultLateWindow), TimestampWindow: Duration(callback.DefaultTimestampWindow)},
		RPC: RPCConfig{Path: "/rpc", MediaBudget: rpc.DefaultMediaBudget},
	}
}

// LoadConfig reads the file at path over the defaults, applies secrets from
// the environment and validates the result. It reports every problem it
// finds at once, unknown keys included, each naming its key; only a file
// that is not TOML, or a value of the wrong type, stops it early.
func LoadConfig(path string, env func(string) string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	cfg, md, err := decodeConfig(f)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	if cfg.Menu.File != "" && !filepath.IsAbs(cfg.Menu.File) {
		cfg.Menu.File = filepath.Join(filepath.Dir(path), cfg.Menu.File)
	}
	errs := unknownKeyErrors(md)
	if err := cfg.applyEnv(env); err != nil {
		errs = append(errs, err)
	}
	cfg.applySandboxDefaults()
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return Config{}, fmt.Errorf("config %s: %w", path, errors.Join(errs...))
	}
	return cfg, nil
}

// ParseConfig decodes TOML over DefaultConfig. A key the appliance does not
// know is an error naming it.
func ParseConfig(r io.Reader) (Config, error) {
	cfg, md, err := decodeConfig(r)
	if err != nil {
		return Config{}, err
	}
	if errs := unknownKeyErrors(md); len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return cfg, nil
}

func decodeConfig(r io.Reader) (Config, toml.MetaData, error) {
	cfg := DefaultConfig()
	md, err := toml.NewDecoder(r).Decode(&cfg)
	return cfg, md, err
}

// Environment variables that may hold secrets instead of the file. When set
// they take precedence over the file.
const (
	EnvAppSecret             = "WXAPPLIANCE_APP_SECRET"
	EnvCallbackToken         = "WXAPPLIANCE_CALLBACK_TOKEN"
	EnvEncodingAESKey        = "WXAPPLIANCE_ENCODING_AES_KEY"
	EnvPrevEncodingKey       = "WXAPPLIANCE_PREVIOUS_ENCODING_AES_KEY"
	EnvRPCKeys               = "WXAPPLIANCE_RPC_KEYS" // "name=key,name2=key2"
	EnvRedisURL              = "WXAPPLIANCE_REDIS_URL"
	EnvRedisSentinelPassword = "WXAPPLIANCE_REDIS_SENTINEL_PASSWORD"
	envRPCKeyPairDivider     = ","
)

func (c *Config) applyEnv(env func(string) string) error {
	if env == nil {
		return nil
	}
	set := func(dst *string, name string) {
		if v := env(name); v != "" {
			*dst = v
		}
	}
	set(&c.WeChat.AppSecret, EnvAppSecret)
	set(&c.Callback.Token, EnvCallbackToken)
	set(&c.Callback.EncodingAESKey, EnvEncodingAESKey)
	set(&c.Callback.PreviousEncodingAESKey, EnvPrevEncodingKey)
	set(&c.Storage.Redis.URL, EnvRedisURL)
	set(&c.Storage.Redis.SentinelPassword, EnvRedisSentinelPassword)
	if raw := env(EnvRPCKeys); raw != "" {
		var keys []RPCKey
		for _, pair := range strings.Split(raw, envRPCKeyPairDivider) {
			name, key, ok := strings.Cut(strings.TrimSpace(pair), "=")
			if !ok {
				return fmt.Errorf("%s: want name=key[,name=key...]", EnvRPCKeys)
			}
			keys = append(keys, RPCKey{Name: name, Key: key})
		}
		c.RPC.Keys = keys
	}
	return nil
}

// applySandboxDefaults fills the sandbox's own credentials so the example
// config runs without an account.
func (c *Config) applySandboxDefaults() {
	if !c.WeChat.Sandbox {
		return
	}
	if c.WeChat.AppID == "" {
		c.WeChat.AppID = sandbox.DefaultAppID
	}
	if c.WeChat.AppSecret == "" {
		c.WeChat.AppSecret = sandbox.DefaultAppSecret
	}
	if c.Callback.Token == "" && c.Callback.EncodingAESKey == "" {
		// So /sandbox/push works out of the box, in safe mode.
		c.Callback.Token, c.Callback.EncodingAESKey = sandbox.DefaultCallbackToken, sandbox.DefaultEncodingAESKey
	}
}

// Validate checks every value and reports all problems at once, each naming
// its key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}

	if _, _, err := net.SplitHostPort(c.Server.AdminListen); c.Server.AdminListen != "" && err != nil {
		bad("server.admin_listen", "want host:port, or \"\" for no admin listener, got %q", c.Server.AdminListen)
	}
	if c.Server.AdminListen != "" && c.Server.AdminListen == c.Server.Listen && !strings.HasSuffix(c.Server.Listen, ":0") {
		bad("server.admin_listen", "must differ from server.listen, whose routes are public")
	}
	if c.Server.Pprof && c.Server.AdminListen == "" {
		bad("server.pprof", "is served on the admin listener only: set server.admin_listen too")
	}
	if err := c.validateMenu(); err != nil {
		errs = append(errs, err)
	}
	if c.RPC.MediaBudget < 1<<20 {
		bad("rpc.media_budget", "must be at least 1MiB, got %d bytes", int64(c.RPC.MediaBudget))
	}
	if _, err := parseProxies(c.Server.TrustedProxies); err != nil {
		bad("server.trusted_proxies", "want IP addresses or CIDR prefixes such as \"10.0.0.0/8\": %v", err)
	}
	if _, _, err := net.SplitHostPort(c.Server.Listen); err != nil {
		bad("server.listen", "want host:port, got %q", c.Server.Listen)
	}
	if c.Server.BaseURL != "" {
		if err := checkBaseURL(c.Server.BaseURL); err != nil {
			bad("server.base_url", "%v", err)
		}
	}
	if !slices.Contains([]string{"text", "json"}, c.Server.LogFormat) {
		bad("server.log_format", "want \"text\" or \"json\", got %q", c.Server.LogFormat)
	}
	if _, err := parseLevel(c.Server.LogLevel); err != nil {
		bad("server.log_level", "%v", err)
	}
	for key, d := range map[string]Duration{
		"server.read_header_timeout": c.Server.ReadHeaderTimeout,
		"server.read_timeout":        c.Server.ReadTimeout,
		"server.write_timeout":       c.Server.WriteTimeout,
		"server.idle_timeout":        c.Server.IdleTimeout,
		"server.shutdown_timeout":    c.Server.ShutdownTimeout,
		"wechat.timeout":             c.WeChat.Timeout,
		"oauth.session_ttl":          c.OAuth.SessionTTL,
		"media.timeout":              c.Media.Timeout,
	} {
		if d <= 0 {
			bad(key, "must be a positive duration such as \"5s\", got %v", time.Duration(d))
		}
	}
	if c.Server.MaxHeaderBytes < 1024 {
		bad("server.max_header_bytes", "must be at least 1024, got %d", c.Server.MaxHeaderBytes)
	}
	if c.Server.MemoryLimit != 0 && c.Server.MemoryLimit < 16<<20 {
		bad("server.memory_limit", "must be 0 (no limit) or at least 16MiB, got %d bytes", int64(c.Server.MemoryLimit))
	}
	if c.Server.MaxBodyBytes < 1024 {
		bad("server.max_body_bytes", "must be at least 1024, got %d", c.Server.MaxBodyBytes)
	}
	if c.Media.MaxBytes < 1024 {
		bad("media.max_bytes", "must be at least 1024, got %d", c.Media.MaxBytes)
	}
	c.Storage.validate(bad)
	c.validateWeChat(bad)
	c.validateOAuth(bad)
	for i, o := range c.CORS.AllowedOrigins {
		if err := checkOrigin(o); err != nil {
			bad(fmt.Sprintf("cors.allowed_origins[%d]", i), "%v", err)
		}
	}
	c.validateCallback(bad)
	c.validateRPC(bad)
	return errors.Join(errs...)
}

func (c *Config) validateWeChat(bad func(key, format string, args ...any)) {
	w := c.WeChat
	if !w.Sandbox {
		if w.AppID == "" {
			bad("wechat.app_id", "must be set (or turn on wechat.sandbox)")
		}
		if w.AppSecret == "" {
			bad("wechat.app_secret", "must be set, in the file or in %s", EnvAppSecret)
		}
	}
	if strings.ContainsAny(w.AppID, " \t\r\n") {
		bad("wechat.app_id", "must not contain whitespace")
	}
	if err := checkHTTPURL(w.APIBase); err != nil {
		bad("wechat.api_base", "%v", err)
	}
	for i, f := range w.APIFallback {
		if err := checkHTTPURL(f); err != nil {
			bad(fmt.Sprintf("wechat.api_fallback[%d]", i), "%v", err)
		}
	}
	if err := checkHTTPURL(w.OAuthBase); err != nil {
		bad("wechat.oauth_base", "%v", err)
	}
	if w.TokenAPI != oauth.TokenAPIStable && w.TokenAPI != oauth.TokenAPIToken {
		bad("wechat.token_api", "want \"stable\" or \"token\", got %q", w.TokenAPI)
	}
}

// validateMenu checks the configured menu as WeChat would; its problems
// name their keys already.
func (c *Config) validateMenu() error {
	if c.Menu.File != "" && len(c.Menu.Button) > 0 {
		return errors.New("menu.file: set either menu.file or [[menu.button]], not both")
	}
	m, ok, err := c.Menu.Load()
	switch {
	case err != nil:
		return fmt.Errorf("menu.file: %w", err)
	case ok:
		return m.Validate("menu")
	}
	return nil
}

func (c *Config) validateOAuth(bad func(key, format string, args ...any)) {
	o := c.OAuth
	if len(o.AllowedReturnHosts) == 0 {
		bad("oauth.allowed_return_hosts", "must list at least one host, or no login can return anywhere")
	}
	for i, h := range o.AllowedReturnHosts {
		if err := checkHostPattern(h); err != nil {
			bad(fmt.Sprintf("oauth.allowed_return_hosts[%d]", i), "%v", err)
		}
	}
	for i, h := range c.JSSDK.AllowedHosts {
		if err := checkHostPattern(h); err != nil {
			bad(fmt.Sprintf("jssdk.allowed_hosts[%d]", i), "%v", err)
		}
	}
	if o.Scope != oauth.ScopeBase && o.Scope != oauth.ScopeUserInfo {
		bad("oauth.scope", "want \"snsapi_base\" or \"snsapi_userinfo\", got %q", o.Scope)
	}
	if o.LoginRate < 0 {
		bad("oauth.login_rate", "must be 0 (no limit) or a number of requests a minute, got %d", o.LoginRate)
	}
	if o.LoginRate > 0 && o.LoginBurst < 1 {
		bad("oauth.login_burst", "must be at least 1, got %d", o.LoginBurst)
	}
	if o.MaxPendingLogins < 1 {
		bad("oauth.max_pending_logins", "must be at least 1, got %d", o.MaxPendingLogins)
	}
	if !validCookieName(o.SessionCookie) {
		bad("oauth.session_cookie", "%q is not a valid cookie name", o.SessionCookie)
	}
	if !strings.HasPrefix(o.CookiePath, "/") || strings.ContainsAny(o.CookiePath, ";, \t\r\n") {
		bad("oauth.cookie_path", "must start with / and hold no ';', ',' or spaces, got %q", o.CookiePath)
	}
}

func (c *Config) validateCallback(bad func(key, format string, args ...any)) {
	cb := c.Callback
	if err := checkRoutePath(cb.Path); err != nil {
		bad("callback.path", "%v", err)
	}
	if cb.Token != "" && !validCallbackToken(cb.Token) {
		bad("callback.token", "must be 3 to 32 letters or digits, as WeChat requires")
	}
	if cb.EncodingAESKey != "" && cb.Token == "" {
		bad("callback.token", "must be set when callback.encoding_aes_key is")
	}
	for key, v := range map[string]string{
		"callback.encoding_aes_key":          cb.EncodingAESKey,
		"callback.previous_encoding_aes_key": cb.PreviousEncodingAESKey,
	} {
		if v != "" && !validEncodingAESKey(v) {
			bad(key, "must be exactly 43 letters or digits (WeChat's EncodingAESKey), got %d characters", len(v))
		}
	}
	c.validateCallbackExtras(bad)
}

func (c *Config) validateRPC(bad func(key, format string, args ...any)) {
	if err := checkRoutePath(c.RPC.Path); err != nil {
		bad("rpc.path", "%v", err)
	}
	if c.RPC.Path == c.Callback.Path {
		bad("rpc.path", "must differ from callback.path")
	}
	seen := map[string]bool{}
	for i, k := range c.RPC.Keys {
		key := fmt.Sprintf("rpc.keys[%d]", i)
		if k.Name == "" {
			bad(key+".name", "must not be empty")
		} else if seen[k.Name] {
			bad(key+".name", "%q is used twice", k.Name)
		}
		seen[k.Name] = true
		if len(k.Key) < 16 {
			bad(key+".key", "must be at least 16 characters")
		}
	}
}

func checkBaseURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("want an absolute http(s) URL, got %q", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("must not have a query, fragment or user info, got %q", raw)
	}
	return nil
}

func checkHTTPURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return fmt.Errorf("want an absolute http(s) URL without query, got %q", raw)
	}
	return nil
}

func checkOrigin(raw string) error {
	if raw == "*" {
		return errors.New(`"*" is not allowed: CORS here sends credentials, list the origins`)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("want scheme://host[:port], got %q", raw)
	}
	return nil
}

// checkHostPattern accepts "host", "host:port" and "*.suffix".
func checkHostPattern(p string) error {
	h := strings.TrimPrefix(p, "*.")
	if h == "" || strings.ContainsAny(h, "/*@ \t\r\n\\?#") || strings.ToLower(h) != h {
		return fmt.Errorf("want a lowercase host, host:port or *.suffix, got %q", p)
	}
	return nil
}

func checkRoutePath(p string) error {
	if !strings.HasPrefix(p, "/") || len(p) < 2 || strings.ContainsAny(p, "?# {}\t\r\n") {
		return fmt.Errorf("want a path such as /callback, got %q", p)
	}
	for _, taken := range []string{"/auth", "/offiaccount", "/sandbox", "/healthz", "/readyz", "/admin"} {
		if p == taken || strings.HasPrefix(p, taken+"/") {
			return fmt.Errorf("%q collides with the built-in route %s", p, taken)
		}
	}
	return nil
}

func validCookieName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?={}`, r) {
			return false
		}
	}
	return true
}

func validCallbackToken(s string) bool {
	return len(s) >= 3 && len(s) <= 32 && isAlnum(s)
}

func validEncodingAESKey(s string) bool {
	return len(s) == 43 && isAlnum(s)
}

func isAlnum(s string) bool {
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return false
		}
	}
	return true
}

// Duration is a time.Duration written as a string such as "5s" or "720h".
// A bare number is refused: toml would read `timeout = 5` as 5 nanoseconds.
type Duration time.Duration

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("want a duration such as \"5s\", \"10m\" or \"720h\", got %q", b)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// ByteSize is a size written as a string such as "64MiB", "512KiB",
// "1GiB" or "0" (a number without unit is bytes).
type ByteSize int64

var byteUnits = []struct {
	suffix string
	mult   int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}

func (b *ByteSize) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	mult := int64(1)
	for _, u := range byteUnits {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("want a size such as \"64MiB\" or \"0\", got %q", text)
	}
	*b = ByteSize(n * mult)
	return nil
}

func (b ByteSize) MarshalText() ([]byte, error) { return []byte(strconv.FormatInt(int64(b), 10)), nil }
