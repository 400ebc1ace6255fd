package provision

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/internal/dataplane"
)

// step is one recorded step of an operation. Every step is idempotent: a
// step that was started but not recorded as completed (the process died, or
// the step failed) runs again from its start.
type step struct {
	name string
	do   func(ctx context.Context) error
	// final steps finish the operation in the catalog themselves, in the
	// transaction that makes their change.
	final bool
}

// runSteps runs, in order, the steps that op has not completed, recording
// each in the catalog before and after it runs.
func (p *Provisioner) runSteps(ctx context.Context, op *catalog.Operation, steps []step) error {
	for _, s := range steps {
		if op.Completed(s.name) {
			continue
		}
		if err := p.inject(op.Kind, s.name, false); err != nil {
			return err
		}
		if err := p.cfg.Catalog.StartStep(ctx, op, s.name); err != nil {
			return err
		}
		if err := s.do(ctx); err != nil {
			return fmt.Errorf("step %s: %w", s.name, err)
		}
		if s.final {
			return nil
		}
		if err := p.cfg.Catalog.CompleteStep(ctx, op, s.name); err != nil {
			return err
		}
		if err := p.inject(op.Kind, s.name, true); err != nil {
			return err
		}
	}
	return nil
}

// inject calls the test hook, if any, around a step.
func (p *Provisioner) inject(kind catalog.OpKind, step string, after bool) error {
	if p.hook == nil {
		return nil
	}
	return p.hook(kind, step, after)
}

// session holds a run's administrative connections to one server, one per
// database, so that the steps of an operation share them.
type session struct {
	p      *Provisioner
	server *tenancy.Server
	t      *tenancy.Tenant
	conns  map[string]*pgx.Conn
}

func (p *Provisioner) session(s *tenancy.Server, t *tenancy.Tenant) *session {
	return &session{p: p, server: s, t: t, conns: map[string]*pgx.Conn{}}
}

// conn returns a connection to database db of the server (its shared
// database when db is empty), as the server's administrator.
func (s *session) conn(ctx context.Context, db string) (*pgx.Conn, error) {
	if c := s.conns[db]; c != nil && !c.IsClosed() {
		return c, nil
	}
	cfg, err := dataplane.AdminConfig(s.server, db)
	if err != nil {
		return nil, err
	}
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s/%s: %w", s.server.Name, cfg.Database, err)
	}
	s.conns[db] = c
	return c, nil
}

// tx runs fn in a transaction on database db (see conn).
func (s *session) tx(ctx context.Context, db string, fn func(pgx.Tx) error) error {
	c, err := s.conn(ctx, db)
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, c, fn)
}

// closeDB closes the connection to db, if open: a database cannot be
// dropped while connected to.
func (s *session) closeDB(ctx context.Context, db string) {
	if c := s.conns[db]; c != nil {
		c.Close(context.WithoutCancel(ctx))
		delete(s.conns, db)
	}
}

func (s *session) close(ctx context.Context) {
	for db := range s.conns {
		s.closeDB(ctx, db)
	}
}

// lockAndReload takes the tenant's operation lock and reads its open
// operation again: another process may have finished it meanwhile (op is nil
// then).
func (p *Provisioner) lockAndReload(ctx context.Context, t *tenancy.Tenant) (op *catalog.Operation, unlock func(), err error) {
	unlock, err = p.cfg.Catalog.LockTenant(ctx, t.ID, t.Slug)
	if err != nil {
		return nil, nil, err
	}
	op, err = p.cfg.Catalog.OpenOperation(ctx, t.ID)
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return op, unlock, nil
}

func jsonMarshal(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only maps of strings here
	}
	return b
}

// finishTx, in one catalog transaction tx, moves the tenant from status from
// to status to, finishes op as done and records the event, with the details
// made of the updated tenant.
func finishTx(ctx context.Context, tx pgx.Tx, op *catalog.Operation, id uuid.UUID, to, from tenancy.Status,
	event catalog.EventKind, details func(*tenancy.Tenant) any) (*tenancy.Tenant, error) {
	t, err := catalog.SetStatusTx(ctx, tx, id, to, from)
	if err != nil {
		return nil, err
	}
	if err := catalog.FinishOperationTx(ctx, tx, op, catalog.OpDone); err != nil {
		return nil, err
	}
	err = catalog.RecordEventTx(ctx, tx, &catalog.Event{Kind: event, TenantID: t.ID, TenantSlug: t.Slug}, details(t))
	return t, err
}

// finalStep is the last step of an operation: finishTx in a catalog
// transaction of its own, storing the updated tenant in *out.
func (p *Provisioner) finalStep(name string, op *catalog.Operation, to, from tenancy.Status, event catalog.EventKind,
	details func(*tenancy.Tenant) any, out **tenancy.Tenant) step {
	return step{name: name, final: true, do: func(ctx context.Context) error {
		return p.cfg.Catalog.Tx(ctx, func(tx pgx.Tx) error {
			t, err := finishTx(ctx, tx, op, op.TenantID, to, from, event, details)
			*out = t
			return err
		})
	}}
}

// recordFailure records that op stopped with err, and returns err (with a
// note if recording failed).
func (p *Provisioner) recordFailure(ctx context.Context, op *catalog.Operation, err error) error {
	if fErr := p.cfg.Catalog.FailOperation(ctx, op, err); fErr != nil {
		return fmt.Errorf("%w (and recording the failure failed: %v)", err, fErr)
	}
	return err
}
