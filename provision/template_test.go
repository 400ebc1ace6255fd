package provision_test

import (
	"context"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/datamodel"
	"github.com/tenancyhq/tenancy/examples/crm"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/provision"
)

// describe lists what protects the tenant tables of a database-model
// tenant's database — policies, Row-Level Security flags, triggers,
// constraints, indexes, privileges, the tenancy functions and the platform
// key — with the tenant's id and role written as TENANT and ROLE, so that two
// tenants' databases compare equal when they are protected alike.
func (b *testBundle) describe(t *testing.T, tn *tenancy.Tenant) []string {
	t.Helper()
	ctx := context.Background()
	conn := b.AdminConn(t, tn)
	rows, err := conn.Query(ctx, `
		SELECT 'policy ' || tablename || ' ' || policyname || ' ' || permissive || ' ' || array_to_string(roles, ',') || ' ' || cmd
			|| ' ' || coalesce(qual, '') || ' ' || coalesce(with_check, '') FROM pg_policies WHERE schemaname IN ('tenant', 'tenancy')
		UNION ALL SELECT 'rls ' || n.nspname || '.' || c.relname || ' ' || c.relrowsecurity || ' ' || c.relforcerowsecurity
			|| ' ' || coalesce(c.relacl::text, '') || ' owner ' || pg_get_userbyid(c.relowner)
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('tenant', 'tenancy') AND c.relkind IN ('r', 'S', 'p', 'v')
		UNION ALL SELECT 'trigger ' || pg_get_triggerdef(g.oid) || ' ' || g.tgenabled::text FROM pg_trigger g
			JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('tenant', 'tenancy') AND NOT g.tgisinternal
		UNION ALL SELECT 'constraint ' || c.relname || ' ' || k.conname || ' ' || pg_get_constraintdef(k.oid) FROM pg_constraint k
			JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('tenant', 'tenancy')
		UNION ALL SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM pg_index i
			JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('tenant', 'tenancy')
		UNION ALL SELECT 'schema ' || nspname || ' ' || coalesce(nspacl::text, '') || ' owner ' || pg_get_userbyid(nspowner)
			FROM pg_namespace WHERE nspname IN ('tenant', 'tenancy', 'public')
		UNION ALL SELECT 'function ' || p.oid::regprocedure || ' ' || md5(p.prosrc) || ' ' || p.prosecdef || ' ' || coalesce(p.proacl::text, '')
			|| ' ' || coalesce(array_to_string(p.proconfig, ','), '') || ' ' || coalesce(obj_description(p.oid, 'pg_proc'), '')
			FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'tenancy'
		UNION ALL SELECT 'key ' || md5(ipad) || md5(opad) FROM tenancy.key
		UNION ALL SELECT 'migration ' || version || ' ' || name || ' ' || checksum FROM tenant.tenancy_migrations
		UNION ALL SELECT 'default acl ' || defaclacl::text FROM pg_default_acl`)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range lines {
		l = strings.ReplaceAll(l, tn.ID.String(), "TENANT")
		lines[i] = strings.ReplaceAll(l, tn.Role(), "ROLE")
	}
	slices.Sort(lines)
	return lines
}

// TestTemplateCloneProtectedLikeReplay creates one database tenant by cloning
// the template database and one by replaying the data model, and compares
// everything that protects their tables.
func TestTemplateCloneProtectedLikeReplay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	replay := b.newProvisioner(t, crmModel(t), &provision.Config{NoTemplate: true})
	start := time.Now()
	cloned, err := b.create(t, b.Platform.Provisioner, &provision.CreateOpts{Slug: pgtest.UniqueName("cl-"), Model: tenancy.ModelDatabase, Server: b.server})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cloned (template built) in %s", time.Since(start))
	start = time.Now()
	replayed, err := b.create(t, replay, &provision.CreateOpts{Slug: pgtest.UniqueName("rp-"), Model: tenancy.ModelDatabase, Server: b.server})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("replayed in %s", time.Since(start))
	c, r := b.describe(t, cloned), b.describe(t, replayed)
	if strings.Join(c, "\n") != strings.Join(r, "\n") {
		var diff []string
		for _, l := range c {
			if !slices.Contains(r, l) {
				diff = append(diff, "clone only:  "+l)
			}
		}
		for _, l := range r {
			if !slices.Contains(c, l) {
				diff = append(diff, "replay only: "+l)
			}
		}
		t.Fatalf("the cloned database is protected unlike the replayed one:\n%s", strings.Join(diff, "\n"))
	}
	if len(c) < 40 || !slices.ContainsFunc(c, func(l string) bool { return strings.Contains(l, "CHECK ((tenant_id = 'TENANT'::uuid))") }) {
		t.Fatalf("the description is too thin to mean anything (%d lines):\n%s", len(c), strings.Join(c, "\n"))
	}
	for _, l := range c {
		if strings.Contains(l, "tenancy_template") {
			t.Fatalf("the clone grants something to the template role: %s", l)
		}
	}
	b.checkServed(t, cloned)
	b.checkServed(t, replayed)

	var allowConn, isTemplate bool
	if err := b.admin.QueryRow(ctx, `SELECT datallowconn, datistemplate FROM pg_database WHERE datname = $1`,
		provision.TemplateName(b.Platform.Model)).Scan(&allowConn, &isTemplate); err != nil || allowConn || !isTemplate {
		t.Fatalf("template database: allows connections %v, is a template %v, %v", allowConn, isTemplate, err)
	}
}

// crmModel is the example CRM's data model as a map, to extend.
func crmModel(t *testing.T) fstest.MapFS {
	t.Helper()
	entries, err := fs.ReadDir(crm.Migrations(), ".")
	if err != nil {
		t.Fatal(err)
	}
	files := fstest.MapFS{}
	for _, e := range entries {
		files[e.Name()] = crmFile(t, e.Name())
	}
	return files
}

// freshModel is the CRM's data model and one more table, with a unique
// comment so that no template of it exists yet.
func freshModel(t *testing.T, table string) (fstest.MapFS, *datamodel.Model) {
	t.Helper()
	files := crmModel(t)
	files["900_"+table+".sql"] = &fstest.MapFile{Data: []byte(fmt.Sprintf(
		`CREATE TABLE %s (tenant_id uuid NOT NULL, id bigint, PRIMARY KEY (tenant_id, id)); -- %s`, table, pgtest.UniqueName("n")))}
	model, err := datamodel.Load(files)
	if err != nil {
		t.Fatal(err)
	}
	return files, model
}

// TestTemplateBuiltOnceUnderConcurrency provisions database tenants at once
// with a data model no template exists for yet: every one succeeds, and one
// template is left, with no half-built copy.
func TestTemplateBuiltOnceUnderConcurrency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	files, model := freshModel(t, "extra_notes")
	// Two provisioners, as two processes would have.
	pvs := []*provision.Provisioner{b.newProvisioner(t, files, nil), b.newProvisioner(t, files, nil)}
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = b.create(t, pvs[i%2], &provision.CreateOpts{Slug: pgtest.UniqueName("cc-"), Model: tenancy.ModelDatabase, Server: b.server})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("tenant %d: %v", i, err)
		}
	}
	var names []string
	rows, err := b.admin.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE $1 || '%' ORDER BY 1`, provision.TemplateName(model))
	if err != nil {
		t.Fatal(err)
	}
	if names, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != provision.TemplateName(model) {
		t.Errorf("template databases of the model: %v; want just %s, and no half-built copy", names, provision.TemplateName(model))
	}
}

// TestTemplateInUse: while someone is connected to the template database,
// a clone waits for them to leave instead of failing, also longer than
// PostgreSQL waits by itself.
func TestTemplateInUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	files, model := freshModel(t, "extra_tags")
	pv := b.newProvisioner(t, files, nil)
	if _, err := b.create(t, pv, &provision.CreateOpts{Slug: pgtest.UniqueName("tu-"), Model: tenancy.ModelDatabase, Server: b.server}); err != nil {
		t.Fatal(err)
	}
	name := provision.TemplateName(model)
	if _, err := b.admin.Exec(ctx, `ALTER DATABASE `+name+` WITH ALLOW_CONNECTIONS true`); err != nil {
		t.Fatal(err)
	}
	intruder, err := pgx.Connect(ctx, b.Servers[0].URL(name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.admin.Exec(ctx, `ALTER DATABASE `+name+` WITH ALLOW_CONNECTIONS false`); err != nil {
		t.Fatal(err)
	}
	// Longer than the 5 s PostgreSQL waits by itself before it fails the
	// CREATE DATABASE.
	const stay = 6 * time.Second
	go func() {
		time.Sleep(stay)
		intruder.Close(context.Background())
	}()
	start := time.Now()
	if _, err := b.create(t, pv, &provision.CreateOpts{Slug: pgtest.UniqueName("tu-"), Model: tenancy.ModelDatabase, Server: b.server}); err != nil {
		t.Fatalf("Create while the template is in use: %v", err)
	}
	if waited := time.Since(start); waited < stay {
		t.Fatalf("the clone did not wait for the template (%s): was anyone connected?", waited)
	}
}

// TestModelChangeDropsOldTemplate: building the template of a new data model
// drops the one this installation built for the previous model, and leaves
// alone a template of another installation on the same server.
func TestModelChangeDropsOldTemplate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	filesA, modelA := freshModel(t, "extra_a")
	filesB, modelB := freshModel(t, "extra_b")
	foreign := pgtest.UniqueName("tenancy_tmpl_other_")
	for _, sql := range []string{
		"CREATE DATABASE " + foreign,
		"ALTER DATABASE " + foreign + " WITH ALLOW_CONNECTIONS false IS_TEMPLATE true",
		"COMMENT ON DATABASE " + foreign + " IS 'tenancy template of another installation'",
	} {
		if _, err := b.admin.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_, _ = b.admin.Exec(context.Background(), "ALTER DATABASE "+foreign+" WITH IS_TEMPLATE false")
		_, _ = b.admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+foreign)
	})
	exists := func(name string) bool {
		t.Helper()
		var ok bool
		if err := b.admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}

	for _, files := range []fstest.MapFS{filesA, filesB} {
		if _, err := b.create(t, b.newProvisioner(t, files, nil), &provision.CreateOpts{Slug: pgtest.UniqueName("mc-"), Model: tenancy.ModelDatabase, Server: b.server}); err != nil {
			t.Fatal(err)
		}
	}
	if exists(provision.TemplateName(modelA)) {
		t.Errorf("the previous model's template %s is still there", provision.TemplateName(modelA))
	}
	if !exists(provision.TemplateName(modelB)) {
		t.Errorf("the current model's template %s is missing", provision.TemplateName(modelB))
	}
	if !exists(foreign) {
		t.Errorf("another installation's template %s was dropped", foreign)
	}
}

// TestTemplateBuildLeftByACrash: a template database that a crashed build of
// this installation left half-built is dropped by the next build of that
// template; one that another installation is building on the same server
// stays, and so does this installation's build of another template (another
// data model), which may be in progress.
func TestTemplateBuildLeftByACrash(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	files, model := freshModel(t, "extra_crash")
	pv := b.newProvisioner(t, files, nil)
	ours, theirs, other := provision.TemplateName(model)+"_deadbeef", provision.TemplateName(model)+"_0ther000", "tenancy_tmpl_0123456789abcdef_cafebabe"
	for db, comment := range map[string]string{ours: provision.BuildingMark(pv), theirs: "tenancy template of 0123456789abcdef (building)", other: provision.BuildingMark(pv)} {
		if _, err := b.admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = b.admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db) })
		if _, err := b.admin.Exec(ctx, "COMMENT ON DATABASE "+db+" IS '"+comment+"'"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.create(t, pv, &provision.CreateOpts{Slug: pgtest.UniqueName("cr-"), Model: tenancy.ModelDatabase, Server: b.server}); err != nil {
		t.Fatal(err)
	}
	for db, want := range map[string]bool{ours: false, theirs: true, other: true, provision.TemplateName(model): true} {
		var exists bool
		if err := b.admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, db).Scan(&exists); err != nil || exists != want {
			t.Errorf("database %s exists: %v (%v), want %v", db, exists, err, want)
		}
	}
}
