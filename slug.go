package tenancy

import "regexp"

var slugPattern = regexp.MustCompile(`^[a-z][a-z0-9-]{1,62}$`)

// ValidateSlug reports whether s is a valid tenant slug: a lower-case letter,
// then 1 to 62 lower-case letters, digits or hyphens, not ending in a hyphen and
// without two hyphens in a row. A valid slug is safe in a host name, a URL path
// and, quoted, an SQL identifier. The error has code CodeInvalid.
func ValidateSlug(s string) error {
	if !slugPattern.MatchString(s) || s[len(s)-1] == '-' || containsDoubleHyphen(s) {
		return Errorf(CodeInvalid, "invalid tenant slug %q: want a lower-case letter, then 1 to 62 lower-case letters, digits or single hyphens, not ending in a hyphen", truncate(s, 80))
	}
	return nil
}

func containsDoubleHyphen(s string) bool {
	for i := 1; i < len(s); i++ {
		if s[i] == '-' && s[i-1] == '-' {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

var namePattern = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// ValidateName reports whether s is a valid name for a catalog object such as a
// server: a lower-case letter, then up to 62 lower-case letters, digits or
// hyphens. what names the object in the error, which has code CodeInvalid.
func ValidateName(what, s string) error {
	if !namePattern.MatchString(s) {
		return Errorf(CodeInvalid, "invalid %s %q: want a lower-case letter, then up to 62 lower-case letters, digits or hyphens", what, truncate(s, 80))
	}
	return nil
}
