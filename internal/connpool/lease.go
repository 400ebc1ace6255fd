package connpool

// Lease is a connection handed out by Acquire. It is a small value: copy it
// freely, but call Release or Destroy exactly once per Acquire (further calls,
// from any copy, do nothing). The zero Lease holds no connection.
type Lease[C any] struct {
	c   *conn[C]
	gen uint64
}

// Conn returns the leased connection, or the zero C for the zero Lease. It
// must not be used after Release or Destroy.
func (l Lease[C]) Conn() C {
	if l.c == nil {
		var zero C
		return zero
	}
	return l.c.v
}

// Release gives the connection back: it is kept idle for the next caller if
// Config.Reusable allows (and neither CloseKey nor Close was called since it
// was dialed), else it is closed. Releasing twice does nothing.
func (l Lease[C]) Release() {
	if l.c != nil {
		l.c.m.put(l.c, l.gen, false)
	}
}

// Destroy closes the connection instead of keeping it, for use after an error
// that may have left it broken. After Release or Destroy, it does nothing.
func (l Lease[C]) Destroy() {
	if l.c != nil {
		l.c.m.put(l.c, l.gen, true)
	}
}
