package connpool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// fakeConn stands in for a database connection: the tests check the pool's
// policy, not SQL.
type fakeConn struct {
	id     int
	key    string
	closed atomic.Bool
	broken atomic.Bool // not reusable
}

func (c *fakeConn) String() string { return fmt.Sprintf("%s#%d", c.key, c.id) }

var errDialRefused = errors.New("dial refused")

// fakeServer counts the connections it holds open the way a database server
// would: from the start of a dial to the end of a close.
type fakeServer struct {
	// hook, if set, runs at the start of every dial (without locks held).
	hook func(ctx context.Context, key string) error
	// refuse lists keys whose dials fail.
	refuse map[string]bool

	mu           sync.Mutex
	nextID       int
	conns        []*fakeConn
	open         int
	maxOpen      int
	perKey       map[string]int
	maxPerKey    int
	dials        int
	closes       int
	doubleCloses int
}

func newFakeServer() *fakeServer {
	return &fakeServer{perKey: map[string]int{}, refuse: map[string]bool{}}
}

func (s *fakeServer) config(budget, maxPerKey int) Config[*fakeConn] {
	return Config[*fakeConn]{
		Budget:    budget,
		MaxPerKey: maxPerKey,
		Dial:      s.dial,
		Close:     s.close,
		Reusable:  func(c *fakeConn) bool { return !c.broken.Load() && !c.closed.Load() },
	}
}

func (s *fakeServer) dial(ctx context.Context, key string) (*fakeConn, error) {
	s.mu.Lock()
	s.dials++
	s.open++
	s.maxOpen = max(s.maxOpen, s.open)
	s.perKey[key]++
	s.maxPerKey = max(s.maxPerKey, s.perKey[key])
	refused := s.refuse[key]
	s.mu.Unlock()

	err := error(nil)
	if s.hook != nil {
		err = s.hook(ctx, key)
	}
	if err == nil && refused {
		err = errDialRefused
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.open--
		s.perKey[key]--
		return nil, err
	}
	s.nextID++
	c := &fakeConn{id: s.nextID, key: key}
	s.conns = append(s.conns, c)
	return c, nil
}

func (s *fakeServer) close(c *fakeConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !c.closed.CompareAndSwap(false, true) {
		s.doubleCloses++
		return
	}
	s.closes++
	s.open--
	s.perKey[c.key]--
}

type serverStats struct {
	open, maxOpen, maxPerKey, dials, closes, doubleCloses int
}

func (s *fakeServer) stats() serverStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return serverStats{s.open, s.maxOpen, s.maxPerKey, s.dials, s.closes, s.doubleCloses}
}

func (s *fakeServer) openFor(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.perKey[key]
}
