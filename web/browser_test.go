package web_test

// The dashboard in a real browser: headless Chromium (Debian's chromium
// package, which scripts/setup installs) drives it against the real server on
// real PostgreSQL.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/serve"
)

// findChromium returns the Chromium binary: $TENANCY_CHROMIUM, or the first
// of the usual names on PATH. It fails the test, never skips it.
func findChromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TENANCY_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no headless Chromium for the dashboard's browser test: install Debian's chromium package " +
		"(scripts/setup does: apt-get install chromium), or set TENANCY_CHROMIUM to a Chrome or Chromium binary")
	return ""
}

// artifactDir is where the test leaves its screenshot: $TENANCY_TEST_ARTIFACTS,
// else a directory under the system's temporary directory.
func artifactDir(t *testing.T) string {
	dir := os.Getenv("TENANCY_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "tenancy-test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

const token = "dashboard-test-operator-token"

func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	chromium := findChromium(t)
	b := tenanttest.Setup(t, &tenanttest.Opts{PerModel: 1})
	schemaTenant := b.Tenants[1]
	// A change by a known actor, to find in the audit log.
	ctx := tenancy.WithActor(tenanttest.Ctx(schemaTenant), tenancy.Actor{Kind: "user", ID: "browser-test"})
	if err := b.Platform.Router.Tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO contacts (tenant_id, name, email) VALUES ($1, 'Ada', 'ada@example.com')`, schemaTenant.ID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// The application answers everything; three requests to the schema
	// tenant are what its chart must show.
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	srv, err := serve.New(serve.Config{Platform: b.Platform, App: app, OperatorToken: token})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	for range 3 {
		resp, err := http.Get(hs.URL + "/t/" + schemaTenant.Slug + "/contacts")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // the tests run as root in CI
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1366, 900), // a laptop screen
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	bctx, cancel := context.WithTimeout(bctx, 60*time.Second)
	defer cancel()

	slug := pgtest.UniqueName("ui")
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			st, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.querySelector("#status").textContent`))
			t.Fatalf("browser: %s: %v (the page's status line: %q)", what, err, st)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(css(sel)))
		if err != nil {
			t.Fatalf("browser: read %s: %v", sel, err)
		}
		return s
	}
	row := func(slug string) string { return `#tenants tbody tr[data-slug="` + slug + `"]` }

	// The token in the fragment, as the demo prints it.
	do("open the dashboard", chromedp.Navigate(hs.URL+"/admin/#token="+token), chromedp.WaitVisible(css(row(schemaTenant.Slug))))
	tenantsText := text("#tenants tbody")

	// Create a tenant with the form.
	do("create a tenant",
		chromedp.SendKeys(css("#new-slug"), slug),
		chromedp.SetValue(css("#new-model"), "database"),
		chromedp.SetValue(css("#new-tier"), "enterprise"),
		chromedp.Click(css(`#create-form button[type="submit"]`)),
		chromedp.WaitVisible(css(row(slug))),
	)
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](`document.querySelector("#status").textContent.startsWith("Created ")`)); err != nil {
		t.Fatalf("status after creating: %q (%v)", text("#status"), err)
	}
	status := text("#status")

	// Suspend the shared tenant with its button: the table shows it.
	shared := b.Tenants[0]
	do("suspend a tenant", chromedp.Click(css(row(shared.Slug)+` button[aria-label="suspend `+shared.Slug+`"]`)))
	// The status line says so once the tables are reloaded.
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](`document.querySelector("#status").textContent.includes(" suspend done")`)); err != nil {
		t.Fatalf("status after suspending: %q (%v)", text("#status"), err)
	}
	do("see the suspension", chromedp.WaitVisible(css(row(shared.Slug)+` td.status-suspended`)))
	// Give the schema tenant another tier, once the plans are listed.
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](`document.querySelector('#tier-tier option[value="pro"]') !== null`)); err != nil {
		t.Fatalf("the tiers are not listed: %v", err)
	}
	do("change a tier",
		chromedp.SetValue(css("#tier-slug"), schemaTenant.Slug),
		chromedp.SetValue(css("#tier-tier"), "pro"),
		chromedp.Click(css(`#tier-form button[type="submit"]`)),
	)
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](`document.querySelector("#status").textContent.includes("is now on the pro tier")`)); err != nil {
		t.Fatalf("status after changing the tier: %q (%v)", text("#status"), err)
	}
	if got, err := b.Platform.Catalog.TenantBySlug(context.Background(), schemaTenant.Slug); err != nil || got.Tier != "pro" {
		t.Errorf("after changing the tier in the browser: %+v %v", got, err)
	}

	// Move the tenant created above to the schema model: its row's button
	// chooses it in the move form and puts the focus there; the form starts
	// the move and follows its operation to the end.
	do("choose the move", chromedp.Click(css(row(slug)+` button[aria-label^="move `+slug+`"]`)))
	moveFocus, err := chromedp.Run(bctx, chromedp.Evaluate[string](`document.activeElement.id + " " + document.querySelector("#move-slug").value`))
	if err != nil {
		t.Fatal(err)
	}
	// Where it is already: refused, naming the field, and the tenant stays.
	do("move a tenant where it is",
		chromedp.SetValue(css("#move-model"), "database"),
		chromedp.Click(css(`#move-form button[type="submit"]`)),
		chromedp.WaitVisible(css("#move-status.error")),
	)
	refused := text("#move-status")
	do("move a tenant",
		chromedp.SetValue(css("#move-model"), "schema"),
		chromedp.Click(css(`#move-form button[type="submit"]`)),
		chromedp.WaitVisible(css("#move-status.ok")),
		chromedp.WaitVisible(css(row(slug)+` td.status-active`)),
	)
	moveStatus := text("#move-status")
	movedRow := text(row(slug))

	// The control-plane log shows it all, by the operator, and verifies.
	do("verify the control-plane log", chromedp.Click(css("#events-verify")), chromedp.WaitVisible(css("#events-verification.ok")))
	if ev := text("#events tbody"); !strings.Contains(ev, "suspended") || !strings.Contains(ev, "tier_changed") ||
		!strings.Contains(ev, "operator:token") || !strings.Contains(ev, shared.Slug) {
		t.Errorf("the control-plane log lacks the suspension:\n%s", ev)
	}
	if ev := text("#events tbody tr:first-child"); !strings.Contains(ev, "moved") || !strings.Contains(ev, slug) ||
		!strings.Contains(ev, `"to_model":"schema"`) || !strings.Contains(ev, "operator:token") {
		t.Errorf("the control-plane log's latest entry is not the move of %s by the operator:\n%s", slug, ev)
	}

	// The audit log of the schema tenant, and its verification.
	do("open the audit log",
		chromedp.Click(css(row(schemaTenant.Slug)+` button[aria-label^="Show the audit log"]`)),
		chromedp.WaitVisible(css("#audit-table tbody tr")),
	)
	auditText := text("#audit-table tbody")
	do("see the request chart", chromedp.WaitVisible(css("#usage-chart svg rect.requests")))
	chart := text("#usage-chart-caption")
	focused, err := chromedp.Run(bctx, chromedp.Evaluate[string](`document.activeElement.id`))
	if err != nil {
		t.Fatal(err)
	}
	do("verify", chromedp.Click(css("#verify")), chromedp.WaitVisible(css("#verification.ok")))
	verification := text("#verification")
	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(artifactDir(t), "dashboard.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)

	for _, tn := range b.Tenants {
		if !strings.Contains(tenantsText, tn.Slug) || !strings.Contains(tenantsText, string(tn.Model)) {
			t.Errorf("the tenants table lacks %s (%s):\n%s", tn.Slug, tn.Model, tenantsText)
		}
	}
	if !strings.Contains(tenantsText, "v"+fmt.Sprint(b.Platform.Model.Latest())) || !strings.Contains(tenantsText, "active") {
		t.Errorf("the tenants table lacks the migration version or the status:\n%s", tenantsText)
	}
	if !strings.Contains(status, "Created "+slug+" (database)") {
		t.Errorf("status after creating: %q", status)
	}
	created, err := b.Platform.Catalog.TenantBySlug(context.Background(), slug)
	if err != nil || created.Model != tenancy.ModelSchema || created.Tier != "enterprise" {
		t.Fatalf("the tenant created in the browser: %+v %v", created, err)
	}
	b.Track(created)
	if moveFocus != "move-model "+slug {
		t.Errorf("after choosing the move: focus and tenant %q, want the model of %s", moveFocus, slug)
	}
	if !strings.Contains(refused, "Could not move "+slug) || !strings.Contains(refused, "(field: model)") {
		t.Errorf("status of a move to where the tenant is: %q", refused)
	}
	if !strings.Contains(moveStatus, "Moved "+slug+" from database to schema") {
		t.Errorf("move status: %q", moveStatus)
	}
	if !strings.Contains(movedRow, "\tenterprise\tschema\t") {
		t.Errorf("the tenant's row after its move: %q", movedRow)
	}
	if !strings.Contains(auditText, "user:browser-test") || !strings.Contains(auditText, "insert") || !strings.Contains(auditText, "contacts") {
		t.Errorf("the audit log lacks the insert by user:browser-test:\n%s", auditText)
	}
	if !strings.Contains(chart, "Requests per minute to "+schemaTenant.Slug) || !strings.Contains(chart, ": 3 in all, 0 answered 429") {
		t.Errorf("the request chart's caption: %q", chart)
	}
	if focused != "audit-h" {
		t.Errorf("focus after opening the audit log is on %q, want its heading", focused)
	}
	if !strings.Contains(verification, "verifies") {
		t.Errorf("verification: %q", verification)
	}
}
