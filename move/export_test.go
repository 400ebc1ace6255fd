package move

// SetHook makes m call h after each step (started, prepared, bulk, copied,
// fenced, marked, switched, dropped, done); an error from h stops the move
// there, with no roll back, as if the process had been killed. After the
// switch's commit h is called with "switch-answer" too: an error then is
// taken as the switch's own, as if the commit's answer had been lost.
func SetHook(m *Mover, h func(step string) error) { m.hook = h }

// ErrStop is what a move stopped by a hook returns, wrapped.
var ErrStop = errStop
