package kvtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// makeCluster gives the one-node cluster every hash slot and waits until
// it reports itself ready. After a restart the node remembers its slots
// from nodes.conf, and Redis refuses to assign them again: that is fine.
func (s *RedisServer) makeCluster() {
	s.t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), Password: s.opts.Password})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), startDeadline)
	defer cancel()
	err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err()
	if err != nil && !strings.Contains(err.Error(), "already busy") {
		s.t.Fatalf("kvtest: CLUSTER ADDSLOTSRANGE: %v", err)
	}
	for {
		info, err := c.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return
		}
		select {
		case <-ctx.Done():
			s.t.Fatalf("kvtest: cluster not ready within %v: %v %q", startDeadline, err, info)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// startSentinel starts a Sentinel that monitors the server as "mymaster".
// Sentinel rewrites its configuration file, so it gets one of its own.
func (s *RedisServer) startSentinel() {
	s.t.Helper()
	var p *process
	var err error
	for range 5 {
		s.sentPort = freePort(s.t)
		conf := filepath.Join(s.dir, "sentinel.conf")
		text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor mymaster 127.0.0.1 %d 1\n",
			s.sentPort, s.dir, s.port)
		if s.opts.Password != "" {
			text += fmt.Sprintf("sentinel auth-pass mymaster %s\n", s.opts.Password)
		}
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			s.t.Fatalf("kvtest: writing sentinel.conf: %v", err)
		}
		p, err = launch(s.bin, filepath.Join(s.dir, "sentinel.log"), s.sentPort, []string{conf, "--sentinel"})
		if err == nil {
			break
		}
	}
	if err != nil {
		s.t.Fatalf("kvtest: sentinel: %v", err)
	}
	s.mu.Lock()
	s.sentinel = p
	s.mu.Unlock()
}
