//! Tags each JSON record with `"version": 1`; `tag-v2` is the same plugin tagging 2.

const VERSION: u64 = 1;

include!("tag.rs");
