package jsonvalue

import (
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// Parse reads one JSON value (surrounding whitespace allowed): nil, bool, a number (int64
// when it is a whole number that fits, else uint64, else float64), string, []any or *Object.
// Like serde_json, it refuses invalid UTF-8, control characters in strings, nesting 128 deep
// and anything after the value.
//
// It is a scanner of its own rather than encoding/json's Decoder.Token, which keeps key order
// too but cost a Go plugin about 20 µs for a 190-byte record in wasm; its tests check it
// against encoding/json.
func Parse(data []byte) (any, error) {
	p := parser{data: data}
	p.space()
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i < len(p.data) {
		return nil, p.fail("trailing characters")
	}
	return v, nil
}

const maxDepth = 128

type parser struct {
	data []byte
	i    int
}

// fail is an error at the current position, said as serde_json says it.
func (p *parser) fail(what string) error {
	line, column := 1, 0
	for _, c := range p.data[:min(p.i+1, len(p.data))] {
		if c == '\n' {
			line, column = line+1, 0
		} else {
			column++
		}
	}
	return fmt.Errorf("%s at line %d column %d", what, line, column)
}

func (p *parser) space() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) value(depth int) (any, error) {
	if p.i >= len(p.data) {
		return nil, p.fail("EOF while parsing a value")
	}
	switch c := p.data[p.i]; {
	case c == '{':
		return p.object(depth + 1)
	case c == '[':
		return p.array(depth + 1)
	case c == '"':
		return p.string()
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	}
	return nil, p.fail("expected value")
}

func (p *parser) literal(word string) error {
	if len(p.data)-p.i < len(word) || string(p.data[p.i:p.i+len(word)]) != word {
		return p.fail("expected value")
	}
	p.i += len(word)
	return nil
}

func (p *parser) object(depth int) (any, error) {
	if depth >= maxDepth {
		return nil, p.fail("recursion limit exceeded")
	}
	o := NewObject()
	p.i++ // {
	p.space()
	if p.i < len(p.data) && p.data[p.i] == '}' {
		p.i++
		return o, nil
	}
	for {
		if p.i >= len(p.data) || p.data[p.i] != '"' {
			return nil, p.fail("key must be a string")
		}
		key, err := p.string()
		if err != nil {
			return nil, err
		}
		p.space()
		if p.i >= len(p.data) || p.data[p.i] != ':' {
			return nil, p.fail("expected `:`")
		}
		p.i++
		p.space()
		v, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		o.Set(key, v)
		if done, err := p.next('}'); done || err != nil {
			return o, err
		}
	}
}

func (p *parser) array(depth int) (any, error) {
	if depth >= maxDepth {
		return nil, p.fail("recursion limit exceeded")
	}
	items := []any{}
	p.i++ // [
	p.space()
	if p.i < len(p.data) && p.data[p.i] == ']' {
		p.i++
		return items, nil
	}
	for {
		v, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		items = append(items, v)
		if done, err := p.next(']'); done || err != nil {
			return items, err
		}
	}
}

// next reads the `,` before another member or the `end` of a container (whether it ended),
// and the space around them.
func (p *parser) next(end byte) (bool, error) {
	p.space()
	if p.i >= len(p.data) {
		return false, p.fail("EOF while parsing a list or an object")
	}
	switch p.data[p.i] {
	case ',':
		p.i++
		p.space()
		return false, nil
	case end:
		p.i++
		return true, nil
	}
	return false, p.fail(fmt.Sprintf("expected `,` or `%c`", end))
}

func (p *parser) string() (string, error) {
	p.i++ // "
	start := p.i
	for p.i < len(p.data) {
		c := p.data[p.i]
		switch {
		case c == '"':
			s := p.data[start:p.i]
			p.i++
			if !utf8.Valid(s) {
				return "", p.fail("invalid unicode code point")
			}
			return string(s), nil
		case c == '\\':
			return p.escaped(start)
		case c < 0x20:
			return "", p.fail("control character (\\u0000-\\u001F) found while parsing a string")
		}
		p.i++
	}
	return "", p.fail("EOF while parsing a string")
}

// escaped reads the rest of a string that has escapes, from its first backslash.
func (p *parser) escaped(start int) (string, error) {
	out := append([]byte(nil), p.data[start:p.i]...)
	for p.i < len(p.data) {
		c := p.data[p.i]
		switch {
		case c == '"':
			p.i++
			if !utf8.Valid(out) {
				return "", p.fail("invalid unicode code point")
			}
			return string(out), nil
		case c < 0x20:
			return "", p.fail("control character (\\u0000-\\u001F) found while parsing a string")
		case c != '\\':
			out = append(out, c)
			p.i++
			continue
		}
		p.i++
		if p.i >= len(p.data) {
			break
		}
		e := p.data[p.i]
		p.i++
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, err := p.unicode()
			if err != nil {
				return "", err
			}
			out = utf8.AppendRune(out, r)
		default:
			return "", p.fail("invalid escape")
		}
	}
	return "", p.fail("EOF while parsing a string")
}

// unicode reads the hex digits of a \u escape (and of the low half of a surrogate pair).
func (p *parser) unicode() (rune, error) {
	r, err := p.hex4()
	if err != nil || !utf16.IsSurrogate(r) {
		return r, err
	}
	if r >= 0xDC00 || len(p.data)-p.i < 6 || p.data[p.i] != '\\' || p.data[p.i+1] != 'u' {
		return 0, p.fail("lone leading surrogate in hex escape")
	}
	p.i += 2
	low, err := p.hex4()
	if err != nil {
		return 0, err
	}
	joined := utf16.DecodeRune(r, low)
	if joined == utf8.RuneError {
		return 0, p.fail("lone leading surrogate in hex escape")
	}
	return joined, nil
}

func (p *parser) hex4() (rune, error) {
	if len(p.data)-p.i < 4 {
		return 0, p.fail("EOF while parsing a string")
	}
	n, err := strconv.ParseUint(string(p.data[p.i:p.i+4]), 16, 32)
	if err != nil {
		return 0, p.fail("invalid escape")
	}
	p.i += 4
	return rune(n), nil
}

// number scans a number by JSON's grammar, then reads it as serde_json does.
func (p *parser) number() (any, error) {
	start := p.i
	if p.data[p.i] == '-' {
		p.i++
	}
	if p.i < len(p.data) && p.data[p.i] == '0' {
		p.i++
	} else if !p.digits() {
		return nil, p.fail("invalid number")
	}
	if p.i < len(p.data) && p.data[p.i] == '.' {
		p.i++
		if !p.digits() {
			return nil, p.fail("invalid number")
		}
	}
	if p.i < len(p.data) && (p.data[p.i] == 'e' || p.data[p.i] == 'E') {
		p.i++
		if p.i < len(p.data) && (p.data[p.i] == '+' || p.data[p.i] == '-') {
			p.i++
		}
		if !p.digits() {
			return nil, p.fail("invalid number")
		}
	}
	n, err := number(string(p.data[start:p.i]))
	if err != nil {
		return nil, p.fail("number out of range")
	}
	return n, nil
}

// digits reads one or more decimal digits (whether there was one).
func (p *parser) digits() bool {
	start := p.i
	for p.i < len(p.data) && p.data[p.i] >= '0' && p.data[p.i] <= '9' {
		p.i++
	}
	return p.i > start
}
