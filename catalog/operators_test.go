package catalog_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
)

// TestOperators: a named operator's token works until it is rotated or the
// operator revoked; tokens are stored only as hashes; every change is in the
// control-plane log, by who made it; bad input changes nothing.
func TestOperators(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := tenancy.WithActor(context.Background(), tenancy.Actor{Kind: "operator", ID: "root"})

	o, token, err := b.cat.AddOperator(ctx, "alice", catalog.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if !catalog.IsOperatorToken(token) || !strings.Contains(token, o.Prefix) || o.Name != "alice" {
		t.Fatalf("added %+v with token %q", o, token)
	}
	got, err := b.cat.OperatorByToken(ctx, token)
	if err != nil || got.Name != "alice" {
		t.Fatalf("the new token: %+v %v", got, err)
	}
	var stored int
	if err := b.cat.Pool().QueryRow(ctx, `SELECT count(*) FROM catalog.operators WHERE position(convert_to($1, 'UTF8') IN hash) > 0 OR prefix = $1`, token).Scan(&stored); err != nil || stored != 0 {
		t.Errorf("the token is stored as it is (%d, %v)", stored, err)
	}

	// Refused, and nothing changes.
	before := operatorsState(t, b)
	for _, c := range []struct {
		name string
		code tenancy.Code
	}{{"alice", tenancy.CodeConflict}, {"token", tenancy.CodeInvalid}, {"Not A Name", tenancy.CodeInvalid}, {"", tenancy.CodeInvalid}} {
		if _, _, err := b.cat.AddOperator(ctx, c.name, catalog.RoleAdmin); tenancy.ErrorCode(err) != c.code {
			t.Errorf("add %q: %v, want %s", c.name, err, c.code)
		}
	}
	if _, _, err := b.cat.AddOperator(ctx, "bob", "boss"); tenancy.ErrorCode(err) != tenancy.CodeInvalid {
		t.Errorf("add with an unknown role: %v", err)
	}
	if _, _, err := b.cat.RotateOperator(ctx, "nobody"); tenancy.ErrorCode(err) != tenancy.CodeNotFound {
		t.Errorf("rotate an unknown operator: %v", err)
	}
	if _, err := b.cat.RevokeOperator(ctx, "nobody"); tenancy.ErrorCode(err) != tenancy.CodeNotFound {
		t.Errorf("revoke an unknown operator: %v", err)
	}
	flip := "A" // a secret whose last character differs
	if strings.HasSuffix(token, flip) {
		flip = "B"
	}
	wrong := token[:len(token)-1] + flip
	for _, bad := range []string{"", "opk_", "opk__x", "opk_" + o.Prefix, "opk_" + o.Prefix + "_", wrong, "opk_zzzzzzzzzzzz_" + token[len(token)-26:], strings.Repeat("opk_", 100)} {
		if _, err := b.cat.OperatorByToken(ctx, bad); tenancy.ErrorCode(err) != tenancy.CodeUnauthorized {
			t.Errorf("token %q: %v, want unauthorized", bad, err)
		}
	}
	if after := operatorsState(t, b); after != before {
		t.Errorf("refused changes changed the operators:\n%s\nwas\n%s", after, before)
	}

	// Rotate: the old token stops, the new one works.
	o2, token2, err := b.cat.RotateOperator(ctx, "alice")
	if err != nil || o2.Prefix == o.Prefix || o2.RotatedAt == nil {
		t.Fatalf("rotate: %+v %v", o2, err)
	}
	if _, err := b.cat.OperatorByToken(ctx, token); tenancy.ErrorCode(err) != tenancy.CodeUnauthorized {
		t.Errorf("the token before the rotation: %v, want unauthorized", err)
	}
	if _, err := b.cat.OperatorByToken(ctx, token2); err != nil {
		t.Errorf("the rotated token: %v", err)
	}

	// Revoke: refused at once, and once only.
	if r, err := b.cat.RevokeOperator(ctx, "alice"); err != nil || r.RevokedAt == nil {
		t.Fatalf("revoke: %+v %v", r, err)
	}
	if _, err := b.cat.OperatorByToken(ctx, token2); tenancy.ErrorCode(err) != tenancy.CodeUnauthorized {
		t.Errorf("a revoked operator's token: %v, want unauthorized", err)
	}
	if _, err := b.cat.RevokeOperator(ctx, "alice"); tenancy.ErrorCode(err) != tenancy.CodeConflict {
		t.Errorf("revoke twice: %v, want conflict", err)
	}
	ops, err := b.cat.Operators(ctx)
	if err != nil || len(ops) != 1 || ops[0].LastUsedAt == nil || ops[0].RevokedAt == nil {
		t.Errorf("operators: %+v %v", ops, err)
	}

	events, _, err := b.cat.Events(ctx, &catalog.EventOpts{Operator: "operator:root"})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range events {
		kinds = append(kinds, string(e.Kind))
		if strings.Contains(string(e.Details), "opk_") || strings.Contains(string(e.Details), token2[len(token2)-26:]) {
			t.Errorf("event %s has the token: %s", e.Kind, e.Details)
		}
	}
	if got := strings.Join(kinds, " "); got != "operator_added operator_rotated operator_revoked" {
		t.Errorf("events: %q", got)
	}
}

// operatorsState is the operators table, as text.
func operatorsState(t *testing.T, b *testBundle) string {
	t.Helper()
	var s string
	if err := b.cat.Pool().QueryRow(context.Background(), `SELECT coalesce(string_agg(o::text, ';' ORDER BY name), '') FROM catalog.operators o`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}
