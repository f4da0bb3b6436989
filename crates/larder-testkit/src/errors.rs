//! Counting the error lines a test expects, or expects not to see, from every thread.
//!
//! Larder reports what it cannot return (a failed background sync, a panic caught on the
//! janitor's thread) through `tracing`. A test that checks such a report installs
//! [`CountErrorsMentioning`] as the process's global subscriber: the janitor's thread logs
//! too, and a subscriber set for one thread would miss it. A process has one global
//! subscriber, so one test per test binary may install it.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A `tracing` subscriber that counts the `ERROR` events whose fields, rendered, contain
/// `needle`, into `count`; other events and spans are ignored.
#[derive(Debug)]
pub struct CountErrorsMentioning {
    /// What an event's fields must contain to count.
    pub needle: &'static str,
    /// Where the count goes.
    pub count: &'static AtomicUsize,
}

impl CountErrorsMentioning {
    /// Installs this subscriber for the whole process.
    ///
    /// # Panics
    /// If the process already has a global subscriber (another test installed one).
    pub fn install(self) {
        tracing::subscriber::set_global_default(self).expect("no other global subscriber");
    }
}

impl tracing::Subscriber for CountErrorsMentioning {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() == tracing::Level::ERROR
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, _: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0 += &format!("{value:?} ");
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        if fields.0.contains(self.needle) {
            eprintln!("counted: {}", fields.0);
            self.count.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
