//! Tags each JSON record with `"version": 2`; the same plugin as `tag-v1` (whose source it
//! includes), a different build.

const VERSION: u64 = 2;

include!("../../tag-v1/src/tag.rs");
