//! Reading and editing a record's JSON value without building it as a tree.
//!
//! Most plugins read a few fields and change fewer. Parsing the whole value into a
//! `serde_json::Value` and writing it back spends most of a record's time on fields nobody looks
//! at (a map node and a string allocation each, dearer still inside wasm). A [`JsonDoc`] checks
//! the whole text once and notes where each value lies; reading a field parses that field alone,
//! and the output is the input with the changed fields spliced in and every other byte copied
//! as it was (key order and formatting kept). An edit that cannot be spliced safely (inside a
//! field already changed, through duplicate keys, creating parents) turns the document into a
//! `Value` first, so the result is always what editing the tree would give.
//!
//! Paths are JSON Pointers: a [`Pointer`] parsed once (from a plugin's config, say), or pointer
//! text.

use std::sync::Arc;

use serde_json::Value;

use crate::{Error, Result};

mod pointer;

use pointer::{index, tokens, Place, Token};
pub use pointer::{AsPointer, Pointer};

/// How deep objects and arrays may nest: serde_json's own limit (it refuses a 128th level), so
/// both agree on what parses.
const MAX_DEPTH: usize = 127;

/// A record value's JSON document, read lazily. See the [module docs](self).
pub struct JsonDoc<'a> {
    text: &'a [u8],
    form: Form,
}

enum Form {
    /// The checked text, its values located, and the edits to splice into it. Edits are on
    /// unrelated paths (none inside another), so their spans never overlap.
    Spans { nodes: Vec<Node>, edits: Vec<Edit> },
    /// The document as a tree, once an edit needed one.
    Tree(Value),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Scalar,
    Array,
    Object,
}

/// One value of the document, in document order (a parent before its children).
#[derive(Clone, Copy, Debug)]
struct Node {
    /// The value's text is `text[start..end]`.
    start: u32,
    end: u32,
    /// For an object member, its key's text between the quotes (still escaped).
    key_start: u32,
    key_end: u32,
    key_escaped: bool,
    /// The index of the first node after this value and everything inside it: the next
    /// sibling, if there is one.
    skip: u32,
    kind: Kind,
}

struct Edit {
    /// [Canonical](pointer::canonical), so that one path has one spelling.
    pointer: Arc<str>,
    splice: Splice,
    value: Value,
}

enum Splice {
    /// The existing value at `start..end` is replaced.
    Replace { start: u32, end: u32 },
    /// A new member `key` goes in before the closing brace at `at`, after a comma if the object
    /// already has members.
    Insert { at: u32, key: Arc<str>, comma: bool },
}

/// Where a pointer leads in the located text.
enum Found {
    /// To this node; `duplicate` if some object on the way has the key more than once.
    Node { index: usize, duplicate: bool },
    /// Its last token is missing from this object (which has no duplicate on the way).
    NewMember { parent: usize, key: Arc<str> },
    /// Nowhere the text has.
    Absent,
}

impl<'a> JsonDoc<'a> {
    /// Check `text` as JSON and locate its values. The error is serde_json's own for that text.
    pub fn parse(text: &'a [u8]) -> Result<Self> {
        match locate(text) {
            Some(nodes) => Ok(JsonDoc {
                text,
                form: Form::Spans {
                    nodes,
                    edits: Vec::new(),
                },
            }),
            // This checker is stricter than serde_json at the edges (a lone surrogate escape it
            // may let through, say); serde_json has the last word and the message.
            None => match serde_json::from_slice::<Value>(text) {
                Ok(tree) => Ok(JsonDoc {
                    text,
                    form: Form::Tree(tree),
                }),
                Err(e) => Err(Error::msg(format!("value is not JSON: {e}"))),
            },
        }
    }

    /// The value at JSON `pointer` (`""` is the whole document), or `None` where there is none.
    /// Of a key that appears twice in an object, the last counts, as in serde_json.
    pub fn get<P: AsPointer + ?Sized>(&self, pointer: &P) -> Option<Value> {
        let place = pointer.__place();
        let (nodes, edits) = match &self.form {
            Form::Tree(tree) => return lookup(tree, place).cloned(),
            Form::Spans { nodes, edits } => (nodes, edits),
        };
        let path = place.canonical();
        for edit in edits {
            match relation(&path, &edit.pointer) {
                Relation::Same => return Some(edit.value.clone()),
                Relation::Inside(rest) => return edit.value.pointer(rest).cloned(),
                Relation::Around => return lookup(&self.tree_copy(), place).cloned(),
                Relation::Apart => {}
            }
        }
        match find_at(self.text, nodes, place) {
            Found::Node { index, .. } => {
                let n = nodes[index];
                // Checked already; serde_json only fails here on what it would have refused.
                parse_span(&self.text[n.start as usize..n.end as usize])
            }
            _ => None,
        }
    }

    /// Put `value` at JSON `pointer`: it replaces the value there, or becomes a new member of
    /// the object it points into. Missing (or null) parent objects are created; in an array, an
    /// index in bounds replaces, and `-` (or the length) appends. A scalar, or an array without
    /// that index, on the way is an error naming it.
    pub fn set<P: AsPointer + ?Sized>(&mut self, pointer: &P, value: Value) -> Result<()> {
        let place = pointer.__place();
        if let Form::Spans { nodes, edits } = &mut self.form {
            let path = place.canonical();
            let mut related = false;
            for edit in edits.iter_mut() {
                match relation(&path, &edit.pointer) {
                    Relation::Same => {
                        edit.value = value;
                        return Ok(());
                    }
                    Relation::Apart => {}
                    Relation::Inside(_) | Relation::Around => related = true,
                }
            }
            if !related {
                let splice = match find_at(self.text, nodes, place) {
                    Found::Node {
                        index,
                        duplicate: false,
                    } => Some(Splice::Replace {
                        start: nodes[index].start,
                        end: nodes[index].end,
                    }),
                    Found::NewMember { parent, key } => {
                        let at = nodes[parent].end - 1;
                        let comma = nodes[parent].skip as usize > parent + 1
                            || edits.iter().any(
                                |e| matches!(&e.splice, Splice::Insert { at: a, .. } if *a == at),
                            );
                        Some(Splice::Insert { at, key, comma })
                    }
                    _ => None,
                };
                if let Some(splice) = splice {
                    edits.push(Edit {
                        pointer: place.keep(path),
                        splice,
                        value,
                    });
                    return Ok(());
                }
            }
        }
        set_in(self.tree(), place, value)
    }

    /// Replace the value at JSON `pointer`, if there is one, with what `f` makes of it; `false`
    /// if there is none. One lookup where [`get`](Self::get) then [`set`](Self::set) take two.
    pub fn update<P: AsPointer + ?Sized>(
        &mut self,
        pointer: &P,
        f: impl FnOnce(Value) -> Result<Value>,
    ) -> Result<bool> {
        let place = pointer.__place();
        if let Form::Spans { nodes, edits } = &mut self.form {
            let path = place.canonical();
            if edits
                .iter()
                .all(|e| matches!(relation(&path, &e.pointer), Relation::Apart))
            {
                match find_at(self.text, nodes, place) {
                    Found::Node {
                        index,
                        duplicate: false,
                    } => {
                        let Node { start, end, .. } = nodes[index];
                        let text = &self.text[start as usize..end as usize];
                        if let Some(old) = parse_span(text) {
                            edits.push(Edit {
                                pointer: place.keep(path),
                                splice: Splice::Replace { start, end },
                                value: f(old)?,
                            });
                            return Ok(true);
                        }
                    }
                    Found::Node { .. } => {}
                    Found::NewMember { .. } | Found::Absent => return Ok(false),
                }
            }
        }
        match self.get(&place) {
            Some(old) => {
                let new = f(old)?;
                self.set(&place, new).map(|()| true)
            }
            None => Ok(false),
        }
    }

    /// The whole document as a tree, to change in ways [`set`](Self::set) does not cover. Costs
    /// a full parse the first time; the output is then written from the tree.
    pub fn tree(&mut self) -> &mut Value {
        if let Form::Spans { .. } = self.form {
            self.form = Form::Tree(self.tree_copy());
        }
        match &mut self.form {
            Form::Tree(tree) => tree,
            Form::Spans { .. } => unreachable!("just made a tree"),
        }
    }

    /// The document with its edits, as JSON text.
    pub fn into_bytes(self) -> Vec<u8> {
        let mut edits = match self.form {
            Form::Tree(tree) => return serde_json::to_vec(&tree).expect("a Value always encodes"),
            Form::Spans { edits, .. } => edits,
        };
        if edits.is_empty() {
            return self.text.to_vec();
        }
        let position = |e: &Edit| match e.splice {
            Splice::Replace { start, .. } => start,
            Splice::Insert { at, .. } => at,
        };
        // Stable: new members of one object keep the order they were set in. An insertion
        // sort, as there are a few edits at most: the standard sort's machinery costs more
        // than the sorting then, in wasm above all.
        for i in 1..edits.len() {
            let mut j = i;
            while j > 0 && position(&edits[j - 1]) > position(&edits[j]) {
                edits.swap(j - 1, j);
                j -= 1;
            }
        }
        let mut out = Vec::with_capacity(self.text.len() + 32 * edits.len());
        let mut copied = 0usize;
        for edit in &edits {
            let at = position(edit) as usize;
            out.extend_from_slice(&self.text[copied..at]);
            match &edit.splice {
                Splice::Replace { end, .. } => copied = *end as usize,
                Splice::Insert { key, comma, .. } => {
                    copied = at;
                    if *comma {
                        out.push(b',');
                    }
                    write_string(&mut out, key);
                    out.push(b':');
                }
            }
            write_json(&mut out, &edit.value);
        }
        out.extend_from_slice(&self.text[copied..]);
        out
    }

    /// The document as a tree with the edits so far applied.
    fn tree_copy(&self) -> Value {
        match &self.form {
            Form::Tree(tree) => tree.clone(),
            Form::Spans { edits, .. } => {
                let mut tree: Value =
                    serde_json::from_slice(self.text).expect("checked text parses");
                for edit in edits {
                    set_in(&mut tree, Place::Text(&edit.pointer), edit.value.clone())
                        .expect("a spliced edit has a place in the tree");
                }
                tree
            }
        }
    }
}

fn write_json(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(s) => write_string(out, s),
        _ => serde_json::to_writer(out, value).expect("writing JSON to memory cannot fail"),
    }
}

/// `s` as a JSON string, as serde_json writes it. Most strings need no escape; those are
/// copied whole rather than looked at byte by byte (in wasm, each turn of a loop also checks
/// the time limit).
fn write_string(out: &mut Vec<u8>, s: &str) {
    if plain(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, s).expect("writing JSON to memory cannot fail");
    }
}

/// The value of a checked span of the text. A string without escapes becomes a `String` of
/// its bytes at once, a number in its common forms its `Number` at once ([`number_value`]);
/// the rest goes through serde_json.
fn parse_span(text: &[u8]) -> Option<Value> {
    match text {
        [b'"', inner @ .., b'"'] if plain(inner) => {
            // The whole text was checked as UTF-8 and the quotes are ASCII, so this is UTF-8;
            // checked again all the same, which the ASCII fast path makes cheap.
            return utf8(inner).map(|s| Value::String(s.into()));
        }
        [b'-' | b'0'..=b'9', ..] => {
            if let Some(number) = number_value(text) {
                return Some(Value::Number(number));
            }
        }
        _ => {}
    }
    serde_json::from_slice(text).ok()
}

/// The number a checked JSON number's text is, as serde_json makes it, for the forms records
/// mostly hold; `None` sends the rest (-0, integers beyond 64 bits) to serde_json. An integer
/// becomes a `u64`, or an `i64` if negative; a decimal or exponent form an `f64`, which Rust's
/// parser rounds correctly, as serde_json does with `float_roundtrip` (this workspace's
/// setting). Worth having in wasm above all: serde_json's number parsing is many small calls,
/// and each call there also checks the time limit.
fn number_value(text: &[u8]) -> Option<serde_json::Number> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        let x: f64 = utf8(text)?.parse().ok()?;
        return serde_json::Number::from_f64(x);
    }
    // At most 19 digits are below 10^19, which fits a u64; longer ones are serde_json's.
    if digits.len() > 19 {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    match (negative, n) {
        (false, n) => Some(n.into()),
        // serde_json makes -0 an f64 and takes anything below i64::MIN as one too.
        (true, 0) => None,
        (true, n) if n <= 1 << 63 => Some((n as i64).wrapping_neg().into()),
        (true, _) => None,
    }
}

/// Whether `bytes` hold no quote, backslash or control character: nothing JSON escapes in a
/// string. Eight bytes at a time.
fn plain(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        if escapes(u64::from_le_bytes(chunk.try_into().expect("eight bytes"))) != 0 {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|&b| b != b'"' && b != b'\\' && b >= 0x20)
}

/// The high bit set in each byte of `v` that a JSON string escapes (a quote, a backslash or a
/// control character), with the caveat of [`has_below`].
fn escapes(v: u64) -> u64 {
    has_byte(v, b'"') | has_byte(v, b'\\') | has_below(v, 0x20)
}

enum Relation<'p> {
    Same,
    /// The pointer is inside the other one's value, at this rest of it.
    Inside(&'p str),
    /// The other one is inside the pointer's value.
    Around,
    Apart,
}

/// How `pointer` relates to `other`, both [`canonical`]: then each path has one spelling, so
/// text comparison is path comparison.
fn relation<'p>(pointer: &'p str, other: &str) -> Relation<'p> {
    if pointer == other {
        Relation::Same
    } else if let Some(rest) = pointer.strip_prefix(other).filter(|r| r.starts_with('/')) {
        Relation::Inside(rest)
    } else if other
        .strip_prefix(pointer)
        .is_some_and(|r| r.starts_with('/'))
    {
        Relation::Around
    } else {
        Relation::Apart
    }
}

fn key_is(text: &[u8], node: &Node, token: &str) -> bool {
    let raw = &text[node.key_start as usize..node.key_end as usize];
    if !node.key_escaped {
        let token = token.as_bytes();
        return raw.len() == token.len() && same(raw, token);
    }
    let quoted = &text[node.key_start as usize - 1..node.key_end as usize + 1];
    serde_json::from_slice::<String>(quoted).is_ok_and(|key| key == token)
}

/// Whether `a` and `b`, of one length, hold the same bytes. Keys are short: up to 16 bytes this
/// takes two overlapping loads a side and no loop or call (memcmp is one of each, and in wasm
/// both check the time limit).
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8"));
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("4"));
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

/// Where `place` leads in the located text: a parsed pointer's tokens are walked as they are,
/// pointer text is split on the way.
fn find_at(text: &[u8], nodes: &[Node], place: Place) -> Found {
    match place {
        Place::Parsed(pointer) => find(text, nodes, pointer.token_list().iter()),
        Place::Text(pointer) => match tokens(pointer) {
            Some(tokens) => find(text, nodes, tokens),
            None => Found::Absent,
        },
    }
}

fn find<T: Token>(text: &[u8], nodes: &[Node], tokens: impl Iterator<Item = T>) -> Found {
    let mut tokens = tokens.peekable();
    let (mut current, mut duplicate) = (0usize, false);
    while let Some(token) = tokens.next() {
        let node = nodes[current];
        let mut child = current + 1;
        let mut found = None;
        match node.kind {
            Kind::Scalar => return Found::Absent,
            Kind::Object => {
                let token = token.as_ref();
                while child < node.skip as usize {
                    // Most keys differ in length: told apart here, without a call (which in
                    // wasm also checks the time limit).
                    let member = &nodes[child];
                    let len = (member.key_end - member.key_start) as usize;
                    if (len == token.len() || member.key_escaped) && key_is(text, member, token) {
                        duplicate |= found.is_some();
                        found = Some(child);
                    }
                    child = nodes[child].skip as usize;
                }
            }
            Kind::Array => {
                let Some(wanted) = index(token.as_ref()) else {
                    return Found::Absent;
                };
                let mut i = 0;
                while child < node.skip as usize {
                    if i == wanted {
                        found = Some(child);
                        break;
                    }
                    i += 1;
                    child = nodes[child].skip as usize;
                }
            }
        }
        match found {
            Some(next) => current = next,
            None if node.kind == Kind::Object && !duplicate && tokens.peek().is_none() => {
                return Found::NewMember {
                    parent: current,
                    key: token.keep(),
                }
            }
            None => return Found::Absent,
        }
    }
    Found::Node {
        index: current,
        duplicate,
    }
}

/// The value at `place` in a tree.
fn lookup<'v>(tree: &'v Value, place: Place) -> Option<&'v Value> {
    match place {
        Place::Parsed(pointer) => pointer.get(tree),
        Place::Text(pointer) => tree.pointer(pointer),
    }
}

/// Put `value` at `place` in a tree; see [`JsonDoc::set`].
fn set_in(doc: &mut Value, place: Place, value: Value) -> Result<()> {
    match place {
        Place::Parsed(pointer) => {
            let tokens: Vec<&str> = pointer.tokens().collect();
            set_tokens(doc, pointer.as_str(), &tokens, value)
        }
        Place::Text(pointer) => match tokens(pointer) {
            Some(split) => {
                let split: Vec<_> = split.collect();
                let tokens: Vec<&str> = split.iter().map(|t| &**t).collect();
                set_tokens(doc, pointer, &tokens, value)
            }
            None => Err(Error::msg(format!(
                "cannot set `{pointer}`: it is not a JSON pointer (it must start with `/`)"
            ))),
        },
    }
}

/// [`set_in`] with `pointer` split into `tokens`. Not generic over the tokens' type: the
/// tree's path is the slow one, and one copy of this (large, with serde_json's map inlined) is
/// enough in a component.
fn set_tokens(doc: &mut Value, pointer: &str, tokens: &[&str], value: Value) -> Result<()> {
    let Some((last, parents)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    let blocked = |depth: usize, what: &str| {
        let parent = pointer
            .split('/')
            .take(depth + 1)
            .collect::<Vec<_>>()
            .join("/");
        let parent = if parent.is_empty() {
            "the value"
        } else {
            &parent
        };
        Error::msg(format!("cannot set `{pointer}`: {parent} is {what}"))
    };
    let mut cur = doc;
    for (depth, token) in parents.iter().enumerate() {
        if cur.is_null() {
            *cur = Value::Object(Default::default());
        }
        cur = match cur {
            Value::Object(map) => map
                .entry(*token)
                .or_insert_with(|| Value::Object(Default::default())),
            Value::Array(items) => match index(token) {
                Some(i) if i < items.len() => &mut items[i],
                _ => return Err(blocked(depth, "an array without that index")),
            },
            other => return Err(blocked(depth, kind(other))),
        };
    }
    if cur.is_null() {
        *cur = Value::Object(Default::default());
    }
    match cur {
        Value::Object(map) => {
            map.insert(last.to_string(), value);
        }
        Value::Array(items) => match index(last) {
            Some(i) if i < items.len() => items[i] = value,
            Some(i) if i == items.len() => items.push(value),
            _ if *last == "-" => items.push(value),
            _ => return Err(blocked(parents.len(), "an array without that index")),
        },
        other => return Err(blocked(parents.len(), kind(other))),
    }
    Ok(())
}

/// What kind of JSON value `v` is, as an error message says it: "a number", "an object".
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Check `text` as one JSON value and list where its values are; `None` if it is not JSON (or
/// not JSON this checker vouches for: serde_json then decides).
fn locate(text: &[u8]) -> Option<Vec<Node>> {
    // Strings are checked byte by byte below for quotes, escapes and control characters;
    // UTF-8 is checked once for the whole text, which is faster.
    utf8(text)?;
    if text.len() >= u32::MAX as usize {
        return None;
    }
    let mut p = Locator {
        text,
        nodes: Vec::with_capacity(16),
    };
    let at = p.value(space(text, 0), None, 0)?;
    (space(text, at) == text.len()).then_some(p.nodes)
}

/// The parser behind [`locate`]. The cursor is passed along and returned rather than kept in
/// the struct, and each function copies `text` out first: both then stay in registers instead
/// of being stored to memory and read back at every byte (which costs more in wasm, where the
/// struct lives in linear memory).
struct Locator<'a> {
    text: &'a [u8],
    nodes: Vec<Node>,
}

impl Locator<'_> {
    /// The value at `at` (after any whitespace), as a member with `key` if given; returns where
    /// it ends. Inlined into the loop of [`container`](Self::container), so only objects and
    /// arrays cost a call (in wasm, each call also checks the time limit).
    #[inline(always)]
    fn value(&mut self, at: usize, key: Option<(u32, u32, bool)>, depth: usize) -> Option<usize> {
        let text = self.text;
        let index = self.nodes.len();
        let (key_start, key_end, key_escaped) = key.unwrap_or((0, 0, false));
        self.nodes.push(Node {
            start: at as u32,
            end: 0,
            key_start,
            key_end,
            key_escaped,
            skip: 0,
            kind: Kind::Scalar,
        });
        let (end, kind) = match *text.get(at)? {
            b'{' | b'[' => self.container(at, depth)?,
            b'"' => (string(text, at)?.0, Kind::Scalar),
            b't' => (literal(text, at, b"true")?, Kind::Scalar),
            b'f' => (literal(text, at, b"false")?, Kind::Scalar),
            b'n' => (literal(text, at, b"null")?, Kind::Scalar),
            b'-' | b'0'..=b'9' => (number(text, at)?, Kind::Scalar),
            _ => return None,
        };
        let skip = self.nodes.len() as u32;
        let node = &mut self.nodes[index];
        node.end = end as u32;
        node.skip = skip;
        node.kind = kind;
        Some(end)
    }

    /// The object or array at `at`, its members or items pushed as nodes; returns where it ends.
    #[inline(never)]
    fn container(&mut self, at: usize, depth: usize) -> Option<(usize, Kind)> {
        if depth == MAX_DEPTH {
            return None;
        }
        let text = self.text;
        let object = text[at] == b'{';
        let close = if object { b'}' } else { b']' };
        let mut at = space(text, at + 1);
        if *text.get(at)? == close {
            at += 1;
        } else {
            loop {
                let key = if object {
                    if *text.get(at)? != b'"' {
                        return None;
                    }
                    let (end, start, stop, escaped) = string(text, at)?;
                    at = space(text, end);
                    if *text.get(at)? != b':' {
                        return None;
                    }
                    at = space(text, at + 1);
                    Some((start, stop, escaped))
                } else {
                    None
                };
                at = space(text, self.value(at, key, depth + 1)?);
                match *text.get(at)? {
                    b',' => at = space(text, at + 1),
                    c if c == close => {
                        at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        Some((at, if object { Kind::Object } else { Kind::Array }))
    }
}

/// Where the whitespace at `at` ends. Compact JSON has none, so that case is a test with no
/// loop (in wasm, entering a loop also checks the time limit).
#[inline(always)]
fn space(text: &[u8], at: usize) -> usize {
    match text.get(at) {
        Some(b' ' | b'\n' | b'\r' | b'\t') => spaces(text, at + 1),
        _ => at,
    }
}

/// Where the whitespace after the first whitespace byte ends.
#[inline(never)]
fn spaces(text: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = text.get(at) {
        at += 1;
    }
    at
}

/// The literal `word` at `at`; returns where it ends.
#[inline(always)]
fn literal(text: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    (text.get(at..at + word.len()) == Some(word)).then_some(at + word.len())
}

/// The string at `at`: where it ends (after the closing quote), its text between the quotes,
/// and whether it has escapes.
#[inline(always)]
fn string(text: &[u8], at: usize) -> Option<(usize, u32, u32, bool)> {
    let start = at + 1;
    let mut at = start;
    let mut escaped = false;
    loop {
        // Eight bytes at a time while none is a quote, a backslash or a control character:
        // most strings are plain text, and a wasm loop pays a time check per turn.
        while let Some(chunk) = text.get(at..at + 8) {
            let v = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            let special = escapes(v);
            if special != 0 {
                at += (special.trailing_zeros() / 8) as usize;
                break;
            }
            at += 8;
        }
        match *text.get(at)? {
            b'"' => break,
            b'\\' => {
                escaped = true;
                at = escape(text, at + 1)?;
            }
            0..=0x1f => return None,
            _ => at += 1,
        }
    }
    Some((at + 1, start as u32, at as u32, escaped))
}

/// The escape after the backslash at `at - 1`; returns where it ends. Rare, so not inlined.
#[inline(never)]
fn escape(text: &[u8], at: usize) -> Option<usize> {
    match *text.get(at)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(at + 1),
        b'u' => {
            let unit = hex4(text, at)?;
            if (0xDC00..0xE000).contains(&unit) {
                return None;
            }
            if !(0xD800..0xDC00).contains(&unit) {
                return Some(at + 5);
            }
            // A leading surrogate must be followed by a trailing one.
            if text.get(at + 5) != Some(&b'\\') {
                return None;
            }
            let trail = hex4(text, at + 6)?;
            (0xDC00..0xE000).contains(&trail).then_some(at + 11)
        }
        _ => None,
    }
}

/// `u` and four hex digits at `at`, as a number.
fn hex4(text: &[u8], at: usize) -> Option<u32> {
    if text.get(at) != Some(&b'u') {
        return None;
    }
    let digits = text.get(at + 1..at + 5)?;
    let digits = std::str::from_utf8(digits).ok()?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// Where the digits at `at` end.
#[inline(always)]
fn digits(text: &[u8], mut at: usize) -> usize {
    // Eight bytes at a time while all are digits, as for strings.
    while let Some(chunk) = text.get(at..at + 8) {
        let v = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let other = has_below(v, b'0') | has_above(v, b'9');
        if other != 0 {
            return at + (other.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while let Some(b'0'..=b'9') = text.get(at) {
        at += 1;
    }
    at
}

/// The number at `at`; returns where it ends.
#[inline(always)]
fn number(text: &[u8], start: usize) -> Option<usize> {
    let mut at = start;
    if text.get(at) == Some(&b'-') {
        at += 1;
    }
    match *text.get(at)? {
        b'0' => at += 1,
        b'1'..=b'9' => at = digits(text, at),
        _ => return None,
    }
    let mut rare = at - start > 300;
    if text.get(at) == Some(&b'.') {
        let end = digits(text, at + 1);
        if end == at + 1 {
            return None;
        }
        at = end;
    }
    if let Some(b'e' | b'E') = text.get(at) {
        at += 1;
        if let Some(b'+' | b'-') = text.get(at) {
            at += 1;
        }
        let end = digits(text, at);
        if end == at {
            return None;
        }
        at = end;
        rare = true;
    }
    // serde_json refuses numbers beyond f64's range; only huge ones and exponents can be.
    if rare {
        let number = std::str::from_utf8(&text[start..at]).ok()?;
        if !number.parse::<f64>().ok()?.is_finite() {
            return None;
        }
    }
    Some(at)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit set in each byte of `v` below `n` (`n` at most 128). Bytes above the first one
/// may be flagged falsely (a borrow), so only the lowest flag counts.
fn has_below(v: u64, n: u8) -> u64 {
    v.wrapping_sub(ONES * u64::from(n)) & !v & HIGHS
}

/// Whether `bytes` are all ASCII (so UTF-8), sixteen at a time: most records are, and the
/// general check goes eight at a time at best in wasm (its words are four bytes).
fn ascii(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(16);
    for chunk in &mut chunks {
        let a = u64::from_le_bytes(chunk[..8].try_into().expect("eight bytes"));
        let b = u64::from_le_bytes(chunk[8..].try_into().expect("eight bytes"));
        if (a | b) & HIGHS != 0 {
            return false;
        }
    }
    chunks.remainder().is_ascii()
}

/// `bytes` as text, if they are UTF-8. Text is mostly ASCII, which [`ascii`] checks faster than
/// the standard library's check (whose words are four bytes in wasm) and which is UTF-8.
pub(crate) fn utf8(bytes: &[u8]) -> Option<&str> {
    if ascii(bytes) {
        // SAFETY: ASCII is UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

/// The high bit set in each byte of `v` above `n` (`n` below 128), with the caveat of
/// [`has_below`] (a carry out of a byte of 128 or more).
fn has_above(v: u64, n: u8) -> u64 {
    (v.wrapping_add(ONES * u64::from(127 - n)) | v) & HIGHS
}

/// The high bit set in each byte of `v` equal to `b`, with the caveat of [`has_below`].
fn has_byte(v: u64, b: u8) -> u64 {
    has_below(v ^ (ONES * u64::from(b)), 1)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn doc(text: &str) -> JsonDoc<'_> {
        JsonDoc::parse(text.as_bytes()).unwrap()
    }

    fn spliced(d: &JsonDoc) -> bool {
        matches!(d.form, Form::Spans { .. })
    }

    fn out(d: JsonDoc) -> String {
        String::from_utf8(d.into_bytes()).unwrap()
    }

    #[test]
    fn keys_of_every_length_differ_anywhere() {
        for n in 0..40 {
            let a: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(super::same(&a, &a.clone()), "length {n}");
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x20;
                assert!(!super::same(&a, &b), "length {n}, differing at {at}");
            }
        }
    }

    #[test]
    fn reads_fields_without_a_tree() {
        let d =
            doc(r#" {"a": 1, "b": {"c": [10, "x", {"d": null}]}, "e\u0301": true, "f/g~": 2.5} "#);
        assert_eq!(d.get("/a"), Some(json!(1)));
        assert_eq!(d.get("/b/c/1"), Some(json!("x")));
        assert_eq!(d.get("/b/c/2/d"), Some(json!(null)));
        assert_eq!(d.get("/b/c/3"), None);
        assert_eq!(d.get("/b/c/01"), None);
        assert_eq!(d.get("/e\u{301}"), Some(json!(true)));
        assert_eq!(d.get("/f~1g~0"), Some(json!(2.5)));
        assert_eq!(d.get("/a/x"), None);
        assert_eq!(d.get("a"), None);
        assert_eq!(d.get(""), Some(serde_json::from_str(&out(doc(r#" {"a": 1, "b": {"c": [10, "x", {"d": null}]}, "e\u0301": true, "f/g~": 2.5} "#))).unwrap()));
        assert!(spliced(&d));
    }

    #[test]
    fn the_last_of_duplicate_keys_counts() {
        let d = doc(r#"{"a": 1, "a": 2}"#);
        assert_eq!(d.get("/a"), Some(json!(2)));
        // Setting it cannot splice one of them: both must go, as in the tree.
        let mut d = d;
        d.set("/a", json!(3)).unwrap();
        assert_eq!(out(d), r#"{"a":3}"#);
    }

    #[test]
    fn edits_keep_the_rest_as_it_was() {
        let mut d = doc("{\"z\": 1,\n \"card\": {\"number\": \"4111\"}, \"a\": [1, 2]}");
        d.set("/card/number", json!("[REDACTED]")).unwrap();
        d.set("/new", json!({"x": 1})).unwrap();
        d.set("/card/exp", json!("12/30")).unwrap();
        d.set("/newer", json!(2)).unwrap();
        assert!(spliced(&d));
        assert_eq!(d.get("/card/number"), Some(json!("[REDACTED]")));
        assert_eq!(d.get("/new/x"), Some(json!(1)));
        assert_eq!(
            out(d),
            "{\"z\": 1,\n \"card\": {\"number\": \"[REDACTED]\",\"exp\":\"12/30\"}, \"a\": [1, 2],\"new\":{\"x\":1},\"newer\":2}"
        );
        let mut d = doc("{ }");
        d.set("/a", json!(1)).unwrap();
        d.set("/b", json!(2)).unwrap();
        d.set("/a", json!(3)).unwrap();
        assert_eq!(out(d), r#"{ "a":3,"b":2}"#);
    }

    #[test]
    fn edits_that_cannot_splice_give_the_tree_result() {
        let mut d = doc(r#"{"a": {"b": 1}, "n": null, "l": [0]}"#);
        d.set("/a/b", json!(2)).unwrap();
        d.set("/a", json!({"c": 3})).unwrap(); // around an edit
        d.set("/x/y/z", json!(true)).unwrap(); // creates parents
        d.set("/n/m", json!(1)).unwrap(); // null parent becomes an object
        d.set("/l/-", json!(1)).unwrap();
        d.set("/l/0", json!(5)).unwrap();
        assert!(!spliced(&d));
        assert_eq!(
            serde_json::from_slice::<Value>(&d.into_bytes()).unwrap(),
            json!({"a": {"c": 3}, "n": {"m": 1}, "l": [5, 1], "x": {"y": {"z": true}}})
        );
        let mut d = doc(r#"{"a": 1, "l": []}"#);
        let e = d.set("/a/b", json!(1)).unwrap_err().to_string();
        assert_eq!(e, "cannot set `/a/b`: /a is a number");
        let e = d.set("/l/3", json!(1)).unwrap_err().to_string();
        assert_eq!(e, "cannot set `/l/3`: /l is an array without that index");
    }

    #[test]
    fn update_changes_what_is_there_only() {
        let mut d = doc(r#"{"a": 1, "b": {"c": "x"}, "d": 1, "d": 2}"#);
        let double = |v: Value| Ok(json!(v.as_i64().unwrap_or(0) * 2));
        assert!(d.update("/a", double).unwrap());
        assert!(d.update("/a", double).unwrap()); // after an edit of its own
        assert!(!d.update("/missing", double).unwrap());
        assert!(!d.update("/b/c/x", double).unwrap());
        assert!(d.update("/b/c", |_| Ok(json!("y"))).unwrap());
        assert!(spliced(&d));
        assert!(d.update("/d", double).unwrap()); // duplicates: the tree's answer
        assert_eq!(out(d), r#"{"a":4,"b":{"c":"y"},"d":4}"#);
        let mut d = doc(r#"{"a": 1}"#);
        let e = d.update("/a", |_| Err(Error::msg("no"))).unwrap_err();
        assert_eq!(e.to_string(), "no");
    }

    #[test]
    fn parsed_pointers_lead_where_their_text_does() {
        let text = r#"{"a": {"b": 1}, "d": 1, "d": 2, "s": "x", "l": [0], "t~": 3}"#;
        let double = |v: Value| Ok(json!(v.as_i64().unwrap_or(0) * 2));
        for pointer in [
            "/a/b", "/a/new", "/d", "/s/x", "/l/-", "/l/0", "/l/5", "/x/y", "/a~1b", "/t~", "/t~0",
        ] {
            let parsed: Pointer = pointer.parse().unwrap();
            let (mut by_text, mut by_parsed) = (doc(text), doc(text));
            assert_eq!(by_text.get(pointer), by_parsed.get(&parsed), "{pointer}");
            let set = |d: &mut JsonDoc, p: &dyn Fn(&mut JsonDoc) -> Result<()>| {
                p(d).map_err(|e| e.to_string())
            };
            assert_eq!(
                set(&mut by_text, &|d| d.set(pointer, json!(9))),
                set(&mut by_parsed, &|d| d.set(&parsed, json!(9))),
                "{pointer}"
            );
            assert_eq!(
                by_text.update(pointer, double).unwrap(),
                by_parsed.update(&parsed, double).unwrap(),
                "{pointer}"
            );
            assert_eq!(by_text.get(pointer), by_parsed.get(&parsed), "{pointer}");
            assert_eq!(out(by_text), out(by_parsed), "{pointer}");
        }
        let mut d = doc(r#"{"s": "x"}"#);
        let e = d.set(&"/s/x".parse::<Pointer>().unwrap(), json!(1));
        assert_eq!(
            e.unwrap_err().to_string(),
            "cannot set `/s/x`: /s is a string"
        );
    }

    #[test]
    fn reads_see_earlier_edits() {
        let mut d = doc(r#"{"a": {"b": 1}, "c": 2}"#);
        d.set("/a", json!({"b": 5})).unwrap();
        assert_eq!(d.get("/a/b"), Some(json!(5)));
        d.set("/c", json!(7)).unwrap();
        assert_eq!(d.get("/c"), Some(json!(7)));
        assert_eq!(d.get(""), Some(json!({"a": {"b": 5}, "c": 7})));
        assert!(spliced(&d));
    }

    #[test]
    fn numbers_of_every_length_end_where_their_digits_do() {
        for len in 1..20 {
            let digits: String = "1234567890123456789".chars().take(len).collect();
            for (after, ok) in [
                ("]", true),
                (",0]", true),
                (".5]", true),
                ("e3]", true),
                ("/]", false),
                (":]", false),
                ("a]", false),
                ("\u{e9}]", false),
            ] {
                let text = format!("[{digits}{after}");
                let ours = locate(text.as_bytes()).is_some();
                let theirs = serde_json::from_str::<Value>(&text).is_ok();
                assert_eq!((ours, theirs), (ok, ok), "{text}");
            }
        }
        let doc = doc(r#"{"ts":1700000000000123,"n":12345678,"m":-0.25}"#);
        assert_eq!(doc.get("/ts"), Some(json!(1700000000000123u64)));
        assert_eq!(doc.get("/n"), Some(json!(12345678)));
        assert_eq!(doc.get("/m"), Some(json!(-0.25)));
    }

    #[test]
    fn numbers_read_as_serde_json_reads_them() {
        let mut rng = Rng::new(11);
        let mut texts: Vec<String> = [
            "0",
            "-0",
            "-0.0",
            "0.0",
            "1",
            "-1",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "9999999999999999999",
            "99999999999999999999",
            "1e308",
            "-1e-400",
            "4.9e-324",
            "2.2250738585072011e-308",
            "0.1",
            "123.456e-7",
            "1E2",
            "1e+2",
            "-12.50",
            "17976931348623157e292",
            "7.0e-10",
            "5e-1",
        ]
        .map(String::from)
        .to_vec();
        for _ in 0..20_000 {
            let mut t = String::new();
            if rng.below(3) == 0 {
                t.push('-');
            }
            let int = 1 + rng.below(22);
            t.push(char::from(b'1' + rng.below(9) as u8));
            for _ in 1..int {
                t.push(char::from(b'0' + rng.below(10) as u8));
            }
            if rng.below(2) == 0 {
                t.push('.');
                for _ in 0..1 + rng.below(20) {
                    t.push(char::from(b'0' + rng.below(10) as u8));
                }
            }
            if rng.below(3) == 0 {
                t.push_str(rng.pick(&["e", "E", "e-", "e+"]));
                t.push_str(&rng.below(330).to_string());
            }
            texts.push(t);
        }
        for text in texts {
            let Ok(theirs) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let ours = parse_span(text.as_bytes()).expect("serde_json reads it");
            let (a, b) = (ours.as_number().unwrap(), theirs.as_number().unwrap());
            assert_eq!(
                (
                    a.as_u64(),
                    a.as_i64(),
                    a.is_f64(),
                    a.as_f64().map(f64::to_bits)
                ),
                (
                    b.as_u64(),
                    b.as_i64(),
                    b.is_f64(),
                    b.as_f64().map(f64::to_bits)
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn strings_read_and_written_as_serde_json_does() {
        let specials = [
            "\"", "\\", "\u{1}", "\n", "\u{1f}", "é", "\u{7f}", "/", "\u{2028}", "😀",
        ];
        let mut cases = vec![String::new()];
        for special in specials {
            for at in 0..18 {
                let mut s: String = "abcdefghijklmnopq".chars().take(at).collect();
                s.push_str(special);
                s.push_str("xyz");
                cases.push(s);
            }
        }
        for s in cases {
            let mut ours = Vec::new();
            write_string(&mut ours, &s);
            assert_eq!(ours, serde_json::to_vec(&s).unwrap(), "{s:?}");
            assert_eq!(parse_span(&ours), Some(Value::String(s.clone())), "{s:?}");
        }
    }

    #[test]
    fn long_strings_with_specials_anywhere() {
        for at in 0..20 {
            for special in ["\\\"", "\\n", "\\u00e9", "é", "\u{1}", "\""] {
                let text = format!(
                    "{{\"k\": \"{}{special}{}\"}}",
                    "a".repeat(at),
                    "b".repeat(19 - at)
                );
                let theirs = serde_json::from_str::<Value>(&text).ok();
                let ours = JsonDoc::parse(text.as_bytes()).ok();
                assert_eq!(ours.is_some(), theirs.is_some(), "{text:?}");
                if let Some(d) = ours {
                    assert_eq!(
                        d.get("/k"),
                        theirs.unwrap().pointer("/k").cloned(),
                        "{text:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn agrees_with_serde_json_on_what_is_json() {
        let cases = [
            "",
            " ",
            "{",
            "}",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{a:1}",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "nul",
            "truex",
            "[1] [2]",
            "\"\\x\"",
            "\"\u{1}\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"\\ud83d\\ude00\"",
            "1e400",
            "-1e400",
            "1e-400",
            "[1e308]",
            "\"\\u00e9\"",
            "{\"a\":[{}, [], \"\", 0, -0.5e-3]}",
            "tru",
            "[",
            "[1",
            "{\"a\"",
            "{\"a\":",
            "\"abc",
            "123abc",
            "null",
        ];
        for text in cases {
            let ours = JsonDoc::parse(text.as_bytes());
            let theirs = serde_json::from_str::<Value>(text);
            assert_eq!(ours.is_ok(), theirs.is_ok(), "{text:?}");
            if let (Ok(d), Ok(v)) = (ours, theirs) {
                assert_eq!(d.get(""), Some(v), "{text:?}");
            }
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(JsonDoc::parse(deep.as_bytes()).is_err());
        assert!(JsonDoc::parse(&[b'"', 0xff, b'"']).is_err());
        let e = JsonDoc::parse(b"{\"a\": }").err().unwrap().to_string();
        assert!(
            e.starts_with("value is not JSON: expected value at line 1 column 7"),
            "{e}"
        );
    }

    /// fastrand's generator, seeded, with the two draws these tests make.
    struct Rng(fastrand::Rng);

    impl Rng {
        fn new(seed: u64) -> Rng {
            Rng(fastrand::Rng::with_seed(seed))
        }

        fn below(&mut self, n: usize) -> usize {
            self.0.usize(..n)
        }

        fn pick<'s>(&mut self, items: &[&'s str]) -> &'s str {
            items[self.below(items.len())]
        }
    }

    const KEYS: &[&str] = &[
        "\"a\"",
        "\"a\"",
        "\"\\u0061\"",
        "\"b\"",
        "\"~\"",
        "\"a~\"",
        "\"~0\"",
        "\"~1\"",
        "\"/\"",
        "\"a/b\"",
        "\"\u{e9}\"",
        "\"e\\u0301\"",
        "\"\"",
        "\"0\"",
        "\"card\"",
    ];

    const SCALARS: &[&str] = &[
        "0",
        "-0",
        "1",
        "-12",
        "1.5",
        "1e5",
        "1E+2",
        "-0.5e-3",
        "1e-400",
        "1.7976931348623157e308",
        "1.7976931348623159e308",
        "-1.7976931348623158e308",
        "1e308",
        "1e309",
        "18446744073709551616",
        "-9223372036854775809",
        "true",
        "false",
        "null",
        "\"\"",
        "\"x\"",
        "\"secret-value\"",
    ];

    const PIECES: &[&str] = &[
        "a",
        "bcdefgh",
        "\u{e9}",
        "\u{1f600}",
        "\\n",
        "\\\"",
        "\\\\",
        "\\/",
        "\\u00e9",
        "\\ud83d\\ude00",
        "~",
        "/",
        " ",
        "12345678",
    ];

    const SPACE: &[&str] = &["", "", " ", "\n", "\t ", "\r\n  "];

    fn text(rng: &mut Rng, out: &mut String, depth: usize) {
        out.push_str(rng.pick(SPACE));
        match rng.below(if depth > 4 { 3 } else { 6 }) {
            0 => out.push_str(rng.pick(SCALARS)),
            1 => {
                out.push('"');
                for _ in 0..rng.below(6) {
                    out.push_str(rng.pick(PIECES));
                }
                out.push('"');
            }
            2 => {
                let digits = 295 + rng.below(20);
                if rng.below(2) == 0 {
                    out.push('-');
                }
                out.push('9');
                out.push_str(&"9".repeat(digits));
            }
            3 | 4 => {
                out.push('{');
                for i in 0..rng.below(5) {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(rng.pick(SPACE));
                    out.push_str(rng.pick(KEYS));
                    out.push_str(rng.pick(SPACE));
                    out.push(':');
                    text(rng, out, depth + 1);
                    out.push_str(rng.pick(SPACE));
                }
                out.push_str(rng.pick(SPACE));
                out.push('}');
            }
            _ => {
                out.push('[');
                for i in 0..rng.below(4) {
                    if i > 0 {
                        out.push(',');
                    }
                    text(rng, out, depth + 1);
                    out.push_str(rng.pick(SPACE));
                }
                out.push_str(rng.pick(SPACE));
                out.push(']');
            }
        }
        out.push_str(rng.pick(SPACE));
    }

    /// Every path in `v`, as unescaped tokens.
    fn paths(v: &Value, at: &mut Vec<String>, all: &mut Vec<Vec<String>>) {
        all.push(at.clone());
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    at.push(k.clone());
                    paths(child, at, all);
                    at.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    at.push(i.to_string());
                    paths(child, at, all);
                    at.pop();
                }
            }
            _ => {}
        }
    }

    fn decode(token: &str) -> String {
        token.replace("~1", "/").replace("~0", "~")
    }

    /// A pointer to `tokens`, sometimes spelled with a bare `~` where that reads the same.
    fn spell(rng: &mut Rng, tokens: &[String]) -> String {
        let mut p = String::new();
        for t in tokens {
            p.push('/');
            let canonical = t.replace('~', "~0").replace('/', "~1");
            let loose = t.replace('/', "~1");
            if rng.below(2) == 0 && decode(&loose) == *t {
                p.push_str(&loose);
            } else {
                p.push_str(&canonical);
            }
        }
        p
    }

    /// Setting as the tree would, written apart from `set_in`.
    fn reference_set(doc: &mut Value, pointer: &str, value: Value) -> bool {
        if pointer.is_empty() {
            *doc = value;
            return true;
        }
        let Some(rest) = pointer.strip_prefix('/') else {
            return false;
        };
        let tokens: Vec<String> = rest.split('/').map(decode).collect();
        let mut cur = doc;
        for (i, t) in tokens.iter().enumerate() {
            let last = i + 1 == tokens.len();
            if cur.is_null() {
                *cur = json!({});
            }
            cur = match cur {
                Value::Object(map) => {
                    if last {
                        map.insert(t.clone(), value);
                        return true;
                    }
                    map.entry(t.clone()).or_insert_with(|| json!({}))
                }
                Value::Array(items) => {
                    let i = index(t).or((t == "-").then_some(items.len()));
                    match i {
                        Some(i) if last && i == items.len() => {
                            items.push(value);
                            return true;
                        }
                        Some(i) if i < items.len() => &mut items[i],
                        _ => return false,
                    }
                }
                _ => return false,
            };
        }
        *cur = value;
        true
    }

    /// How many keys of objects in `text` repeat an earlier key of the same object.
    fn duplicates(text: &[u8]) -> usize {
        let nodes = locate(text).expect("output locates");
        let mut count = 0;
        for (i, n) in nodes.iter().enumerate() {
            if n.kind != Kind::Object {
                continue;
            }
            let mut seen = Vec::new();
            let mut child = i + 1;
            while child < n.skip as usize {
                let c = nodes[child];
                let quoted = &text[c.key_start as usize - 1..c.key_end as usize + 1];
                let key: String = serde_json::from_slice(quoted).unwrap();
                count += seen.contains(&key) as usize;
                seen.push(key);
                child = c.skip as usize;
            }
        }
        count
    }

    fn ordered(v: &Value) -> String {
        serde_json::to_string(v).unwrap()
    }

    #[test]
    fn edits_agree_with_the_tree() {
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        let new_values = [
            json!("[REDACTED]"),
            json!(1),
            json!(null),
            json!({}),
            json!({"k": [1, {"z": 2}]}),
            json!([]),
            json!("~/\u{e9}"),
        ];
        let mut checked = 0;
        for case in 0..20_000 {
            let mut input = String::new();
            text(&mut rng, &mut input, 0);
            let Ok(mut model) = serde_json::from_str::<Value>(&input) else {
                assert!(JsonDoc::parse(input.as_bytes()).is_err(), "{input:?}");
                continue;
            };
            checked += 1;
            let mut d = JsonDoc::parse(input.as_bytes()).unwrap();
            let mut log = Vec::new();
            for _ in 0..rng.below(6) {
                let mut all = Vec::new();
                paths(&model, &mut Vec::new(), &mut all);
                let mut tokens = all[rng.below(all.len())].clone();
                match rng.below(8) {
                    0 => tokens.push(rng.pick(&["a", "new", "~", "a~", "/", "0", "-"]).into()),
                    1 => tokens.extend(["x".to_string(), "y".to_string()]),
                    2 if !tokens.is_empty() => {
                        tokens.pop();
                    }
                    3 => tokens.push(rng.pick(&["1", "2", "01", "-"]).into()),
                    _ => {}
                }
                let pointer = spell(&mut rng, &tokens);
                // Half the time through a parsed `Pointer` (which the whole document is not).
                let parsed = match rng.below(2) {
                    0 => pointer.parse::<Pointer>().ok(),
                    _ => None,
                };
                if rng.below(3) == 0 {
                    log.push(format!("get {pointer:?} {}", parsed.is_some()));
                    let expected = model.pointer(&pointer).cloned();
                    let got = match &parsed {
                        Some(parsed) => d.get(parsed),
                        None => d.get(&pointer),
                    };
                    assert_eq!(got, expected, "{input:?} {log:?}");
                } else {
                    let value = new_values[rng.below(new_values.len())].clone();
                    log.push(format!("set {pointer:?} {value} {}", parsed.is_some()));
                    let ok = reference_set(&mut model, &pointer, value.clone());
                    let set = match &parsed {
                        Some(parsed) => d.set(parsed, value),
                        None => d.set(&pointer, value),
                    };
                    assert_eq!(set.is_ok(), ok, "{input:?} {log:?}");
                }
            }
            let mut all = Vec::new();
            paths(&model, &mut Vec::new(), &mut all);
            for tokens in &all {
                let pointer = spell(&mut rng, tokens);
                let expected = model.pointer(&pointer).cloned();
                assert_eq!(d.get(&pointer), expected, "{input:?} {log:?} {pointer:?}");
            }
            let output = d.into_bytes();
            let parsed: Value = serde_json::from_slice(&output).unwrap_or_else(|e| {
                panic!(
                    "{case}: {input:?} {log:?} gave {:?}: {e}",
                    String::from_utf8_lossy(&output)
                )
            });
            assert_eq!(ordered(&parsed), ordered(&model), "{input:?} {log:?}");
            assert!(
                duplicates(&output) <= duplicates(input.as_bytes()),
                "{input:?} {log:?} gave {:?}",
                String::from_utf8_lossy(&output)
            );
        }
        assert!(checked > 5_000, "{checked}");
    }

    #[test]
    fn accepts_what_serde_json_accepts() {
        let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
        let noise: &[&[u8]] = &[
            b"\"",
            b"\\",
            b",",
            b"}",
            b"]",
            b"{",
            b"[",
            b":",
            b"\\u",
            b"\\ud800",
            b"\\udc00",
            b"e",
            b".",
            b"-",
            b"0",
            b"\x01",
            b"\xff",
            b"\xc3",
            b"1e400",
            b" ",
            b"\\ud83d\\u",
        ];
        for _ in 0..30_000 {
            let mut input = String::new();
            text(&mut rng, &mut input, 0);
            let mut bytes = input.into_bytes();
            for _ in 0..rng.below(3) {
                let at = rng.below(bytes.len() + 1);
                match rng.below(3) {
                    0 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    1 => {
                        let n = noise[rng.below(noise.len())];
                        bytes.splice(at..at, n.iter().copied());
                    }
                    _ => bytes.truncate(at),
                }
            }
            let theirs = serde_json::from_slice::<Value>(&bytes);
            let ours = JsonDoc::parse(&bytes);
            let shown = String::from_utf8_lossy(&bytes);
            assert_eq!(ours.is_ok(), theirs.is_ok(), "{shown:?}");
            if let (Ok(d), Ok(v)) = (ours, theirs) {
                assert_eq!(d.get(""), Some(v.clone()), "{shown:?}");
                let mut d = d;
                d.set("/zz", json!(1)).ok();
                let mut v = v;
                let ok = reference_set(&mut v, "/zz", json!(1));
                let out: Value = serde_json::from_slice(&d.into_bytes()).unwrap();
                if ok {
                    assert_eq!(ordered(&out), ordered(&v), "{shown:?}");
                }
            }
        }
    }

    #[test]
    fn nesting_at_serde_jsons_limit() {
        for depth in 120..135 {
            for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
                let text = open.repeat(depth) + "1" + &close.repeat(depth);
                let theirs = serde_json::from_str::<Value>(&text);
                let ours = JsonDoc::parse(text.as_bytes());
                assert_eq!(ours.is_ok(), theirs.is_ok(), "depth {depth} {open}");
                if let Ok(mut d) = ours {
                    assert_eq!(d.get(""), theirs.ok());
                    d.set("/x", json!(1)).ok();
                    d.into_bytes();
                }
            }
        }
    }

    #[test]
    fn pointers_spelled_two_ways() {
        // `~` not followed by `0` or `1` stands for itself, so `/a~` and `/a~0` are one path.
        let mut d = JsonDoc::parse(br#"{"a~": "secret"}"#).unwrap();
        d.set("/a~", json!("[REDACTED]")).unwrap();
        assert_eq!(d.get("/a~0"), Some(json!("[REDACTED]")));
        d.set("/a~0", json!("[MASKED]")).unwrap();
        assert_eq!(d.get("/a~"), Some(json!("[MASKED]")));
        assert_eq!(
            String::from_utf8(d.into_bytes()).unwrap(),
            r#"{"a~": "[MASKED]"}"#
        );
        let mut d = JsonDoc::parse(b"{}").unwrap();
        d.set("/~x", json!(1)).unwrap();
        d.set("/~0x", json!(2)).unwrap();
        assert_eq!(String::from_utf8(d.into_bytes()).unwrap(), r#"{"~x":2}"#);
    }
}
