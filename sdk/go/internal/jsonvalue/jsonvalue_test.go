package jsonvalue

import (
	"encoding/json"
	"math"
	"math/rand"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// plain is v as encoding/json reads JSON into `any`: maps, and every number a float64.
func plain(v any) any {
	switch t := v.(type) {
	case *Object:
		m := map[string]any{}
		for _, k := range t.Keys() {
			x, _ := t.Get(k)
			m[k] = plain(x)
		}
		return m
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = plain(x)
		}
		return out
	case int64, uint64, float64:
		f, _ := Number(t)
		return f
	}
	return v
}

var valid = []string{
	`null`, `true`, `false`, `0`, `-0`, `12`, `-7`, `1.5`, `-0.25e-3`, `6E2`, `1e400`,
	`9223372036854775807`, `9223372036854775808`, `18446744073709551616`, `""`, `"a\"b\\c\/d"`,
	`"\b\f\n\r\t"`, `"\u00e9\u4e2d\ud83d\ude00"`, `"ünïcode 中文"`, `[]`, `{}`, ` [ 1 , [ 2 ] , { } ] `,
	`{"a":1,"b":[true,null],"c":{"d":"e"}}`, `{"a":1,"a":2}`, "\t{\n\"x\" : -1.0e+2\r\n}\n",
	`{"amount":150,"country":"DE","items":[{"sku":"s1","qty":2}],"note":"x<y&z"}`,
}

var invalid = []string{
	``, ` `, `nul`, `tru`, `01`, `1.`, `.5`, `-`, `+1`, `1e`, `1e+`, `[1,]`, `[1 2]`, `{"a"}`,
	`{"a":1,}`, `{a:1}`, `{"a":1`, `[`, `"abc`, "\"a\nb\"", `"\x"`, `"\u12"`, `1 2`, `[]]`,
	`{"a":1}x`, `'a'`,
}

func TestParseReadsWhatEncodingJSONReads(t *testing.T) {
	for _, doc := range valid {
		got, err := Parse([]byte(doc))
		var want any
		wantErr := json.Unmarshal([]byte(doc), &want)
		if doc == `1e400` { // serde_json and this parser refuse it; encoding/json too
			if err == nil || wantErr == nil {
				t.Errorf("%s: both must refuse a number out of range", doc)
			}
			continue
		}
		if err != nil || wantErr != nil {
			t.Errorf("%s: %v / encoding/json: %v", doc, err, wantErr)
			continue
		}
		if !reflect.DeepEqual(plain(got), want) {
			t.Errorf("%s: %#v, encoding/json %#v", doc, plain(got), want)
		}
	}
}

func TestParseRefusesWhatEncodingJSONRefuses(t *testing.T) {
	for _, doc := range invalid {
		var v any
		if json.Unmarshal([]byte(doc), &v) == nil {
			t.Fatalf("%q: encoding/json reads it, the case is wrong", doc)
		}
		if _, err := Parse([]byte(doc)); err == nil {
			t.Errorf("%q: read, where encoding/json refuses it", doc)
		}
	}
}

// serde_json refuses these where encoding/json replaces them with U+FFFD.
func TestParseRefusesInvalidUnicodeAsSerdeJSONDoes(t *testing.T) {
	for _, doc := range []string{"\"\xff\"", `"\ud800"`, `"\ud800\u0041"`, `"\udc00"`} {
		if _, err := Parse([]byte(doc)); err == nil {
			t.Errorf("%q: read", doc)
		}
	}
	// serde_json reads 127 levels and refuses 128.
	nested := func(n int) []byte { return []byte(strings.Repeat("[", n) + strings.Repeat("]", n)) }
	if _, err := Parse(nested(127)); err != nil {
		t.Errorf("127 levels: %v", err)
	}
	if _, err := Parse(nested(128)); err == nil || !strings.Contains(err.Error(), "recursion") {
		t.Errorf("128 levels: %v", err)
	}
}

func TestNumbersAreReadAsSerdeJSONReadsThem(t *testing.T) {
	cases := map[string]any{
		`12`: int64(12), `-0`: math.Copysign(0, -1), `9223372036854775808`: uint64(9223372036854775808),
		`18446744073709551616`: 18446744073709551616.0, `2.0`: 2.0, `1e2`: 100.0,
	}
	for doc, want := range cases {
		got, err := Parse([]byte(doc))
		if err != nil || got != want {
			t.Errorf("%s: %#v (%v), want %#v", doc, got, err, want)
		}
	}
}

func TestIntegersCompareExactly(t *testing.T) {
	if Equal(int64(9007199254740993), int64(9007199254740992)) {
		t.Error("2^53+1 equals 2^53")
	}
	if !Equal(int64(3), 3.0) || Equal(uint64(1<<63), int64(1<<62)) {
		t.Error("3 and 3.0 differ, or 2^63 equals 2^62")
	}
}

func TestKeysKeepTheirOrder(t *testing.T) {
	v, err := Parse([]byte(`{"z":1,"a":2,"m":{"y":1,"b":2},"a":3}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(Marshal(v)); got != `{"z":1,"a":3,"m":{"y":1,"b":2}}` {
		t.Errorf("%s", got)
	}
}

// Floats as serde_json (ryu) writes them.
func TestFloatsAreWrittenAsSerdeJSONWritesThem(t *testing.T) {
	cases := map[float64]string{
		1000: "1000.0", 0.5: "0.5", -1000: "-1000.0", 0: "0.0", math.Copysign(0, -1): "-0.0",
		1e15: "1000000000000000.0", 1e16: "1e16", 1e21: "1e21", 1.5e-7: "1.5e-7",
		0.00001: "0.00001", 0.000001: "1e-6", 123456789012345680: "1.2345678901234568e17",
		0.30000000000000004: "0.30000000000000004", math.NaN(): "null", math.Inf(1): "null",
	}
	for f, want := range cases {
		if got := string(Marshal(f)); got != want {
			t.Errorf("%v: %s, want %s", f, got, want)
		}
	}
	if got := string(Marshal("a\"\\\n\x01\u2028<&>é")); got != `"a\"\\\n\u0001`+"\u2028<&>é\"" {
		t.Errorf("string: %s", got)
	}
}

// Random values: what Marshal writes, Parse reads back as the same value, and encoding/json
// reads as the same value too.
func TestRandomValuesRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for i := 0; i < 2000; i++ {
		v := randomValue(rng, 0)
		text := Marshal(v)
		back, err := Parse(text)
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		if !Equal(back, v) || string(Marshal(back)) != string(text) {
			t.Fatalf("%s read back as %s", text, Marshal(back))
		}
		var want any
		if err := json.Unmarshal(text, &want); err != nil || !reflect.DeepEqual(plain(back), want) {
			t.Fatalf("%s: encoding/json reads %#v (%v)", text, want, err)
		}
	}
}

func randomValue(rng *rand.Rand, depth int) any {
	kinds := 9
	if depth > 3 {
		kinds = 7
	}
	switch rng.Intn(kinds) {
	case 0:
		return nil
	case 1:
		return rng.Intn(2) == 0
	case 2:
		return rng.Int63n(1<<62) - 1<<61
	case 3:
		for { // any finite float, of either sign and any exponent
			f := math.Float64frombits(rng.Uint64())
			if !math.IsNaN(f) && !math.IsInf(f, 0) {
				return f
			}
		}
	case 4:
		return float64(rng.Intn(1000)) + 0.5
	case 5, 6:
		var b strings.Builder
		for n := rng.Intn(8); n > 0; n-- {
			b.WriteRune([]rune("aZ09 \"\\/\n\t\x01é中😀")[rng.Intn(14)])
		}
		return b.String()
	case 7:
		items := []any{}
		for n := rng.Intn(4); n > 0; n-- {
			items = append(items, randomValue(rng, depth+1))
		}
		return items
	default:
		o := NewObject()
		for n := rng.Intn(4); n > 0; n-- {
			o.Set("k"+strconv.Itoa(rng.Intn(6)), randomValue(rng, depth+1))
		}
		return o
	}
}

var order = []byte(`{"order_id": 12345, "customer": "c42", "amount": 269.5, "currency": "EUR", "items": [{"sku": "s1", "qty": 2}], "email": "a@b.c"}`)

func BenchmarkParse(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if _, err := Parse(order); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodingJSONUnmarshal(b *testing.B) {
	for i := 0; i < b.N; i++ {
		var v any
		if err := json.Unmarshal(order, &v); err != nil {
			b.Fatal(err)
		}
	}
}
