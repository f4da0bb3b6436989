//! Intrusive doubly-linked FIFO queues through the nodes' `prev`/`next` links.
//!
//! Eviction needs only four moves, all O(1) and allocation-free: append at the tail, take from
//! the head, unlink from anywhere (`remove`), and put a new node in an old one's place
//! (`insert` over an existing key keeps its queue position). Every list lives inside a shard's
//! locked state, so `&mut List` is proof that the shard lock is held; the remaining obligation,
//! which is why the methods are `unsafe`, is that a node passed in belongs to that shard and,
//! where stated, to this very list.

use super::node::Node;

pub(crate) struct List<K, V> {
    head: *mut Node<K, V>,
    tail: *mut Node<K, V>,
    len: usize,
    weight: u64,
}

impl<K, V> List<K, V> {
    pub(crate) fn new() -> Self {
        List {
            head: std::ptr::null_mut(),
            tail: std::ptr::null_mut(),
            len: 0,
            weight: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The summed weight of the nodes in the list.
    pub(crate) fn weight(&self) -> u64 {
        self.weight
    }

    pub(crate) fn head(&self) -> *mut Node<K, V> {
        self.head
    }

    /// Appends `node` at the tail.
    ///
    /// # Safety
    /// `node` is a live node of this list's shard that is in no list.
    pub(crate) unsafe fn push_back(&mut self, node: *mut Node<K, V>) {
        // SAFETY: (1) `&mut self` proves the shard lock is held, which guards every link;
        // (2) `node` and `self.tail` are live nodes of this shard (caller; list invariant).
        unsafe {
            let links = (*node).links();
            (*links).prev = self.tail;
            (*links).next = std::ptr::null_mut();
            if self.tail.is_null() {
                self.head = node;
            } else {
                (*(*self.tail).links()).next = node;
            }
            self.tail = node;
            self.len += 1;
            self.weight += u64::from((*node).weight());
        }
    }

    /// Unlinks and returns the head.
    pub(crate) fn pop_front(&mut self) -> Option<*mut Node<K, V>> {
        let head = self.head;
        if head.is_null() {
            return None;
        }
        // SAFETY: the head is a node of this list, so `unlink`'s contract holds.
        unsafe { self.unlink(head) };
        Some(head)
    }

    /// Unlinks `node` from wherever it is in the list.
    ///
    /// # Safety
    /// `node` is in this list.
    pub(crate) unsafe fn unlink(&mut self, node: *mut Node<K, V>) {
        // SAFETY: (1) the shard lock is held (`&mut self`); (2) `node` is in this list, so its
        // neighbours, when non-null, are live nodes of this list too.
        unsafe {
            let links = (*node).links();
            let (prev, next) = ((*links).prev, (*links).next);
            if prev.is_null() {
                self.head = next;
            } else {
                (*(*prev).links()).next = next;
            }
            if next.is_null() {
                self.tail = prev;
            } else {
                (*(*next).links()).prev = prev;
            }
            (*links).prev = std::ptr::null_mut();
            (*links).next = std::ptr::null_mut();
            self.len -= 1;
            self.weight -= u64::from((*node).weight());
        }
    }

    /// Puts `new` in `old`'s position; `old` leaves the list.
    ///
    /// # Safety
    /// `old` is in this list; `new` is a live node of this shard in no list.
    pub(crate) unsafe fn replace(&mut self, old: *mut Node<K, V>, new: *mut Node<K, V>) {
        // SAFETY: as in `unlink` and `push_back`: the lock is held, `old` and its neighbours
        // are in this list, and `new` is free to be linked.
        unsafe {
            let (old_links, new_links) = ((*old).links(), (*new).links());
            let (prev, next) = ((*old_links).prev, (*old_links).next);
            (*new_links).prev = prev;
            (*new_links).next = next;
            if prev.is_null() {
                self.head = new;
            } else {
                (*(*prev).links()).next = new;
            }
            if next.is_null() {
                self.tail = new;
            } else {
                (*(*next).links()).prev = new;
            }
            (*old_links).prev = std::ptr::null_mut();
            (*old_links).next = std::ptr::null_mut();
            self.weight = self.weight - u64::from((*old).weight()) + u64::from((*new).weight());
        }
    }

    /// Empties the list, handing every node to `f` (head first).
    pub(crate) fn drain(&mut self, mut f: impl FnMut(*mut Node<K, V>)) {
        while let Some(node) = self.pop_front() {
            f(node);
        }
    }

    /// Walks the list head to tail, checking that the links, the length and the weight agree.
    pub(crate) fn validate(&self, mut each: impl FnMut(*mut Node<K, V>)) -> Result<(), String> {
        let (mut n, mut weight, mut prev) = (0usize, 0u64, std::ptr::null_mut());
        let mut cur = self.head;
        while !cur.is_null() {
            // SAFETY: the caller holds the lock (`&self` reached through the locked state);
            // list nodes are live.
            let links = unsafe { &*(*cur).links() };
            if links.prev != prev {
                return Err(format!("list: node {n} has a wrong prev link"));
            }
            // SAFETY: as above.
            weight += u64::from(unsafe { (*cur).weight() });
            each(cur);
            n += 1;
            if n > self.len {
                return Err(format!("list: more nodes than its length {}", self.len));
            }
            prev = cur;
            cur = links.next;
        }
        if prev != self.tail {
            return Err("list: tail does not end the chain".into());
        }
        if n != self.len || weight != self.weight {
            return Err(format!(
                "list: counted {n} nodes of weight {weight}, recorded {} of {}",
                self.len, self.weight
            ));
        }
        Ok(())
    }
}

impl<K, V> std::fmt::Debug for List<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("List")
            .field("len", &self.len)
            .field("weight", &self.weight)
            .finish()
    }
}
