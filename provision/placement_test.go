package provision_test

import (
	"context"
	"testing"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/provision"
)

// TestPlacement places shared tenants (which need nothing on the server, so
// the catalog's server rows may all point at one database): the server
// asked for, else the least loaded server of the region, else the least
// loaded server; full servers are passed over.
func TestPlacement(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	s, err := b.Platform.Catalog.Server(ctx, b.server)
	if err != nil {
		t.Fatal(err)
	}
	// The bundle's server is full from the start, with one tenant.
	if _, err := b.Platform.Catalog.Pool().Exec(ctx, `UPDATE catalog.servers SET capacity = 1 WHERE name = $1`, b.server); err != nil {
		t.Fatal(err)
	}
	b.CreateTenant(t, tenancy.ModelShared, b.server)
	for _, srv := range []tenancy.Server{
		{Name: "eu-a", Region: "eu", Capacity: 2},
		{Name: "eu-b", Region: "eu", Capacity: 10},
		{Name: "us-a", Region: "us", Capacity: 4},
	} {
		srv.DSN = s.DSN
		if err := b.Platform.Catalog.AddServer(ctx, &srv); err != nil {
			t.Fatal(err)
		}
	}
	place := func(server, region string) (string, error) {
		t.Helper()
		tn, err := b.create(t, b.Platform.Provisioner, &provision.CreateOpts{Slug: pgtest.UniqueName("pl-"), Model: tenancy.ModelShared, Server: server, Region: region})
		if err != nil {
			return "", err
		}
		return tn.Placement.Server, nil
	}
	for i, c := range []struct{ server, region, want string }{
		{"", "eu", "eu-a"},       // eu-a 0/2, eu-b 0/10: a tie, the first name
		{"", "eu", "eu-b"},       // eu-a 1/2, eu-b 0/10
		{"", "eu", "eu-b"},       // eu-a 1/2, eu-b 1/10
		{"us-a", "eu", "us-a"},   // asked for: the region does not matter
		{"", "", "eu-b"},         // eu-a 1/2, eu-b 2/10, us-a 1/4: least loaded of all
		{"", "ap", "us-a"},       // nobody in ap: least loaded of all, us-a 1/4 < eu-b 3/10
		{"", "eu", "eu-b"},       // eu-a 1/2, eu-b 4/10
		{"", "us", "us-a"},       // us-a 2/4, the only one in us
		{"eu-a", "", "eu-a"},     // eu-a 2/2 now full
		{"", "eu", "eu-b"},       // eu-a full
		{b.server, "", b.server}, // asked for: placed even though full
	} {
		got, err := place(c.server, c.region)
		if err != nil || got != c.want {
			t.Fatalf("tenant %d (server %q, region %q): placed on %q, %v; want %q", i, c.server, c.region, got, err, c.want)
		}
	}
	// Fill everything: then new tenants are refused.
	if _, err := b.Platform.Catalog.Pool().Exec(ctx, `UPDATE catalog.servers SET capacity = 1`); err != nil {
		t.Fatal(err)
	}
	_, err = place("", "eu")
	tenanttest.WantCode(t, "placing on full servers", err, tenancy.CodeUnavailable)
	_, err = place("no-such-server", "")
	tenanttest.WantCode(t, "placing on an unknown server", err, tenancy.CodeNotFound)
	_, err = place("Bad Name", "")
	tenanttest.WantCode(t, "placing on a bad server name", err, tenancy.CodeInvalid)
}
