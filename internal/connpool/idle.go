package connpool

import "time"

// reap closes connections idle for longer than m.idleTimeout, each as soon as
// its time is up, until m.stop is closed. The LRU list is ordered by release
// time, so only its head needs a timer.
func (m *Manager[C]) reap() {
	defer close(m.reaperDone)
	timer := time.NewTimer(m.idleTimeout)
	defer timer.Stop()
	for {
		m.mu.Lock()
		now := time.Now()
		var expired []*conn[C]
		for c := m.lruHead; c != nil && now.Sub(c.idleSince) >= m.idleTimeout; c = m.lruHead {
			m.unlinkIdleLocked(c)
			m.closing++
			expired = append(expired, c)
		}
		next := time.Duration(-1)
		if c := m.lruHead; c != nil {
			next = c.idleSince.Add(m.idleTimeout).Sub(now)
		}
		m.mu.Unlock()
		m.closeIdle(expired)

		if next >= 0 {
			timer.Reset(next)
		} else {
			timer.Stop()
		}
		select {
		case <-m.stop:
			return
		case <-timer.C:
		case <-m.kick:
		}
	}
}
