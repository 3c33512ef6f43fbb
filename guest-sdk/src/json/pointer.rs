//! JSON Pointers ([RFC 6901](https://www.rfc-editor.org/rfc/rfc6901)): a [`Pointer`] checked and
//! split into its tokens once, where a config is loaded, and the splitting of pointer text for
//! the methods of [`JsonDoc`](super::JsonDoc) that are given a `&str`.

use std::{borrow::Cow, fmt, str::FromStr, sync::Arc};

use serde_json::Value;

use super::has_byte;
use crate::{Error, Result};

/// A JSON Pointer to a value inside a document, checked and split into its tokens once.
///
/// Plugins name fields in their config with it: as a config field it is read from a string, and
/// a string that does not start with `/` is refused with a message that says so, before the first
/// record. [`JsonDoc`](super::JsonDoc)'s methods take it where they take pointer text, and then
/// walk its tokens as they are instead of splitting the text again for every record.
///
/// ```
/// use weir_sdk::{json::Pointer, prelude::*};
///
/// #[derive(Deserialize)]
/// struct Config {
///     field: Pointer,
/// }
///
/// #[transform]
/// fn redact(rec: Record, cfg: &Config) -> Result<Record> {
///     let mut doc = rec.json_doc()?;
///     doc.update(&cfg.field, |_| Ok(json!("[REDACTED]")))?;
///     let value = doc.into_bytes();
///     Ok(rec.with_value(value))
/// }
///
/// fn main() {
///     let plugin = weir_sdk::harness!(json!({ "field": "/card/number" })).unwrap();
///     let out = plugin.transform(Record::new(r#"{"card": {"number": "4111"}}"#)).unwrap();
///     assert_eq!(out[0].value_str().unwrap(), r#"{"card": {"number": "[REDACTED]"}}"#);
///
///     let err = weir_sdk::harness!(json!({ "field": "card" })).err().unwrap();
///     assert!(err.message().contains("field `card` is not a JSON pointer (it must start with `/`)"));
/// }
/// ```
///
/// In a token, `~1` stands for `/` and `~0` for `~`; a `~` followed by anything else stands for
/// itself, as in serde_json. Parsing refuses the empty pointer, which RFC 6901 gives the whole
/// document: in a config that is almost always a field left out. [`Pointer::root`] is that
/// pointer where it is meant. Pointers compare, order and hash by their text as written.
#[derive(Clone)]
pub struct Pointer {
    /// As written: messages quote it so.
    text: Arc<str>,
    /// The one spelling of its path (see [`canonical`]), which edits compare; the same `Arc` as
    /// `text` when that has no `~`. Shared, not copied, into each edit a document records.
    canonical: Arc<str>,
    /// Unescaped. Shared, not copied, as the key of each member a document gains through it.
    tokens: Box<[Arc<str>]>,
}

impl Pointer {
    /// The pointer to the whole document: `""`.
    pub fn root() -> Pointer {
        let text: Arc<str> = Arc::from("");
        Pointer {
            canonical: text.clone(),
            text,
            tokens: Box::new([]),
        }
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this is the pointer to the whole document.
    pub fn is_root(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Its tokens, unescaped: `/a~1b/0` has `a/b` and `0`.
    pub fn tokens(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.tokens.iter().map(|t| &**t)
    }

    /// Its last token, unescaped: the name of the member (or the index of the item) it points
    /// at. `None` for the root.
    pub fn last(&self) -> Option<&str> {
        self.tokens.last().map(|t| &**t)
    }

    /// The pointer to the object or array holding what this one points at; `None` for the root.
    pub fn parent(&self) -> Option<Pointer> {
        let tokens = self.tokens.split_last()?.1;
        let text: Arc<str> = Arc::from(spell(tokens.iter()));
        Some(Pointer {
            canonical: text.clone(),
            text,
            tokens: tokens.into(),
        })
    }

    /// The value it points at in `doc`, as `Value::pointer` finds it.
    pub fn get<'v>(&self, doc: &'v Value) -> Option<&'v Value> {
        self.tokens().try_fold(doc, |at, token| match at {
            Value::Object(map) => map.get(token),
            Value::Array(items) => items.get(index(token)?),
            _ => None,
        })
    }

    /// The value it points at in `doc`, to change in place, as `Value::pointer_mut` finds it.
    pub fn get_mut<'v>(&self, doc: &'v mut Value) -> Option<&'v mut Value> {
        self.tokens().try_fold(doc, |at, token| match at {
            Value::Object(map) => map.get_mut(token),
            Value::Array(items) => items.get_mut(index(token)?),
            _ => None,
        })
    }

    pub(super) fn token_list(&self) -> &[Arc<str>] {
        &self.tokens
    }
}

impl FromStr for Pointer {
    type Err = Error;

    fn from_str(text: &str) -> Result<Pointer> {
        if text.is_empty() {
            return Err(Error::msg(
                "an empty JSON pointer names the whole value, not a field (a field's starts \
                 with `/`)",
            ));
        }
        let Some(split) = tokens(text) else {
            return Err(Error::msg(format!(
                "field `{text}` is not a JSON pointer (it must start with `/`)"
            )));
        };
        let tokens = split.map(|t| Arc::from(&*t)).collect();
        let given: Arc<str> = Arc::from(text);
        let canonical = match canonical(text) {
            Cow::Borrowed(_) => given.clone(),
            Cow::Owned(spelled) => Arc::from(spelled),
        };
        Ok(Pointer {
            text: given,
            canonical,
            tokens,
        })
    }
}

impl TryFrom<&str> for Pointer {
    type Error = Error;

    fn try_from(text: &str) -> Result<Pointer> {
        text.parse()
    }
}

impl TryFrom<String> for Pointer {
    type Error = Error;

    fn try_from(text: String) -> Result<Pointer> {
        text.parse()
    }
}

impl<'de> serde::Deserialize<'de> for Pointer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Pointer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pointer({:?})", &*self.text)
    }
}

impl PartialEq for Pointer {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Pointer {}

impl PartialOrd for Pointer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pointer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl std::hash::Hash for Pointer {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state)
    }
}

/// What [`JsonDoc`](super::JsonDoc)'s methods take as a path: a [`Pointer`], or pointer text
/// (`&str`, `String`), which is checked and split at every call (`""` is the whole document).
pub trait AsPointer {
    #[doc(hidden)]
    fn __place(&self) -> Place<'_>;
}

/// A path as the document walks it.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub enum Place<'p> {
    Text(&'p str),
    Parsed(&'p Pointer),
}

impl AsPointer for Pointer {
    fn __place(&self) -> Place<'_> {
        Place::Parsed(self)
    }
}

impl AsPointer for str {
    fn __place(&self) -> Place<'_> {
        Place::Text(self)
    }
}

impl AsPointer for String {
    fn __place(&self) -> Place<'_> {
        Place::Text(self)
    }
}

impl AsPointer for Place<'_> {
    fn __place(&self) -> Place<'_> {
        *self
    }
}

impl<T: AsPointer + ?Sized> AsPointer for &T {
    fn __place(&self) -> Place<'_> {
        (**self).__place()
    }
}

impl<'p> Place<'p> {
    /// The one spelling of its path.
    pub(super) fn canonical(self) -> Cow<'p, str> {
        match self {
            Place::Text(text) => canonical(text),
            Place::Parsed(p) => Cow::Borrowed(&p.canonical),
        }
    }

    /// [`canonical`](Self::canonical) (as `spelled`) to keep in an edit: a parsed pointer's own,
    /// shared rather than copied.
    pub(super) fn keep(self, spelled: Cow<'_, str>) -> Arc<str> {
        match self {
            Place::Parsed(p) => p.canonical.clone(),
            Place::Text(_) => Arc::from(spelled),
        }
    }
}

/// A token of a path being walked: split from text on the way, or a parsed pointer's own.
pub(super) trait Token: AsRef<str> {
    /// The token to keep, as the key of a new member.
    fn keep(self) -> Arc<str>;
}

impl Token for Cow<'_, str> {
    fn keep(self) -> Arc<str> {
        Arc::from(self)
    }
}

impl Token for &Arc<str> {
    fn keep(self) -> Arc<str> {
        self.clone()
    }
}

/// `tokens` written as a pointer, each escaped.
fn spell<T: AsRef<str>>(tokens: impl Iterator<Item = T>) -> String {
    tokens
        .map(|t| format!("/{}", t.as_ref().replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// `pointer` spelled the one way of its path: a `~` not followed by `0` or `1` stands for
/// itself (in serde_json too), so `/a~` and `/a~0` lead to the same place.
pub(super) fn canonical(pointer: &str) -> Cow<'_, str> {
    if !has_tilde(pointer) {
        return pointer.into();
    }
    match tokens(pointer) {
        Some(tokens) => spell(tokens).into(),
        _ => pointer.into(),
    }
}

/// Whether `text` has a `~`, eight bytes at a time (`str::contains` calls memchr, which costs
/// more than the search on a few bytes, in wasm above all).
fn has_tilde(text: &str) -> bool {
    let mut chunks = text.as_bytes().chunks_exact(8);
    for chunk in &mut chunks {
        let v = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        if has_byte(v, b'~') != 0 {
            return true;
        }
    }
    chunks.remainder().contains(&b'~')
}

/// The tokens of a JSON pointer, unescaped (`~1` is `/`, `~0` is `~`); `None` if it is not one.
pub(super) fn tokens(pointer: &str) -> Option<impl Iterator<Item = Cow<'_, str>>> {
    let rest = match pointer {
        "" => None,
        p => Some(p.strip_prefix('/')?),
    };
    // One look for `~` over the whole pointer (most have none) rather than one per token.
    let escaped = has_tilde(pointer);
    Some(rest.into_iter().flat_map(between_slashes).map(move |t| {
        if escaped && has_tilde(t) {
            Cow::Owned(t.replace("~1", "/").replace("~0", "~"))
        } else {
            Cow::Borrowed(t)
        }
    }))
}

/// The parts of `text` between slashes, found byte by byte: `str::split` with a `char` decodes
/// UTF-8 as it goes, or calls memchr, both dear on a few bytes (in wasm above all).
fn between_slashes(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.bytes().position(|b| b == b'/') {
            Some(at) => {
                rest = Some(&r[at + 1..]);
                Some(&r[..at])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// An array index token as serde_json reads one: digits, no sign, no leading zero.
pub(super) fn index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(text: &str) -> Pointer {
        text.parse().unwrap()
    }

    #[test]
    fn parses_into_unescaped_tokens() {
        let ptr = p("/a~1b/~0/0/");
        assert_eq!(ptr.tokens().collect::<Vec<_>>(), ["a/b", "~", "0", ""]);
        assert_eq!(ptr.as_str(), "/a~1b/~0/0/");
        assert_eq!(ptr.last(), Some(""));
        assert!(!ptr.is_root());
        // A `~` before anything but `0` or `1` stands for itself; the canonical spelling says so.
        let loose = p("/a~/~2");
        assert_eq!(loose.tokens().collect::<Vec<_>>(), ["a~", "~2"]);
        assert_eq!(&*loose.canonical, "/a~0/~02");
        assert_eq!(loose.to_string(), "/a~/~2");
        let plain = p("/plain");
        assert!(Arc::ptr_eq(&plain.text, &plain.canonical));
    }

    #[test]
    fn refuses_what_is_not_a_pointer_to_a_field() {
        let err = "email".parse::<Pointer>().unwrap_err();
        assert_eq!(
            err.message(),
            "field `email` is not a JSON pointer (it must start with `/`)"
        );
        let err = "".parse::<Pointer>().unwrap_err();
        assert!(err.message().contains("names the whole value"), "{err}");
        assert!(Pointer::root().is_root());
        assert_eq!(Pointer::root().as_str(), "");
    }

    #[test]
    fn reads_from_config_strings() {
        let ptrs: Vec<Pointer> = serde_json::from_value(json!(["/a", "/b~1c"])).unwrap();
        assert_eq!(ptrs, [p("/a"), p("/b~1c")]);
        let err = serde_json::from_value::<Vec<Pointer>>(json!(["/a", "b"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `b` is not a JSON pointer (it must start with `/`)"
        );
        assert!(serde_json::from_value::<Pointer>(json!(1)).is_err());
        let back = serde_json::to_value(p("/a~1b")).unwrap();
        assert_eq!(back, json!("/a~1b"));
        // Escapes of the JSON string are read before the pointer's own.
        let ptr: Pointer = serde_json::from_str(r#""/caf\u00e9""#).unwrap();
        assert_eq!(ptr.last(), Some("caf\u{e9}"));
    }

    #[test]
    fn finds_values_as_serde_json_does() {
        let doc = json!({"a": {"b/c": [1, {"~": 2}]}, "": 3, "n": [[5]]});
        let texts = "/a /a/b~1c /a/b~1c/1/~0 /a/b~1c/1/~ /a/b~1c/01 /a/b~1c/+1 /a/x / /n/0/0 \
                     /n/0/0/0 /n/-";
        for text in texts.split_whitespace() {
            let ptr = p(text);
            assert_eq!(ptr.get(&doc), doc.pointer(text), "{text}");
            let mut changed = doc.clone();
            if let Some(v) = ptr.get_mut(&mut changed) {
                *v = json!("x");
            }
            let mut want = doc.clone();
            if let Some(v) = want.pointer_mut(text) {
                *v = json!("x");
            }
            assert_eq!(changed, want, "{text}");
        }
        assert_eq!(Pointer::root().get(&doc), Some(&doc));
    }

    #[test]
    fn parents_lead_up_to_the_root() {
        let ptr = p("/a~1b/~/0");
        let parent = ptr.parent().unwrap();
        assert_eq!(parent.as_str(), "/a~1b/~0");
        assert_eq!(parent.tokens().collect::<Vec<_>>(), ["a/b", "~"]);
        let top = parent.parent().unwrap().parent().unwrap();
        assert!(top.is_root());
        assert_eq!(top.parent(), None);
        assert_eq!(p("/x").parent(), Some(Pointer::root()));
    }

    #[test]
    fn compares_by_text() {
        let mut ptrs = vec![p("/b"), p("/a/c"), p("/a")];
        ptrs.sort();
        assert_eq!(ptrs, [p("/a"), p("/a/c"), p("/b")]);
        assert_ne!(p("/a~"), p("/a~0"));
    }
}
