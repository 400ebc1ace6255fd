package ratelimit_test

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenancyhq/tenancy/internal/redistest"
	"github.com/tenancyhq/tenancy/ratelimit"
)

// blackhole is a TCP proxy to a Redis server that can stop forwarding without
// closing anything: a network partition, where connections stay open and
// requests go unanswered until the client's timeouts, instead of the refused
// dials of a stopped server.
type blackhole struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	frozen bool
	thaw   chan struct{} // closed when the partition ends
}

func newBlackhole(t *testing.T, target string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, target: target, thaw: make(chan struct{})}
	close(b.thaw)
	var conns sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			open = append(open, c, up)
			mu.Unlock()
			conns.Add(2)
			go func() { defer conns.Done(); b.pipe(up, c) }()
			go func() { defer conns.Done(); b.pipe(c, up) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		b.set(false)
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		conns.Wait()
	})
	return b
}

// pipe copies src to dst, holding each chunk while the partition lasts.
func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			b.mu.Lock()
			thaw := b.thaw
			b.mu.Unlock()
			<-thaw
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				dst.Close()
			}
			return
		}
	}
}

// set starts (true) or ends (false) the partition.
func (b *blackhole) set(frozen bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if frozen == b.frozen {
		return
	}
	b.frozen = frozen
	if frozen {
		b.thaw = make(chan struct{})
	} else {
		close(b.thaw)
	}
}

// TestRedisPartition: Redis stops answering without refusing connections.
// Failing open, the decision that meets the partition waits for the client's
// read timeout and falls back; while it lasts, one decision per RetryInterval
// tries Redis again and pays that timeout, the others fall back at once; when
// it ends, decisions go back to Redis by themselves.
func TestRedisPartition(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := redistest.Start(t)
	bh := newBlackhole(t, srv.Addr())
	client := redis.NewClient(&redis.Options{
		Addr:        bh.ln.Addr().String(),
		DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond,
		MaxRetries: -1, DialerRetries: 1,
	})
	t.Cleanup(func() { _ = client.Close() })
	l, err := ratelimit.NewRedis(ratelimit.RedisConfig{Client: client, RetryInterval: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	lim := ratelimit.PerSecond(1000, 1000)
	if _, err := l.Allow(ctx, "k", lim); err != nil || l.Stats().Down {
		t.Fatalf("before the partition: %v %+v", err, l.Stats())
	}

	bh.set(true)
	if res, err := l.Allow(ctx, "k", lim); err != nil || !res.Allowed || !l.Stats().Down || l.Stats().Failures != 1 {
		t.Fatalf("the decision that met the partition: %+v, %v, %+v; want allowed by the fallback, Redis taken as down", res, err, l.Stats())
	}
	time.Sleep(350 * time.Millisecond) // past RetryInterval: Redis is due to be tried again
	wantOneProbe(t, l, "during the partition")

	bh.set(false)
	deadline := time.Now().Add(5 * time.Second)
	for l.Stats().Down {
		if time.Now().After(deadline) {
			t.Fatalf("not back on Redis 5 s after the partition ended: %+v", l.Stats())
		}
		if _, err := l.Allow(ctx, "k", lim); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
