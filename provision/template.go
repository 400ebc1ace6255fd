package provision

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenancyhq/tenancy/datamodel"
	"github.com/tenancyhq/tenancy/internal/dataplane"
)

// templateRole is the NOLOGIN role a template database's tables are
// protected for while it is built; its grants are revoked before the template
// is used, so a clone grants nothing to anyone until its data_model step.
const templateRole = "tenancy_template"

// cloneRetry bounds how long a clone keeps trying a template that someone is
// connected to. PostgreSQL itself waits up to 5 s for them to leave before
// it fails the CREATE DATABASE; then the clone tries again until this has
// passed.
const cloneRetry = 12 * time.Second

// TemplateName is the name of the template database that servers keep for a
// data model.
func TemplateName(m *datamodel.Model) string { return "tenancy_tmpl_" + m.Digest() }

// createDatabase creates the tenant's database: a copy of the server's
// template database (built first if missing), or an empty database with
// NoTemplate. It is idempotent.
func (p *Provisioner) createDatabase(ctx context.Context, s *session) error {
	conn, err := s.conn(ctx, "")
	if err != nil {
		return err
	}
	db := s.t.Placement.Database
	if p.cfg.NoTemplate {
		return dataplane.CreateDatabase(ctx, conn, db, "", p.cfg.AppRole)
	}
	tmpl := TemplateName(p.cfg.Model)
	built := false
	deadline := time.Now().Add(cloneRetry)
	for {
		err := dataplane.CreateDatabase(ctx, conn, db, tmpl, p.cfg.AppRole)
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &pgErr) && pgErr.Code == "3D000" && !built: // invalid_catalog_name: no template yet
			if err := p.buildTemplate(ctx, s, tmpl); err != nil {
				return fmt.Errorf("build template database %s: %w", tmpl, err)
			}
			built = true
		case errors.As(err, &pgErr) && pgErr.Code == "55006" && time.Now().Before(deadline): // object_in_use
			// Someone stayed connected to the template: PostgreSQL will
			// not copy it until they leave.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		default:
			return err
		}
	}
}

// buildTemplate builds the template database tmpl on the session's server:
// the tenancy schema and the data model at its latest version, protected, in
// a database of a unique name that is then closed to connections, marked a
// template and renamed tmpl. The advisory lock keeps the platform's
// provisioners from building it twice at once; the rename keeps any other
// builder (another platform on the same server) from ever exposing a
// half-built template: the second rename fails and its copy is dropped.
func (p *Provisioner) buildTemplate(ctx context.Context, s *session, tmpl string) (err error) {
	conn, err := s.conn(ctx, "")
	if err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtext('tenancy.template:' || $1))`, tmpl); err != nil {
		return err
	}
	defer func() {
		_, uErr := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext('tenancy.template:' || $1))`, tmpl)
		err = errors.Join(err, uErr)
	}()
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, tmpl).Scan(&exists); err != nil || exists {
		return err
	}
	p.dropAbandonedBuilds(ctx, conn, tmpl)
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	build := tmpl + "_" + hex.EncodeToString(suffix)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+dataplane.Ident(build)); err != nil {
		return err
	}
	drop := func() {
		cctx := context.WithoutCancel(ctx)
		_, _ = conn.Exec(cctx, "ALTER DATABASE "+dataplane.Ident(build)+" WITH IS_TEMPLATE false")
		_ = dataplane.DropDatabase(cctx, conn, build)
	}
	// Marked as this installation's build in progress at once, so that a
	// build after a crash here finds it and drops it.
	if _, err := conn.Exec(ctx, "COMMENT ON DATABASE "+dataplane.Ident(build)+" IS "+dataplane.QuoteLiteral(p.templateOwner()+buildingMark)); err != nil {
		drop()
		return err
	}
	if err := p.fillTemplate(ctx, s, build); err != nil {
		drop()
		return err
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+dataplane.Ident(build)+" WITH ALLOW_CONNECTIONS false IS_TEMPLATE true"); err != nil {
		drop()
		return err
	}
	if _, err := conn.Exec(ctx, "COMMENT ON DATABASE "+dataplane.Ident(build)+" IS "+dataplane.QuoteLiteral(p.templateOwner())); err != nil {
		drop()
		return err
	}
	_, err = conn.Exec(ctx, "ALTER DATABASE "+dataplane.Ident(build)+" RENAME TO "+dataplane.Ident(tmpl))
	var pgErr *pgconn.PgError
	if err != nil {
		drop()
		// Another builder won: duplicate_database, or, when both renames run
		// at once, the unique index of pg_database itself. (The advisory
		// lock covers one database's sessions only: builders connected to
		// different databases of the server do not exclude each other.)
		if errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505") {
			return nil
		}
		return err
	}
	p.dropOldTemplates(ctx, conn, tmpl)
	return nil
}

// templateOwner is the comment on the template databases this installation
// builds: a fingerprint of the platform key, which other installations
// sharing the server do not have.
func (p *Provisioner) templateOwner() string {
	sum := sha256.Sum256(append([]byte("tenancy template owner\x00"), p.cfg.Key...))
	return "tenancy template of " + hex.EncodeToString(sum[:8])
}

// buildingMark ends the comment of a template database being built.
const buildingMark = " (building)"

// dropAbandonedBuilds drops the builds of template tmpl that this
// installation began and never finished: a process killed while building
// leaves one. It runs under tmpl's advisory lock, which every builder of
// tmpl in the installation takes, so no build of tmpl in progress is among
// them. (Builds of other templates, for other data models, may be in
// progress at the same time: they are left alone.) Failures are left for the
// next build.
func (p *Provisioner) dropAbandonedBuilds(ctx context.Context, conn *pgx.Conn, tmpl string) {
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database
		WHERE left(datname, length($2) + 1) = $2 || '_' AND shobj_description(oid, 'pg_database') = $1`, p.templateOwner()+buildingMark, tmpl)
	if err != nil {
		return
	}
	left, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return
	}
	for _, db := range left {
		_, _ = conn.Exec(ctx, "ALTER DATABASE "+dataplane.Ident(db)+" WITH IS_TEMPLATE false")
		_ = dataplane.DropDatabase(ctx, conn, db)
	}
}

// dropOldTemplates drops the templates this installation built for earlier
// versions of the data model, now that tmpl replaces them; each data model
// change would otherwise leave a database behind on every server. A template
// someone is cloning right now stays (the next build drops it): a node still
// running the older model rebuilds its template when it needs it.
func (p *Provisioner) dropOldTemplates(ctx context.Context, conn *pgx.Conn, tmpl string) {
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database
		WHERE datistemplate AND datname <> $1 AND shobj_description(oid, 'pg_database') = $2`, tmpl, p.templateOwner())
	if err != nil {
		return
	}
	old, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return
	}
	for _, db := range old {
		if _, err := conn.Exec(ctx, "ALTER DATABASE "+dataplane.Ident(db)+" WITH IS_TEMPLATE false"); err != nil {
			continue
		}
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+dataplane.Ident(db)); err != nil {
			// In use: keep it a template, for whoever is cloning it.
			_, _ = conn.Exec(context.WithoutCancel(ctx), "ALTER DATABASE "+dataplane.Ident(db)+" WITH IS_TEMPLATE true")
		}
	}
}

// fillTemplate applies the data model in database db, protected for the
// template role, then revokes that role's grants, and closes its connection.
func (p *Provisioner) fillTemplate(ctx context.Context, s *session, db string) error {
	shared, err := s.conn(ctx, "")
	if err != nil {
		return err
	}
	if _, err := shared.Exec(ctx, `DO $$ BEGIN CREATE ROLE `+dataplane.Ident(templateRole)+` NOLOGIN NOINHERIT;
		EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$`); err != nil {
		return fmt.Errorf("create role %s: %w", templateRole, err)
	}
	defer s.closeDB(ctx, db)
	return s.tx(ctx, db, func(tx pgx.Tx) error {
		if err := dataplane.BootstrapDatabase(ctx, tx, p.cfg.Key); err != nil {
			return err
		}
		if _, err := p.cfg.Model.ApplyTx(ctx, tx, datamodel.Target{Schema: DatabaseSchema, Grantee: templateRole}); err != nil {
			return err
		}
		// Revoke only where granted: a REVOKE elsewhere would leave an
		// explicit owner-only privilege list that a replayed tenant has not.
		_, err := tx.Exec(ctx, `DO $$ DECLARE r record; BEGIN
			FOR r IN SELECT c.oid::regclass AS rel, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
				WHERE n.nspname = `+dataplane.QuoteLiteral(DatabaseSchema)+` AND c.relacl::text LIKE '%'||`+dataplane.QuoteLiteral(templateRole+"=")+`||'%' LOOP
				EXECUTE format('REVOKE ALL ON %s %s FROM %I', CASE WHEN r.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, r.rel, `+dataplane.QuoteLiteral(templateRole)+`);
			END LOOP;
		END $$`)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "REVOKE ALL ON SCHEMA "+dataplane.Ident(DatabaseSchema)+" FROM "+dataplane.Ident(templateRole))
		return err
	})
}
