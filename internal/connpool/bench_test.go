package connpool

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkAcquireRelease measures the hot path: the same key, an idle
// connection available.
func BenchmarkAcquireRelease(b *testing.B) {
	s := newFakeServer()
	m, err := New(s.config(10, 0))
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	l, err := m.Acquire(ctx, "tenant_db")
	if err != nil {
		b.Fatal(err)
	}
	l.Release()
	b.ReportAllocs()
	for b.Loop() {
		l, err := m.Acquire(ctx, "tenant_db")
		if err != nil {
			b.Fatal(err)
		}
		l.Release()
	}
}

// BenchmarkAcquireReleaseParallel is the hot path from all CPUs, each
// goroutine on its own key.
func BenchmarkAcquireReleaseParallel(b *testing.B) {
	s := newFakeServer()
	m, err := New(s.config(64, 0))
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	b.ReportAllocs()
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		key := fmt.Sprintf("db%d", n.Add(1))
		ctx := context.Background()
		for pb.Next() {
			l, err := m.Acquire(ctx, key)
			if err != nil {
				b.Error(err)
				return
			}
			l.Release()
		}
	})
}

// BenchmarkEvict measures the slow path over a full budget: every Acquire is
// for a key with no idle connection, so it closes the least recently used idle
// connection of another key and dials.
func BenchmarkEvict(b *testing.B) {
	s := newFakeServer()
	m, err := New(s.config(10, 0))
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	keys := make([]string, 100)
	for i := range keys {
		keys[i] = fmt.Sprintf("db%d", i)
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l, err := m.Acquire(ctx, keys[i%len(keys)])
		if err != nil {
			b.Fatal(err)
		}
		l.Release()
		i++
	}
}
