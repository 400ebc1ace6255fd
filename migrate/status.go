package migrate

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy/datamodel"
)

// TargetStatus is one target's state against the model.
type TargetStatus struct {
	Target Target `json:"target"`
	// State is empty when Err is set.
	State datamodel.State `json:"state"`
	// Summary is one word: current, behind, ahead, drift, stale (prepared by
	// another version of the library), skipped or error.
	Summary string `json:"summary"`
	// Reason says why a target is skipped.
	Reason string `json:"reason,omitempty"`
	Err    error  `json:"-"`
	Error  string `json:"error,omitempty"`
}

// Status reads every target's version, pending migrations and drift, in
// parallel under the same bounds as Up, and returns them in target order. It
// changes nothing and takes no lock.
func (m *Migrator) Status(ctx context.Context) ([]TargetStatus, error) {
	targets, err := m.targets(ctx)
	if err != nil {
		return nil, err
	}
	r := &run{m: m, opts: &UpOpts{}, report: &Report{}, inServer: map[string]int{}}
	defer r.closePools()
	out := make([]TargetStatus, len(targets))
	var todo []Target
	index := map[string]int{}
	for i, t := range targets {
		out[i].Target = t
		if t.skip != "" {
			out[i].Summary, out[i].Reason = "skipped", t.skip
			continue
		}
		index[t.key()] = i
		todo = append(todo, t)
	}
	read := func(t Target) any {
		var st datamodel.State
		err := r.withConn(ctx, t, func(conn *pgx.Conn) error {
			return pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) (err error) {
				st, err = m.cfg.Model.StateTx(ctx, tx, t.Schema)
				return err
			})
		})
		return TargetStatus{Target: t, State: st, Err: err}
	}
	schedule(ctx, todo, m.cfg.Parallel, m.cfg.PerServer, read, func(t Target, v any) bool {
		st := v.(TargetStatus)
		st.Summary = summary(&st)
		out[index[t.key()]] = st
		return false
	})
	return out, ctx.Err()
}

func summary(st *TargetStatus) string {
	switch {
	case st.Err != nil:
		st.Error = st.Err.Error()
		return "error"
	case len(st.State.Drift) > 0:
		return "drift"
	case len(st.State.Ahead) > 0:
		return "ahead"
	case len(st.State.Pending) > 0:
		return "behind"
	case st.State.Stale:
		return "stale"
	}
	return "current"
}
