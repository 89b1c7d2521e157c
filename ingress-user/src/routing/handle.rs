//! The current routing table, shared: route sources publish a new table by swapping it
//! in whole; the proxy and the admin endpoint read whichever table is current. A
//! request keeps the table it started with, however many swaps happen meanwhile.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use super::Table;

#[derive(Clone, Default)]
pub struct TableHandle(Arc<ArcSwap<Table>>);

impl TableHandle {
    pub fn new(table: Table) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(table)))
    }

    /// The current table (cheap: no reference count is touched on the hot path).
    pub fn load(&self) -> Guard<Arc<Table>> {
        self.0.load()
    }

    /// Makes `table` the current one.
    pub fn store(&self, table: Arc<Table>) {
        self.0.store(table)
    }
}
