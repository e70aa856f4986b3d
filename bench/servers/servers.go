// Package servers starts the processes a benchmark measures: the
// appliance's static binary, a hello-world net/http server (the machine's
// ceiling), a redis-server and the standalone sandbox, each on a free
// loopback port, and reads their memory from /proc.
package servers

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Proc is a server process a benchmark started.
type Proc struct {
	Cmd  *exec.Cmd
	Base string // http://host:port
	Addr string // host:port
	// Log is the file its stderr goes to.
	Log string
}

// Stop interrupts the process and waits for it, killing it after ten
// seconds.
func (p *Proc) Stop() {
	p.Cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { p.Cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.Cmd.Process.Kill()
		<-done
	}
}

// Pid is the process id, for /proc.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Build builds the appliance as it is shipped (static, CGO_ENABLED=0) from
// the module in the current directory into dir.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "wxappliance")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build: %w", err)
	}
	return bin, nil
}

// FreeAddr is a loopback address nobody listens on at the moment.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// start runs bin with args, stderr (and stdout) to logPath, and waits
// until GET base+probe answers 200.
func start(bin string, args []string, addr, probe, logPath string) (*Proc, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{Cmd: cmd, Base: "http://" + addr, Addr: addr, Log: logPath}
	if err := WaitUp(p.Base + probe); err != nil {
		p.Stop()
		return nil, fmt.Errorf("%s: %w (log: %s)", filepath.Base(bin), err, tail(logPath))
	}
	return p, nil
}

// Appliance writes config (with %[1]s standing for the listen address) to
// dir/config.toml and serves it with bin, logging to dir/appliance.log.
// It returns once /healthz answers.
func Appliance(bin, dir, config string) (*Proc, error) {
	addr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(config, addr)), 0o600); err != nil {
		return nil, err
	}
	return start(bin, []string{"serve", "-config", path}, addr, "/healthz", filepath.Join(dir, "appliance.log"))
}

// Sandbox serves the fake WeChat alone (wxappliance sandbox -listen), for
// several appliances to share.
func Sandbox(bin, dir string) (*Proc, error) {
	addr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	return start(bin, []string{"sandbox", "-listen", addr}, addr, "/_control/stats", filepath.Join(dir, "sandbox.log"))
}

// helloArg is the first argument that makes a benchmark's own binary serve
// the hello world (see ServeHelloIfAsked).
const helloArg = "serve-hello-world"

// Hello starts the ceiling: the benchmark's own executable serving one
// handler that writes 17 bytes of JSON. The benchmark's main must call
// ServeHelloIfAsked first.
func Hello(dir string) (*Proc, error) {
	addr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return start(self, []string{helloArg, addr}, addr, "/", filepath.Join(dir, "hello.log"))
}

// ServeHelloIfAsked serves the hello world and exits when the process was
// started by Hello; otherwise it returns at once.
func ServeHelloIfAsked() {
	if len(os.Args) < 3 || os.Args[1] != helloArg {
		return
	}
	srv := &http.Server{Addr: os.Args[2], ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"hello":"world"}`)
	})}
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Redis starts Debian's redis-server on a free loopback port with its
// files in dir and no persistence (nothing in the benchmark is worth
// keeping), and returns its redis:// URL once it answers PING.
func Redis(dir string) (*Proc, string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, "", errors.New("redis-server not installed: apt-get install redis-server")
	}
	addr, err := FreeAddr()
	if err != nil {
		return nil, "", err
	}
	host, port, _ := net.SplitHostPort(addr)
	logPath := filepath.Join(dir, "redis.log")
	cmd := exec.Command(bin, "--bind", host, "--port", port, "--dir", dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", logPath)
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	p := &Proc{Cmd: cmd, Addr: addr, Log: logPath}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := ping(addr); err == nil {
			return p, "redis://" + addr + "/0", nil
		} else if time.Now().After(deadline) {
			p.Stop()
			return nil, "", fmt.Errorf("redis-server did not answer PING within 30s: %v (log: %s)", err, tail(logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// WaitUp polls url until it answers 200, for up to 30 seconds (the machine
// may be busy).
func WaitUp(url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer 200 within 30s", url)
}

// tail is the end of a log file, for an error message.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// Memory is what /proc says of a process's memory: the high-water resident
// set, and the current split between anonymous memory (Go heap, stacks)
// and file pages (Badger's memory-mapped files, which the kernel can drop
// under pressure).
type Memory struct{ Peak, Anon, File int64 }

// MiB formats n bytes in MiB.
func MiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// ReadMemory reads /proc/pid/status.
func ReadMemory(pid int) (Memory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	for _, line := range strings.Split(string(data), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var kb int64
		fmt.Sscanf(strings.TrimSpace(val), "%d kB", &kb)
		switch key {
		case "VmHWM":
			m.Peak = kb * 1024
		case "RssAnon":
			m.Anon = kb * 1024
		case "RssFile":
			m.File = kb * 1024
		}
	}
	if m.Peak == 0 {
		return Memory{}, errors.New("no VmHWM in /proc status")
	}
	return m, nil
}

// ResetPeak resets the process's VmHWM to its current RSS (Linux's
// clear_refs with 5), so that a peak can be read per phase of a run. It
// needs to own the process; it fails harmlessly elsewhere.
func ResetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// LoadAverage is /proc/loadavg's three load averages.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// WaitQuiet waits until the 1-minute load average is below max, or for
// at most limit, saying so on stderr: the machine may be shared, and a
// measurement taken while others run tests measures them. A max of 0 does
// not wait.
func WaitQuiet(max float64, limit time.Duration) {
	if max <= 0 {
		return
	}
	deadline := time.Now().Add(limit)
	for said := false; ; said = true {
		var one float64
		fmt.Sscanf(LoadAverage(), "%f", &one)
		if one < max {
			return
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "load average still %s after %v; measuring anyway\n", LoadAverage(), limit)
			return
		}
		if !said {
			fmt.Fprintf(os.Stderr, "waiting for the load average (%s) to drop below %g\n", LoadAverage(), max)
		}
		time.Sleep(5 * time.Second)
	}
}
