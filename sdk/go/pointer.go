package weir

import (
	"fmt"
	"strconv"
	"strings"
)

// A Pointer names a place in a JSON value (RFC 6901): `/a/0/b`; the empty pointer is the
// whole value.
type Pointer struct {
	text   string
	tokens []string
}

// ParsePointer reads a JSON pointer.
func ParsePointer(text string) (Pointer, error) {
	if text == "" {
		return Pointer{}, nil
	}
	if !strings.HasPrefix(text, "/") {
		return Pointer{}, fmt.Errorf("path `%s` is not a JSON pointer (it must start with `/`)", text)
	}
	tokens := strings.Split(text[1:], "/")
	for i, t := range tokens {
		tokens[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return Pointer{text, tokens}, nil
}

// String is the pointer as written.
func (p Pointer) String() string { return p.text }

// Get is the value at the pointer in doc, and whether there is one.
func (p Pointer) Get(doc any) (any, bool) {
	at := doc
	for _, token := range p.tokens {
		switch v := at.(type) {
		case *Object:
			next, ok := v.Get(token)
			if !ok {
				return nil, false
			}
			at = next
		case []any:
			i, ok := index(token)
			if !ok || i >= len(v) {
				return nil, false
			}
			at = v[i]
		default:
			return nil, false
		}
	}
	return at, true
}

// index reads an array index: digits, with no leading zero.
func index(token string) (int, bool) {
	if token == "" || (len(token) > 1 && token[0] == '0') {
		return 0, false
	}
	for _, c := range token {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	i, err := strconv.Atoi(token)
	return i, err == nil
}

// Put puts value at the pointer in doc (an *Object), making missing parent objects.
func (p Pointer) Put(doc any, value any) error {
	at := doc
	for i, token := range p.tokens {
		o, ok := at.(*Object)
		if !ok {
			return fmt.Errorf("cannot put at %s: a parent is not an object", p.text)
		}
		if i == len(p.tokens)-1 {
			o.Set(token, value)
			return nil
		}
		next, ok := o.Get(token)
		if !ok {
			next = NewObject()
			o.Set(token, next)
		}
		at = next
	}
	return fmt.Errorf("cannot put at the whole value")
}

// MustPointer is ParsePointer for a pointer written in the code: it panics on a bad one.
func MustPointer(text string) Pointer {
	p, err := ParsePointer(text)
	if err != nil {
		panic(err)
	}
	return p
}
