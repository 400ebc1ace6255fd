package dataplane

import "strings"

// QuoteLiteral quotes s as an SQL string literal in the E” form, which means
// the same whatever standard_conforming_strings says: backslashes and quotes are
// doubled. s must not contain a NUL byte (PostgreSQL rejects it in text);
// callers validate their input first.
func QuoteLiteral(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 4)
	b.WriteString("E'")
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'':
			b.WriteString("''")
		case '\\':
			b.WriteString(`\\`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}
