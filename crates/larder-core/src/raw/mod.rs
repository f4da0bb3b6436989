//! The unsafe layer: the node, the lock-free index and the intrusive queues.
//!
//! Everything above `raw` is safe code. The invariants `raw` relies on, and which the shard
//! (`crate::shard`) upholds, are:
//!
//! 1. A node is reachable from at most one slot of the shard's current table and, once ready,
//!    is in exactly one eviction queue of that shard. Pending nodes are in no queue.
//! 2. Every change to a table slot, a queue link or a node's weight happens under the shard
//!    lock. Readers only load slots and meta words, and clone values of ready nodes.
//! 3. A node or table is freed only after it is unlinked, and then only once the epoch
//!    (`crossbeam-epoch`) says every reader pinned before the unlink has unpinned: tables
//!    through a deferred call, nodes through `limbo`, which frees them on the thread that
//!    retired them. A freed node's memory may then be reused for a new node (`pool`), which is
//!    sound for the same reason: no reader can still hold it.

pub(crate) mod clock;
pub(crate) mod limbo;
pub(crate) mod list;
pub(crate) mod node;
pub(crate) mod pool;
pub(crate) mod table;
