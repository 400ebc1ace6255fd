package migrate

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/datamodel"
)

// Kind is what a target holds.
type Kind string

// The kinds of target.
const (
	// KindShared is a server's shared tables, holding every shared tenant.
	KindShared Kind = "shared"
	// KindSchema is one tenant's schema.
	KindSchema Kind = "schema"
	// KindDatabase is one tenant's database.
	KindDatabase Kind = "database"
)

// Target is one place where the data model lives.
type Target struct {
	Kind     Kind   `json:"kind"`
	Server   string `json:"server"`
	Database string `json:"database"`
	Schema   string `json:"schema"`
	// Tenant and Slug name the tenant of a schema or database target; zero for
	// shared tables.
	Tenant uuid.UUID `json:"tenant,omitzero"`
	Slug   string    `json:"slug,omitempty"`
	Tier   string    `json:"tier,omitempty"`

	grantee string
	skip    string // why the target is listed but not migrated
}

// String names the target for people: the tenant's slug, or "shared@server".
func (t Target) String() string {
	if t.Slug != "" {
		return t.Slug
	}
	return string(t.Kind) + "@" + t.Server
}

// key identifies a target across passes.
func (t Target) key() string { return t.Server + "/" + t.Database + "/" + t.Schema }

// datamodelTarget is where datamodel applies the model for t.
func (t Target) datamodelTarget() datamodel.Target {
	return datamodel.Target{Schema: t.Schema, Grantee: t.grantee, Tenant: t.Tenant}
}

// kindOrder puts the shared tables first: they hold the most tenants.
var kindOrder = map[Kind]int{KindShared: 0, KindSchema: 1, KindDatabase: 2}

// targets lists every target of the fleet from the catalog, in a stable
// order: by server, shared tables first, then tenants by slug.
func (m *Migrator) targets(ctx context.Context) ([]Target, error) {
	servers, err := m.cfg.Catalog.Servers(ctx)
	if err != nil {
		return nil, err
	}
	tenants, err := m.cfg.Catalog.Tenants(ctx, nil)
	if err != nil {
		return nil, err
	}
	// A deleted tenant whose purge is running or was interrupted may have
	// lost its storage already: the purge finishes it, not a migration.
	open, err := m.cfg.Catalog.Operations(ctx, &catalog.OperationOpts{OpenOnly: true, Limit: 100000})
	if err != nil {
		return nil, err
	}
	purging := map[uuid.UUID]bool{}
	for _, op := range open {
		if op.Kind == catalog.OpPurge {
			purging[op.TenantID] = true
		}
	}
	var out []Target
	for _, s := range servers {
		db, err := serverDatabase(s)
		if err != nil {
			return nil, err
		}
		out = append(out, Target{Kind: KindShared, Server: s.Name, Database: db, Schema: m.cfg.SharedSchema, grantee: m.cfg.AppRole})
	}
	for _, t := range tenants {
		if t.Model == tenancy.ModelShared {
			continue
		}
		tg := Target{
			Kind: Kind(t.Model), Server: t.Placement.Server, Database: t.Placement.Database, Schema: t.Placement.Schema,
			Tenant: t.ID, Slug: t.Slug, Tier: string(t.Tier), grantee: t.Role(),
		}
		switch t.Status {
		case tenancy.StatusActive, tenancy.StatusSuspended:
		case tenancy.StatusDeleted:
			if purging[t.ID] {
				tg.skip = "being purged: `tenancy tenants purge " + t.Slug + "` finishes it"
			}
		case tenancy.StatusProvisioning:
			tg.skip = "provisioning: the provisioner brings it to the latest version"
		case tenancy.StatusMoving:
			tg.skip = "moving: migrate it once the move is done"
		default:
			continue // purged, or a status without storage
		}
		out = append(out, tg)
	}
	slices.SortStableFunc(out, func(a, b Target) int {
		return cmp.Or(cmp.Compare(a.Server, b.Server), cmp.Compare(kindOrder[a.Kind], kindOrder[b.Kind]), cmp.Compare(a.Slug, b.Slug))
	})
	return out, nil
}

// parseGroup returns a predicate for a group of targets: "server:NAME",
// "model:shared|schema|database", "tier:TIER" or "tenants:SLUG,SLUG,…".
func parseGroup(g string) (func(Target) bool, error) {
	kind, value, ok := strings.Cut(g, ":")
	if !ok || value == "" {
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "group %q: want server:NAME, model:MODEL, tier:TIER or tenants:SLUG,SLUG", g)
	}
	switch kind {
	case "server":
		return func(t Target) bool { return t.Server == value }, nil
	case "model":
		m, err := tenancy.ParseModel(value)
		if err != nil {
			return nil, err
		}
		return func(t Target) bool { return t.Kind == Kind(m) }, nil
	case "tier":
		return func(t Target) bool { return t.Tier == value }, nil
	case "tenants":
		slugs := map[string]bool{}
		for _, s := range strings.Split(value, ",") {
			if err := tenancy.ValidateSlug(s); err != nil {
				return nil, err
			}
			slugs[s] = true
		}
		return func(t Target) bool { return slugs[t.Slug] }, nil
	}
	return nil, tenancy.Errorf(tenancy.CodeInvalid, "group %q: unknown kind %q (want server, model, tier or tenants)", g, kind)
}

// serverDatabase is the database a server's DSN names: its shared database.
func serverDatabase(s *tenancy.Server) (string, error) {
	cfg, err := parseDSN(s)
	if err != nil {
		return "", err
	}
	if cfg.Database == "" {
		return "", fmt.Errorf("server %q: its DSN names no database", s.Name)
	}
	return cfg.Database, nil
}
