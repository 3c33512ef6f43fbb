//! The plugin side of a window stage: fold records into accumulators, merge two (sessions),
//! render fired windows; a trap in a batch call is pinned on one item by calling item by item.

use crate::engine::{ErrorKind, Instance, KeyedWindow, Output, Pane, PaneResult, RecordError};

/// The plugin side of a window stage. A wasm [`Instance`] in production; tests plug in native
/// aggregations.
pub trait Aggregator {
    fn accumulate(
        &mut self,
        panes: &[Pane],
    ) -> Result<Vec<Result<PaneResult, String>>, RecordError>;
    fn merge(
        &mut self,
        window: &KeyedWindow,
        a: &[u8],
        b: &[u8],
    ) -> Result<Result<Vec<u8>, String>, RecordError>;
    fn emit(
        &mut self,
        fired: &[(KeyedWindow, Vec<u8>)],
    ) -> Result<Vec<Result<Vec<Output>, String>>, RecordError>;
    /// The plugin's name, for errors the host finds itself.
    fn name(&self) -> &str;
    /// The version of the shape of the accumulators this build writes.
    fn state_version(&self) -> u32 {
        0
    }
    /// An accumulator an older build wrote, in this build's shape.
    fn migrate(
        &mut self,
        from: u32,
        name: &str,
        value: &[u8],
    ) -> Result<Result<Vec<u8>, String>, RecordError> {
        let _ = (from, name, value);
        Ok(Err("the plugin exports no migration".into()))
    }
}

impl Aggregator for Instance {
    fn accumulate(
        &mut self,
        panes: &[Pane],
    ) -> Result<Vec<Result<PaneResult, String>>, RecordError> {
        Instance::accumulate(self, panes)
    }

    fn merge(
        &mut self,
        window: &KeyedWindow,
        a: &[u8],
        b: &[u8],
    ) -> Result<Result<Vec<u8>, String>, RecordError> {
        Instance::merge(self, window, a, b)
    }

    fn emit(
        &mut self,
        fired: &[(KeyedWindow, Vec<u8>)],
    ) -> Result<Vec<Result<Vec<Output>, String>>, RecordError> {
        Instance::emit(self, fired)
    }

    fn name(&self) -> &str {
        self.plugin().name()
    }

    fn state_version(&self) -> u32 {
        Instance::state_version(self)
    }

    fn migrate(
        &mut self,
        from: u32,
        name: &str,
        value: &[u8],
    ) -> Result<Result<Vec<u8>, String>, RecordError> {
        Instance::migrate(self, from, name, value)
    }
}

/// Fold panes; when the call traps, fold them one at a time on fresh instances so the trap is
/// pinned on one pane's records.
pub(super) fn accumulate<A: Aggregator>(
    agg: &mut A,
    panes: &[Pane],
) -> Vec<Result<PaneResult, RecordError>> {
    pinned(agg, panes, A::accumulate)
}

/// Render fired windows, pinning a trap on one window the same way.
pub(super) fn emit<A: Aggregator>(
    agg: &mut A,
    fired: &[(KeyedWindow, Vec<u8>)],
) -> Vec<Result<Vec<Output>, RecordError>> {
    pinned(agg, fired, A::emit)
}

/// A batch call into the plugin: one result per item, or a trap.
type AggregatorCall<A, T, R> = fn(&mut A, &[T]) -> Result<Vec<Result<R, String>>, RecordError>;

/// One result per item from one `call` over all `items`; a plugin error names the plugin, a
/// wrong number of results fails them all, and a trap is retried item by item.
fn pinned<A: Aggregator, T, R>(
    agg: &mut A,
    items: &[T],
    call: AggregatorCall<A, T, R>,
) -> Vec<Result<R, RecordError>> {
    if items.is_empty() {
        return Vec::new();
    }
    let plugin = agg.name().to_string();
    let failed = |message: String| RecordError {
        plugin: plugin.clone(),
        kind: ErrorKind::Plugin,
        message,
    };
    match call(agg, items) {
        Ok(results) if results.len() == items.len() => {
            results.into_iter().map(|r| r.map_err(&failed)).collect()
        }
        Ok(results) => {
            let message = format!(
                "returned {} results for {} windows",
                results.len(),
                items.len()
            );
            items.iter().map(|_| Err(failed(message.clone()))).collect()
        }
        Err(error) if items.len() == 1 => vec![Err(error)],
        Err(_) => items
            .iter()
            .flat_map(|item| pinned(agg, std::slice::from_ref(item), call))
            .collect(),
    }
}
