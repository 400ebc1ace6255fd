package httpx

import (
	"crypto/rand"
	"net/http"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"
)

// RequestID returns the incoming request id if it is acceptable (1 to 128
// characters of [A-Za-z0-9._:-]), and a fresh random one otherwise: what
// Middleware does, for handlers outside it (routes without a tenant).
func RequestID(incoming string) string { return requestID(incoming) }

// requestID returns the incoming id if it is acceptable (1 to 128 characters
// of [A-Za-z0-9._:-]), and a fresh random one otherwise.
func requestID(incoming string) string {
	if validRequestID(incoming) {
		return incoming
	}
	return rand.Text() // 26 characters of base32: 130 random bits
}

func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// clientIP returns the address of the client: the peer address, or, when the
// peer is a trusted proxy, the rightmost address of X-Forwarded-For that is not
// a trusted proxy (if every one is, the leftmost). Reading from the right means
// that addresses a client forged at the left are never believed. It returns ""
// when the peer address cannot be parsed (for example on a Unix socket).
func clientIP(r *http.Request, trusted []netip.Prefix) string {
	peer, ok := parseAddr(r.RemoteAddr)
	if !ok {
		return ""
	}
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	client := peer
	if !isTrusted(client) {
		return client.String()
	}
	values := r.Header.Values("X-Forwarded-For")
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for v != "" {
			elem := v
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				elem, v = v[j+1:], v[:j]
			} else {
				v = ""
			}
			a, ok := parseAddr(strings.TrimSpace(elem))
			if !ok {
				// The hop that should have written a valid address did not:
				// believe nothing further left.
				return client.String()
			}
			client = a
			if !isTrusted(client) {
				return client.String()
			}
		}
	}
	return client.String()
}

// parseAddr parses an IP address with or without a port, and returns it
// without IPv4-in-IPv6 mapping and without zone.
func parseAddr(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	return a.Unmap().WithZone(""), true
}

// maxUserAgent bounds the User-Agent kept for the audit trail, in bytes.
const maxUserAgent = 512

// userAgent returns the User-Agent of r made fit for the audit trail: valid
// UTF-8 without control characters, at most maxUserAgent bytes.
func userAgent(r *http.Request) string {
	ua := r.UserAgent()
	clean := true
	for _, c := range ua {
		if c == utf8.RuneError || unicode.IsControl(c) {
			clean = false
			break
		}
	}
	if !clean {
		ua = strings.Map(func(c rune) rune {
			if unicode.IsControl(c) {
				return -1
			}
			return c
		}, strings.ToValidUTF8(ua, "\uFFFD"))
	}
	if len(ua) > maxUserAgent {
		n := maxUserAgent
		for n > 0 && !utf8.RuneStart(ua[n]) {
			n--
		}
		ua = ua[:n]
	}
	return ua
}
