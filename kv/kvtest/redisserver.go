package kvtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/100steps/wxappliance/kv"
)

// RequireRedisEnv names the environment variable that turns a missing
// redis-server from a skip into a failure.
const RequireRedisEnv = "WXAPPLIANCE_REQUIRE_REDIS"

// startDeadline bounds how long redis-server may take to answer after
// being started; it normally takes milliseconds, but the machine is shared.
const startDeadline = 30 * time.Second

// RedisServerOptions configures a RedisServer. The zero value is a server
// without persistence or password.
type RedisServerOptions struct {
	// AOF turns on the append-only file with appendfsync everysec, so that
	// data survives Stop and Start.
	AOF bool
	// Password sets requirepass; URL then carries it.
	Password string
	// Cluster runs the server as a one-node Redis Cluster owning every
	// hash slot: enough to exercise go-redis's cluster client.
	Cluster bool
	// Sentinel runs a Sentinel beside the server, monitoring it as master
	// "mymaster"; SentinelAddr gives its address.
	Sentinel bool
}

// RedisServer is a redis-server private to one test, listening on a free
// loopback port with its files in a temporary directory. It is killed when
// the test ends.
type RedisServer struct {
	t    testing.TB
	bin  string
	dir  string
	opts RedisServerOptions
	port int

	mu   sync.Mutex
	proc *process // nil while stopped

	sentinel *process
	sentPort int
}

// process is a running redis-server and the channel closed when it exits.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    string
}

var skipNotice sync.Once

// redisServerPath returns the redis-server binary or skips (or fails) t.
func redisServerPath(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p
	}
	const msg = "redis-server not installed: apt-get install redis-server"
	if os.Getenv(RequireRedisEnv) == "1" {
		t.Fatalf("%s (required because %s=1)", msg, RequireRedisEnv)
	}
	// t.Skip is only printed with -v: say it once where it shows.
	skipNotice.Do(func() {
		fmt.Fprintf(os.Stderr, "kvtest: SKIPPING the Redis tests: %s (set %s=1 to require them)\n", msg, RequireRedisEnv)
	})
	t.Skip(msg)
	return ""
}

// StartRedisServer starts a redis-server for t, or skips t when there is
// none installed.
func StartRedisServer(t testing.TB, opts RedisServerOptions) *RedisServer {
	t.Helper()
	s := &RedisServer{t: t, bin: redisServerPath(t), dir: t.TempDir(), opts: opts}
	t.Cleanup(s.cleanup)
	// Another process can take the free port between our probe and
	// redis-server's bind: try a few ports.
	var err error
	for range 5 {
		s.port = freePort(t)
		if err = s.start(); err == nil || !errors.Is(err, errAddrInUse) {
			break
		}
	}
	if err != nil {
		t.Fatalf("kvtest: %v", err)
	}
	if opts.Cluster {
		s.makeCluster()
	}
	if opts.Sentinel {
		s.startSentinel()
	}
	return s
}

// Addr is the server's host:port.
func (s *RedisServer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is a redis:// URL for the server, with its password if it has one.
func (s *RedisServer) URL() string {
	u := url.URL{Scheme: "redis", Host: s.Addr()}
	if s.opts.Password != "" {
		u.User = url.UserPassword("", s.opts.Password)
	}
	return u.String()
}

// SentinelAddr is the Sentinel's host:port, with RedisServerOptions.Sentinel.
func (s *RedisServer) SentinelAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.sentPort))
}

// testTimeout replaces the store's one-second timeouts in tests that are
// not about timeouts: on a busy machine redis-server can go unscheduled
// for that long, and a slow reply must not fail an unrelated test.
const testTimeout = 5 * time.Second

// Open returns a store on the server, closed when t ends. An empty
// opts.URL means the server's URL; with Cluster or Sentinel the matching
// addresses are filled in too. Timeouts left zero are five seconds, not
// the store's one: tests of Redis trouble set their own.
func (s *RedisServer) Open(t testing.TB, opts kv.RedisOptions) *kv.Redis {
	t.Helper()
	if opts.URL == "" {
		opts.URL = s.URL()
	}
	for _, d := range []*time.Duration{&opts.DialTimeout, &opts.ReadTimeout, &opts.WriteTimeout, &opts.PoolTimeout} {
		if *d == 0 {
			*d = testTimeout
		}
	}
	if s.opts.Cluster && opts.ClusterAddrs == nil {
		opts.ClusterAddrs = []string{s.Addr()}
	}
	if s.opts.Sentinel && opts.SentinelAddrs == nil {
		opts.SentinelAddrs = []string{s.SentinelAddr()}
		opts.MasterName = "mymaster"
	}
	r, err := kv.NewRedis(opts)
	if err != nil {
		t.Fatalf("kvtest: NewRedis: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("kvtest: closing Redis store: %v", err)
		}
	})
	return r
}

// Stop shuts the server down with SIGTERM and waits until it has exited.
// With AOF its data is on disk for Start.
func (s *RedisServer) Stop() {
	s.t.Helper()
	s.halt(syscall.SIGTERM)
}

// Kill kills the server with SIGKILL and waits until it has exited.
func (s *RedisServer) Kill() {
	s.t.Helper()
	s.halt(syscall.SIGKILL)
}

// Start starts a stopped or killed server again on the same port, as
// after a restart of Redis.
func (s *RedisServer) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("kvtest: %v", err)
	}
	if s.opts.Cluster {
		s.makeCluster()
	}
}

// Pause freezes the server with SIGSTOP: connections are still accepted by
// the kernel but nothing answers, like a Redis stuck on a slow disk.
func (s *RedisServer) Pause() { s.signal(syscall.SIGSTOP) }

// Resume undoes Pause.
func (s *RedisServer) Resume() { s.signal(syscall.SIGCONT) }

func (s *RedisServer) signal(sig syscall.Signal) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		s.t.Fatalf("kvtest: redis-server is not running")
	}
	if err := s.proc.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("kvtest: signal %v to redis-server: %v", sig, err)
	}
}

func (s *RedisServer) halt(sig syscall.Signal) {
	s.t.Helper()
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	if err := p.halt(sig); err != nil {
		s.t.Fatalf("kvtest: %v", err)
	}
}

func (s *RedisServer) cleanup() {
	s.mu.Lock()
	p, sp := s.proc, s.sentinel
	s.proc, s.sentinel = nil, nil
	s.mu.Unlock()
	for _, p := range []*process{sp, p} {
		if p != nil {
			if err := p.halt(syscall.SIGKILL); err != nil {
				s.t.Errorf("kvtest: %v", err)
			}
		}
	}
}

var errAddrInUse = errors.New("address already in use")

func (s *RedisServer) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return errors.New("redis-server is already running")
	}
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--daemonize", "no",
		"--save", "",
		"--appendonly", "no",
	}
	if s.opts.AOF {
		args = append(args, "--appendonly", "yes", "--appendfsync", "everysec")
	}
	if s.opts.Password != "" {
		args = append(args, "--requirepass", s.opts.Password)
	}
	if s.opts.Cluster {
		args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(s.dir, "nodes.conf"))
	}
	p, err := launch(s.bin, filepath.Join(s.dir, "redis.log"), s.port, args)
	if err != nil {
		return err
	}
	s.proc = p
	return nil
}

// launch starts redis-server with args and waits until it answers on port.
func launch(bin, logPath string, port int, args []string) (*process, error) {
	args = append(args, "--logfile", logPath)
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{}), log: logPath}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(startDeadline)
	for {
		if answers(addr) {
			return p, nil
		}
		select {
		case <-p.exited:
			log := p.tail()
			if strings.Contains(log, "Address already in use") {
				return nil, fmt.Errorf("redis-server on %s: %w", addr, errAddrInUse)
			}
			return nil, fmt.Errorf("redis-server on %s exited at start: %s", addr, log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.halt(syscall.SIGKILL)
			return nil, fmt.Errorf("redis-server on %s did not answer within %v: %s", addr, startDeadline, p.tail())
		}
	}
}

// answers reports whether a Redis on addr replies to PING, with PONG or
// with an authentication error: either way it is serving.
func answers(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && (strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH"))
}

// halt sends sig and waits for the process to exit, killing it if it
// does not within the deadline.
func (p *process) halt(sig syscall.Signal) error {
	// A stopped process only acts on SIGTERM once continued.
	p.cmd.Process.Signal(syscall.SIGCONT)
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
		return nil
	case <-time.After(startDeadline):
	}
	p.cmd.Process.Kill()
	<-p.exited
	return fmt.Errorf("redis-server did not exit on %v within %v; killed", sig, startDeadline)
}

// tail is the end of the server's log, for error messages.
func (p *process) tail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	b = bytes.TrimSpace(b)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("kvtest: finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
