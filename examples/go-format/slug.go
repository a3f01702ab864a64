// Package slug turns titles into URL slugs. CI runs `test -z "$(gofmt -l . | tee /dev/stderr)"`.
package slug

import (
	"strings"
	"unicode"
)

func Make(title string) string {
    var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(title) {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			b.WriteRune(r); dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteRune('-')
			dash = true
		}
	}
	return strings.TrimSuffix(b.String(), "-")
}
