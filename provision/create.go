package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/datamodel"
	"github.com/tenancyhq/tenancy/internal/dataplane"
)

// The steps of a provisioning, and the step a rollback records.
const (
	stepRole      = "role"
	stepSchema    = "schema"
	stepDatabase  = "database"
	stepDataModel = "data_model"
	stepActivate  = "activate"
	stepRollback  = "rollback"
)

// maxNameLen is the most bytes a tenant's display name may have.
const maxNameLen = 200

// CreateOpts describe a new tenant.
type CreateOpts struct {
	Slug  string        // required; see tenancy.ValidateSlug
	Name  string        // display name, at most 200 bytes of text; default: the slug
	Tier  tenancy.Tier  // default "free"; see tenancy.ValidateName
	Model tenancy.Model // required
	// Server places the tenant on the named server. Empty: a server in
	// Region, else any server; the least loaded (tenants per capacity) among
	// those with room.
	Server string
	// Region prefers servers of this region when Server is empty.
	Region string
}

// Create creates a tenant and its storage, and returns it active.
//
// If a tenant with the slug is still provisioning (an earlier Create died or
// failed), Create continues it, provided the model and server asked for are
// the same; a tenant in any other status is a CodeConflict. When a step fails
// during a first attempt, Create rolls back what it made and returns the
// step's error; if the rollback fails too, the tenant stays provisioning for
// Continue or Rollback.
func (p *Provisioner) Create(ctx context.Context, opts *CreateOpts) (*tenancy.Tenant, error) {
	if opts == nil {
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "no tenant described")
	}
	if err := tenancy.ValidateSlug(opts.Slug); err != nil {
		return nil, err
	}
	model, err := tenancy.ParseModel(string(opts.Model))
	if err != nil {
		return nil, err
	}
	// PostgreSQL text takes neither NUL nor invalid UTF-8: refused here, such
	// a name would fail the catalog's INSERT as an internal error.
	if len(opts.Name) > maxNameLen || strings.ContainsRune(opts.Name, 0) || !utf8.ValidString(opts.Name) {
		return nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "name", "a tenant's name must be valid UTF-8 text of at most %d bytes, without NUL", maxNameLen)
	}
	if opts.Tier != "" { // as SetTier checks it
		if err := tenancy.ValidateName("tier", string(opts.Tier)); err != nil {
			return nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "tier", "%s", err.Error())
		}
	}
	existing, err := p.cfg.Catalog.TenantBySlug(ctx, opts.Slug)
	switch {
	case err == nil:
		return p.createAgain(ctx, existing, opts, model)
	case !errors.Is(err, tenancy.ErrNotFound):
		return nil, err
	}
	server, err := p.place(ctx, opts)
	if err != nil {
		return nil, err
	}
	t := &tenancy.Tenant{ID: uuid.New(), Slug: opts.Slug, Name: opts.Name, Tier: opts.Tier, Model: model, Status: tenancy.StatusProvisioning}
	if t.Name == "" {
		t.Name = t.Slug
	}
	if t.Tier == "" {
		t.Tier = "free"
	}
	dsn, err := pgx.ParseConfig(server.DSN)
	if err != nil {
		return nil, fmt.Errorf("server %q: %w", server.Name, err)
	}
	t.Placement = placementFor(server.Name, dsn.Database, t)

	unlock, err := p.cfg.Catalog.LockTenant(ctx, t.ID, t.Slug)
	if err != nil {
		return nil, err
	}
	defer unlock()
	op := &catalog.Operation{Kind: catalog.OpProvision, TenantID: t.ID, TenantSlug: t.Slug}
	err = p.cfg.Catalog.Tx(ctx, func(tx pgx.Tx) error {
		if err := catalog.CreateTenantTx(ctx, tx, t); err != nil {
			return err
		}
		return catalog.StartOperationTx(ctx, tx, op)
	})
	if err != nil {
		return nil, err
	}
	return p.provision(ctx, server, t, op, true)
}

// createAgain continues the provisioning of existing, a tenant with the slug
// that Create was asked for.
func (p *Provisioner) createAgain(ctx context.Context, existing *tenancy.Tenant, opts *CreateOpts, model tenancy.Model) (*tenancy.Tenant, error) {
	if existing.Status != tenancy.StatusProvisioning {
		return nil, tenancy.FieldErrorf(tenancy.CodeConflict, "slug", "tenant %q already exists", existing.Slug)
	}
	if existing.Model != model || (opts.Server != "" && opts.Server != existing.Placement.Server) {
		return nil, tenancy.Errorf(tenancy.CodeConflict, "tenant %q is being provisioned in the %s model on server %q: continue or roll that back first",
			existing.Slug, existing.Model, existing.Placement.Server)
	}
	return p.Continue(ctx, existing.Slug)
}

// Continue finishes the tenant's unfinished operation (a provisioning or a
// purge) from the step where it stopped, and returns the tenant. It fails with
// CodeConflict when the tenant has no unfinished operation, when another
// process is working on it, or when a rollback of it was started (run
// Rollback again instead).
func (p *Provisioner) Continue(ctx context.Context, slug string) (*tenancy.Tenant, error) {
	t, op, err := p.openOperation(ctx, slug)
	if err != nil {
		return nil, err
	}
	if op.Step == stepRollback {
		return nil, tenancy.Errorf(tenancy.CodeConflict, "the provisioning of tenant %q is being rolled back: run the rollback again to finish it", slug)
	}
	op, unlock, err := p.lockAndReload(ctx, t)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if op == nil { // finished by another process meanwhile
		return p.cfg.Catalog.TenantBySlug(ctx, slug)
	}
	server, err := p.cfg.Catalog.Server(ctx, t.Placement.Server)
	if err != nil {
		return nil, err
	}
	switch op.Kind {
	case catalog.OpProvision:
		if op.Step == stepRollback {
			return nil, tenancy.Errorf(tenancy.CodeConflict, "the provisioning of tenant %q is being rolled back: run the rollback again to finish it", slug)
		}
		return p.provision(ctx, server, t, op, false)
	case catalog.OpPurge:
		return p.purge(ctx, server, t, op)
	}
	return nil, tenancy.Errorf(tenancy.CodeConflict, "tenant %q has an unfinished %s, which this code cannot continue", slug, op.Kind)
}

// Rollback undoes the tenant's unfinished provisioning: it drops what was
// created on the server, then removes the tenant's catalog row. It fails with
// CodeConflict when the tenant has no unfinished provisioning (a purge cannot
// be rolled back: Continue it).
func (p *Provisioner) Rollback(ctx context.Context, slug string) error {
	t, op, err := p.openOperation(ctx, slug)
	if err != nil {
		return err
	}
	if op.Kind != catalog.OpProvision {
		return tenancy.Errorf(tenancy.CodeConflict, "tenant %q has an unfinished %s, which cannot be rolled back: continue it", slug, op.Kind)
	}
	op, unlock, err := p.lockAndReload(ctx, t)
	if err != nil {
		return err
	}
	defer unlock()
	if op == nil || op.Kind != catalog.OpProvision {
		return tenancy.Errorf(tenancy.CodeConflict, "tenant %q has no unfinished provisioning any more", slug)
	}
	server, err := p.cfg.Catalog.Server(ctx, t.Placement.Server)
	if err != nil {
		return err
	}
	sess := p.session(server, t)
	defer sess.close(ctx)
	return p.rollback(ctx, sess, op)
}

// openOperation returns the tenant with the slug and its open operation, or
// an error with CodeConflict when it has none.
func (p *Provisioner) openOperation(ctx context.Context, slug string) (*tenancy.Tenant, *catalog.Operation, error) {
	if err := tenancy.ValidateSlug(slug); err != nil {
		return nil, nil, err
	}
	t, err := p.cfg.Catalog.TenantBySlug(ctx, slug)
	if err != nil {
		return nil, nil, err
	}
	op, err := p.cfg.Catalog.OpenOperation(ctx, t.ID)
	if err != nil {
		return nil, nil, err
	}
	if op == nil {
		return nil, nil, tenancy.Errorf(tenancy.CodeConflict, "tenant %q (%s) has no unfinished operation", slug, t.Status)
	}
	return t, op, nil
}

// provision runs the provisioning's remaining steps. When one fails and
// rollbackOnError is set, it rolls back; otherwise the operation is recorded
// as failed, for Continue or Rollback.
func (p *Provisioner) provision(ctx context.Context, server *tenancy.Server, t *tenancy.Tenant, op *catalog.Operation, rollbackOnError bool) (*tenancy.Tenant, error) {
	sess := p.session(server, t)
	defer sess.close(ctx)
	var active *tenancy.Tenant
	err := p.runSteps(ctx, op, p.provisionSteps(sess, op, &active))
	if err == nil {
		return active, nil
	}
	cctx := context.WithoutCancel(ctx)
	if rollbackOnError {
		rbErr := p.rollback(cctx, sess, op)
		if rbErr == nil {
			return nil, fmt.Errorf("provision tenant %q: %w", t.Slug, err)
		}
		err = fmt.Errorf("%w (and rolling back failed: %v)", err, rbErr)
	}
	return nil, fmt.Errorf("provision tenant %q: %w; it stays provisioning: continue or roll back", t.Slug, p.recordFailure(cctx, op, err))
}

// provisionSteps are the steps of a provisioning in the tenant's model. The
// activate step stores the active tenant in *active.
func (p *Provisioner) provisionSteps(s *session, op *catalog.Operation, active **tenancy.Tenant) []step {
	t := s.t
	activate := p.finalStep(stepActivate, op, tenancy.StatusActive, tenancy.StatusProvisioning, catalog.EventTenantCreated,
		func(a *tenancy.Tenant) any {
			return map[string]any{"model": a.Model, "tier": a.Tier, "placement": a.Placement}
		}, active)
	role := step{name: stepRole, do: func(ctx context.Context) error {
		conn, err := s.conn(ctx, "")
		if err != nil {
			return err
		}
		if t.Model == tenancy.ModelSchema {
			err = refuseExisting(ctx, conn, s.server, "schema", t.Placement.Schema, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`)
		} else {
			err = refuseExisting(ctx, conn, s.server, "database", t.Placement.Database, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`)
		}
		if err != nil {
			return err
		}
		return dataplane.EnsureTenantRole(ctx, conn, t.Role(), p.cfg.AppRole)
	}}
	target := datamodel.Target{Schema: t.Placement.Schema, Grantee: t.Role(), Tenant: t.ID}
	switch t.Model {
	case tenancy.ModelSchema:
		return []step{role, {name: stepSchema, do: func(ctx context.Context) error {
			return s.tx(ctx, "", func(tx pgx.Tx) error {
				_, err := p.cfg.Model.ApplyTx(ctx, tx, target)
				return err
			})
		}}, activate}
	case tenancy.ModelDatabase:
		return []step{role, {name: stepDatabase, do: func(ctx context.Context) error {
			return p.createDatabase(ctx, s)
		}}, {name: stepDataModel, do: func(ctx context.Context) error {
			return s.tx(ctx, t.Placement.Database, func(tx pgx.Tx) error {
				if err := dataplane.BootstrapDatabase(ctx, tx, p.cfg.Key); err != nil {
					return err
				}
				_, err := p.cfg.Model.ApplyTx(ctx, tx, target)
				return err
			})
		}}, activate}
	}
	return []step{activate}
}

// rollback undoes a provisioning: the storage (only if the role step, which
// checks that its name was free, completed), the role, then the catalog row
// with the operation's end, in one catalog transaction.
func (p *Provisioner) rollback(ctx context.Context, s *session, op *catalog.Operation) error {
	t := s.t
	if err := p.cfg.Catalog.StartStep(ctx, op, stepRollback); err != nil {
		return err
	}
	if t.Model != tenancy.ModelShared {
		conn, err := s.conn(ctx, "")
		if err != nil {
			return err
		}
		if op.Completed(stepRole) {
			if err := p.dropStorage(ctx, s); err != nil {
				return err
			}
		}
		if err := dataplane.DropRole(ctx, conn, t.Role()); err != nil {
			return err
		}
	}
	return p.cfg.Catalog.Tx(ctx, func(tx pgx.Tx) error {
		if err := catalog.DeleteTenantRowTx(ctx, tx, t.ID); err != nil {
			return err
		}
		if err := catalog.FinishOperationTx(ctx, tx, op, catalog.OpRolledBack); err != nil {
			return err
		}
		return catalog.RecordEventTx(ctx, tx, &catalog.Event{Kind: catalog.EventRolledBack, TenantID: t.ID, TenantSlug: t.Slug},
			map[string]any{"model": t.Model, "placement": t.Placement, "completed_steps": op.Steps})
	})
}

// dropStorage drops the tenant's schema or database, if it exists.
func (p *Provisioner) dropStorage(ctx context.Context, s *session) error {
	t := s.t
	switch t.Model {
	case tenancy.ModelSchema:
		conn, err := s.conn(ctx, "")
		if err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+dataplane.Ident(t.Placement.Schema)+" CASCADE"); err != nil {
			return fmt.Errorf("drop schema %s: %w", t.Placement.Schema, err)
		}
	case tenancy.ModelDatabase:
		s.closeDB(ctx, t.Placement.Database)
		conn, err := s.conn(ctx, "")
		if err != nil {
			return err
		}
		return dataplane.DropDatabase(ctx, conn, t.Placement.Database)
	}
	return nil
}

func placementFor(server, sharedDB string, t *tenancy.Tenant) tenancy.Placement {
	name := storageName(t.Slug)
	switch t.Model {
	case tenancy.ModelSchema:
		return tenancy.Placement{Server: server, Database: sharedDB, Schema: name}
	case tenancy.ModelDatabase:
		return tenancy.Placement{Server: server, Database: name, Schema: DatabaseSchema}
	default:
		return tenancy.Placement{Server: server, Database: sharedDB, Schema: SharedSchema}
	}
}

// maxIdentifier is the longest name PostgreSQL keeps (NAMEDATALEN - 1 bytes):
// it cuts a longer one silently, in CREATE and in every later statement.
const maxIdentifier = 63

// storageName is the name of a tenant's schema (schema model) or database
// (database model): "tenant_" and the slug with its hyphens as underscores.
// Where that is longer than PostgreSQL keeps, it is cut and ends with "__"
// and 14 hex digits of the slug's SHA-256: cut by PostgreSQL instead, two
// slugs alike in their first 56 bytes would name the same storage, and the
// catalog would record a name that does not exist. A slug has no "--", so
// a name without the hash never contains "__" and never equals one with it.
func storageName(slug string) string {
	name := "tenant_" + strings.ReplaceAll(slug, "-", "_")
	if len(name) <= maxIdentifier {
		return name
	}
	sum := sha256.Sum256([]byte(slug))
	suffix := "__" + hex.EncodeToString(sum[:7])
	return name[:maxIdentifier-len(suffix)] + suffix
}
