package controlapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/controlapi"
	"github.com/tenancyhq/tenancy/httpx"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
)

// FuzzControlAPI sends arbitrary tenant-creation bodies and hostile slugs in
// paths to the control API, over real HTTP, with a real platform behind it.
// Whatever comes in: no 500, every error is a problem+json document whose code
// matches its status, and a tenant is only ever created with a valid slug and
// model.
func FuzzControlAPI(f *testing.F) {
	// A shared tenant leaves nothing outside the test's databases; the seeds
	// create no other kind (fuzzing might, on the private cluster).
	f.Add(`{"slug":"acme","model":"shared"}`, "acme")
	f.Add(`{"slug":"Acme","model":"schema"}`, "Acme")
	f.Add(`{"slug":"a\"; DROP TABLE x; --","model":"shared"}`, `a"; DROP TABLE x; --`)
	f.Add(`{"slug":"acme","model":"schema"}{"slug":"b"}`, "../../v1/servers")
	f.Add(`{"slug":"acme","model":"nosuch","tier":"gold","server":"pg9"}`, "%00")
	f.Add(`{"slug":"acme","model":"database","extra":1}`, "a--b")
	f.Add(`[]`, strings.Repeat("a", 100))
	f.Add(`{"slug":null,"model":1}`, "ac%2Fme")
	f.Add(``, "")

	b := tenanttest.Setup(f, &tenanttest.Opts{})
	api, err := controlapi.New(controlapi.Config{Platform: b.Platform, Token: token})
	if err != nil {
		f.Fatal(err)
	}
	srv := httptest.NewServer(api)
	f.Cleanup(srv.Close)
	client := srv.Client()

	check := func(t *testing.T, resp *http.Response, body []byte, what string) {
		t.Helper()
		if resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("%s: %d %s", what, resp.StatusCode, body)
		}
		if resp.StatusCode < 400 {
			return
		}
		if ct := resp.Header.Get("Content-Type"); ct != httpx.ContentType {
			t.Fatalf("%s: %d with Content-Type %q", what, resp.StatusCode, ct)
		}
		var p httpx.Problem
		if err := json.Unmarshal(body, &p); err != nil || p.Status != resp.StatusCode || httpx.StatusCode(p.Code) != resp.StatusCode {
			t.Fatalf("%s: %d problem %s (%v)", what, resp.StatusCode, body, err)
		}
	}

	f.Fuzz(func(t *testing.T, body, slug string) {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/tenants", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		check(t, resp, out, "POST /v1/tenants "+body)
		if resp.StatusCode < 300 {
			var in struct{ Slug, Model string }
			_ = json.Unmarshal([]byte(body), &in)
			if tenancy.ValidateSlug(in.Slug) != nil {
				t.Fatalf("created a tenant from %q", body)
			}
			if _, err := tenancy.ParseModel(in.Model); err != nil {
				t.Fatalf("created a tenant of model %q", in.Model)
			}
		}

		req, err = http.NewRequest(http.MethodGet, srv.URL+"/v1/tenants/"+url.PathEscape(slug), nil)
		if err != nil {
			return // not a request a client can send
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err = client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		check(t, resp, out, "GET /v1/tenants/"+slug)
		// A 200 that is one tenant is the one asked for, and only for a valid
		// slug. ("." and ".." are path steps: the client and the mux resolve
		// them, here to the list of tenants.)
		var got struct {
			Slug string `json:"slug"`
		}
		if resp.StatusCode == http.StatusOK && json.Unmarshal(out, &got) == nil && got.Slug != "" {
			if got.Slug != slug || tenancy.ValidateSlug(slug) != nil {
				t.Fatalf("GET of the slug %q answered tenant %q", slug, got.Slug)
			}
		}
	})
}
