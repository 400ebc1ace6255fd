package tenancy_test

import (
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"

	"github.com/tenancyhq/tenancy"
)

func TestValidateSlug(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		slug string
		ok   bool
	}{
		{"Shortest", "ab", true},
		{"Longest", "a" + strings.Repeat("b", 62), true},
		{"Digits", "a1", true},
		{"SingleHyphens", "acme-corp-2", true},
		{"HyphenBeforeLast", "a-b", true},

		{"Empty", "", false},
		{"OneLetter", "a", false},
		{"TooLong", "a" + strings.Repeat("b", 63), false},
		{"LeadingDigit", "1acme", false},
		{"LeadingHyphen", "-acme", false},
		{"TrailingHyphen", "acme-", false},
		{"TwoLettersTrailingHyphen", "a-", false},
		{"DoubleHyphen", "acme--corp", false},
		{"Uppercase", "Acme", false},
		{"UppercaseInside", "acMe", false},
		{"Underscore", "acme_corp", false},
		{"Dot", "acme.corp", false},
		{"Slash", "acme/corp", false},
		{"Space", "acme corp", false},
		{"LeadingSpace", " acme", false},
		{"TrailingSpace", "acme ", false},
		{"TrailingNewline", "acme\n", false},
		{"Tab", "ac\tme", false},
		{"NUL", "acme\x00", false},
		{"NULInside", "ac\x00me", false},
		{"DoubleQuote", `acme"`, false},
		{"SingleQuote", "acme'", false},
		{"Backslash", `acme\`, false},
		{"SQLInjection", `a"; DROP TABLE x; --`, false},
		{"Unicode", "acmé", false},
		{"UnicodeLookalike", "аcme", false}, // Cyrillic а
		{"KelvinSign", "\u212acme", false},
		{"FullwidthLetters", "ａｃｍｅ", false},
		{"InvalidUTF8", "acme\xff", false},
		{"Percent", "ac%20me", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tenancy.ValidateSlug(tc.slug)
			if tc.ok {
				if err != nil {
					t.Fatalf("ValidateSlug(%q): %v, want nil", tc.slug, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateSlug(%q) accepted it", tc.slug)
			}
			if !errors.Is(err, tenancy.ErrInvalid) || tenancy.ErrorCode(err) != tenancy.CodeInvalid {
				t.Fatalf("ValidateSlug(%q): %v has code %s, want invalid", tc.slug, err, tenancy.ErrorCode(err))
			}
		})
	}
}

func TestValidateSlugErrorTruncatesInput(t *testing.T) {
	t.Parallel()
	err := tenancy.ValidateSlug(strings.Repeat("A", 10000))
	if err == nil || len(err.Error()) > 400 {
		t.Fatalf("error for a 10,000-byte slug is %d bytes long, want it truncated", len(err.Error()))
	}
}

var acceptedSlug = regexp.MustCompile(`^[a-z][a-z0-9-]{1,62}$`)

func FuzzValidateSlug(f *testing.F) {
	for _, s := range []string{"ab", "acme", "acme-corp", "a-", "a--b", "1a", "Acme", `a"b`, "a\\b", "a\x00b", "é", "a" + strings.Repeat("b", 62), "a" + strings.Repeat("b", 63), "acme\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := tenancy.ValidateSlug(s)
		// The definition, written out: what is accepted is exactly this.
		want := acceptedSlug.MatchString(s) && !strings.HasSuffix(s, "-") && !strings.Contains(s, "--")
		if err != nil {
			if want {
				t.Fatalf("ValidateSlug(%q) refused a valid slug: %v", s, err)
			}
			if tenancy.ErrorCode(err) != tenancy.CodeInvalid {
				t.Fatalf("ValidateSlug(%q): code %s, want invalid", s, tenancy.ErrorCode(err))
			}
			return
		}
		if !want {
			t.Fatalf("ValidateSlug(%q) accepted an invalid slug", s)
		}
		if strings.ContainsAny(s, "\"'\\\x00") || len(s) < 2 || len(s) > 63 {
			t.Fatalf("ValidateSlug(%q) accepted a slug that is unsafe in SQL", s)
		}
	})
}

func TestValidateName(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"a", "pg-1", "pg-eu-west-1", "a" + strings.Repeat("b", 62)} {
		if err := tenancy.ValidateName("server name", s); err != nil {
			t.Errorf("ValidateName(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "1pg", "Pg", "pg_1", "pg 1", `pg"`, "pg\x00", "pé", "a" + strings.Repeat("b", 63)} {
		err := tenancy.ValidateName("server name", s)
		if tenancy.ErrorCode(err) != tenancy.CodeInvalid {
			t.Errorf("ValidateName(%q): %v, want code invalid", s, err)
			continue
		}
		if !strings.Contains(err.Error(), "server name") {
			t.Errorf("ValidateName(%q): %q does not say what was named", s, err)
		}
	}
}

func TestParseModel(t *testing.T) {
	t.Parallel()
	for _, m := range tenancy.Models {
		got, err := tenancy.ParseModel(string(m))
		if err != nil || got != m {
			t.Errorf("ParseModel(%q) = %q, %v", m, got, err)
		}
	}
	if len(tenancy.Models) != 3 {
		t.Errorf("Models = %v, want shared, schema and database", tenancy.Models)
	}
	for _, s := range []string{"", "Shared", "SCHEMA", " database", "database ", "db", "cluster", "shared\x00"} {
		got, err := tenancy.ParseModel(s)
		if got != "" || !errors.Is(err, tenancy.ErrInvalid) {
			t.Errorf("ParseModel(%q) = %q, %v; want code invalid", s, got, err)
		}
	}
}

func TestErrorCodes(t *testing.T) {
	t.Parallel()
	sentinels := map[tenancy.Code]error{
		tenancy.CodeInvalid:     tenancy.ErrInvalid,
		tenancy.CodeNoTenant:    tenancy.ErrNoTenant,
		tenancy.CodeNotFound:    tenancy.ErrNotFound,
		tenancy.CodeConflict:    tenancy.ErrConflict,
		tenancy.CodeSuspended:   tenancy.ErrSuspended,
		tenancy.CodeGone:        tenancy.ErrGone,
		tenancy.CodeUnavailable: tenancy.ErrUnavailable,
	}

	t.Run("IsMatchesOnCode", func(t *testing.T) {
		t.Parallel()
		for code := range sentinels {
			err := tenancy.Errorf(code, "tenant %q: something", "acme")
			wrapped := fmt.Errorf("handler: %w", err)
			for other, sentinel := range sentinels {
				for _, e := range []error{err, wrapped} {
					if got, want := errors.Is(e, sentinel), other == code; got != want {
						t.Errorf("errors.Is(%v [%s], %s sentinel) = %v, want %v", e, code, other, got, want)
					}
				}
			}
			if got := tenancy.ErrorCode(wrapped); got != code {
				t.Errorf("ErrorCode(%v) = %s, want %s", wrapped, got, code)
			}
		}
	})

	t.Run("ErrorCode", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			err  error
			want tenancy.Code
		}{
			{nil, tenancy.CodeInternal},
			{io.EOF, tenancy.CodeInternal},
			{fmt.Errorf("x: %w", io.EOF), tenancy.CodeInternal},
			{tenancy.ErrGone, tenancy.CodeGone},
			{&tenancy.Error{Code: tenancy.CodeConflict, Message: "m"}, tenancy.CodeConflict},
			{errors.Join(io.EOF, tenancy.Errorf(tenancy.CodeNotFound, "n")), tenancy.CodeNotFound},
		} {
			if got := tenancy.ErrorCode(tc.err); got != tc.want {
				t.Errorf("ErrorCode(%v) = %s, want %s", tc.err, got, tc.want)
			}
		}
	})

	t.Run("ErrorfWraps", func(t *testing.T) {
		t.Parallel()
		err := tenancy.Errorf(tenancy.CodeInvalid, "catalog url: %w", io.ErrUnexpectedEOF)
		if !errors.Is(err, io.ErrUnexpectedEOF) || !errors.Is(err, tenancy.ErrInvalid) {
			t.Fatalf("%v: want it to match both the wrapped error and ErrInvalid", err)
		}
		if err.Error() != "catalog url: unexpected EOF" {
			t.Fatalf("Error() = %q", err.Error())
		}
		var te *tenancy.Error
		if !errors.As(err, &te) || te.Code != tenancy.CodeInvalid || te.Err != io.ErrUnexpectedEOF {
			t.Fatalf("errors.As: %+v", te)
		}
		if plain := tenancy.Errorf(tenancy.CodeGone, "tenant %q was deleted", "acme"); errors.Unwrap(plain) != nil {
			t.Fatalf("Errorf without %%w wraps %v", errors.Unwrap(plain))
		}
	})

	t.Run("OnlySentinelsMatchByCode", func(t *testing.T) {
		t.Parallel()
		// An error with a message is not a sentinel: it matches only itself.
		a := tenancy.Errorf(tenancy.CodeNotFound, "tenant %q not found", "a")
		b := tenancy.Errorf(tenancy.CodeNotFound, "tenant %q not found", "b")
		if errors.Is(a, b) {
			t.Fatal("two distinct not-found errors match each other")
		}
		if !errors.Is(a, a) {
			t.Fatal("an error does not match itself")
		}
	})

	t.Run("Message", func(t *testing.T) {
		t.Parallel()
		if got := tenancy.ErrSuspended.Error(); got != "suspended" {
			t.Fatalf("a sentinel's message is %q, want its code", got)
		}
	})
}
