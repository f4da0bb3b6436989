//! The `#[memoize]` attribute of [Larder](https://docs.rs/larder). Use it as
//! `larder::memoize`: the code it writes names the `larder` crate.
//!
//! The attribute is documented where it is re-exported, on `larder::memoize`. This crate holds
//! its parser (`options`, every check that needs no types) and its expansion
//! (`expand`, which also draws what the generated code looks like).

mod expand;
mod options;

use proc_macro::TokenStream;

/// Caches a function's results, like Python's `@functools.lru_cache`, thread-safe and
/// single-flight.
///
/// ```
/// #[larder::memoize(capacity = 256)]
/// fn fib(n: u64) -> u128 {
///     if n < 2 { u128::from(n) } else { fib(n - 1) + fib(n - 2) }
/// }
///
/// assert_eq!(fib(31), 1_346_269);
/// let info = fib_cache().stats(); // Python's cache_info()
/// assert_eq!((info.hits, info.misses, info.capacity, info.len), (29, 32, 256, 32));
/// fib_cache_clear(); // Python's cache_clear()
/// let info = fib_cache().stats();
/// assert_eq!((info.hits, info.misses, info.len), (0, 0, 0));
/// ```
///
/// The function keeps its name and signature. Beside it come two functions. `<name>_cache()`
/// returns the `&'static larder::Cache` that holds the results: `stats()` is `cache_info()`,
/// `invalidate(&key)` forgets one result, `clear()` forgets them all but keeps the counters.
/// `<name>_cache_clear()` is `cache_clear()`: it forgets every result and zeroes the counters
/// (`clear()`, then `reset_stats()`). The cache is built on the first call. A raw name keeps
/// no `r#` in these: `r#match` gets `match_cache()`.
///
/// # Options
///
/// | option | meaning | default |
/// |---|---|---|
/// | `capacity = N` | at most N results, the least valuable dropped first (N is a `u64`: no suffix, or `u64`) | `128`, like `lru_cache` |
/// | `capacity = unbounded` | keep every result | |
/// | `ttl = "2s"` | a result expires this long after it was computed (`ns`, `us` or `µs`, `ms`, `s`, `m`, `h`, `d`, summed: `"1h30m"`), at least `"3ms"` and at most `Duration::MAX` (past about 4,400 years, results never expire, as with `time_to_live`); checked at compile time | none |
/// | `policy = s3fifo` or `policy = lru` | the eviction policy | `s3fifo` |
/// | `key = <expr>` | key by an expression of the arguments, such as `(a, b)` or `name.to_lowercase()` | all arguments |
/// | `key: Type = <expr>` | the same, with the key's type written out | |
/// | `cache_none = false` | for a function returning `Option`: do not cache `None` | `true` |
///
/// Where it differs from `lru_cache`'s `maxsize`: a capacity of 2,048 or more is split over
/// shards (`larder::CacheBuilder::shards`), each keeping to its share, so such a cache may start evicting a little before it holds
/// `capacity` results (with 4,096, four shards of 1,024, and the 4,096 distinct keys fall on
/// them at random: 3,988 to 4,058 of them stayed in six runs on 2026-12-07, the hasher being
/// seeded afresh each time). And the default
/// `s3fifo` keeps what is read again, not what was computed last: a recursion deeper than a
/// small capacity recomputes far more than `lru_cache` would, and `policy = lru` comes much
/// closer: a naive `fib(25)` misses 26 times under `lru_cache` at a `maxsize` of 3, 4 or 8,
/// and with `policy = lru` 46, 40 and 26 times (`crates/larder/tests/memoize.rs`), where the
/// default policy missed tens of thousands of times at capacity 3, and about 120 at 8.
///
/// Hits and misses count as `cache_info()`'s do, one for every call (a call whose body
/// returns an `Err` or panics is a miss, as one that raises is in Python), but for calls of one
/// key that overlap: a call that waits for another thread's computation of its key (they
/// compute once) counts a hit, where `lru_cache`, which lets both compute, counts two misses.
///
/// # The key
///
/// By default the key is the one argument, or a tuple of all of them (`()` for none). The key
/// is built before the body runs, from clones of the arguments (so the body still owns them):
/// an argument of type `T` enters as `T::clone()`, an argument `&T` as `T::to_owned()` (a
/// `&str` is keyed as a `String`). `key = <expr>` and `key: Type = <expr>` take an argument
/// they name alone or as an element of a tuple the same way (`key = (name, n + 1)` clones
/// `name`, `key: String = name` keys a `name: &str` as `name.to_owned()`); any other expression
/// is evaluated as written, so it should borrow the arguments (`name.to_lowercase()`). Where
/// the written type is a reference (`key: &'static str = name`, or one place of a tuple type
/// such as `(&'static str, u32)`), the argument there enters as itself, which the cache keeps
/// after the call: it must be a `&'static` argument, and any other is refused with a message
/// (`key: String = name` keys a borrowed one by its owned copy). Each part of the key must be
/// `Clone + Hash + Eq + Send + Sync + 'static`; a type that is not gets a compile error on the
/// argument, saying so. Clone is free for the usual keys (integers, `char`, `bool`, tuples of
/// them); an owned `String` or `Vec` argument is cloned on every call, and `key = <expr>` can
/// build something cheaper, such as a hash or an id:
///
/// ```
/// struct Request { user: u64, body: String }
///
/// #[larder::memoize(key = request.user)]
/// fn quota(request: &Request) -> u32 {
///     request.body.len() as u32
/// }
/// # assert_eq!(quota(&Request { user: 7, body: "abc".into() }), 3);
/// ```
///
/// **The accessor's type.** When the key is the arguments, all or some (`key = (a, b)`), or
/// its type is written out (`key: u64 = request.user`), `<name>_cache()` returns the typed
/// `&'static larder::Cache<K, V>`. For any other `key = <expr>` the attribute cannot name `K`
/// (only the compiler knows the expression's type), so the cache is built by the first call
/// and `<name>_cache()` returns a `&'static dyn larder::memo::MemoCache`: `stats()`,
/// `clear()`, `reset_stats()`, `len()`, `capacity()`, and `as_any()` to downcast to the
/// `Cache<K, V>`.
///
/// # What is cached
///
/// * A function returning `Result<T, E>`, or an alias of it (`io::Result<T>`,
///   `std::fmt::Result`), caches only `Ok` values. An `Err` goes to the caller whose call
///   produced it, so `E` needs no bounds (a `Box<dyn Error>` will do); callers that were
///   waiting for the same key then call the function themselves, one at a time. The type is
///   recognised by its name, so a type of your own named `Result` is taken for one and does
///   not compile: return it under another name (`use search::Result as Hits;`).
/// * A function returning `Option<T>` caches `Some` and `None`; with `cache_none = false` it
///   caches only `Some`, and callers waiting on a call that returned `None` get `None` too.
/// * Any other return type is cached as it is. It must be `Clone + Send + Sync + 'static`: wrap
///   a large value in an `Arc` to make the clone on every hit cheap.
///
/// # Concurrency
///
/// Concurrent callers with equal keys run the body once; the others wait for its result (the
/// cache's `get_with`). The body runs without any lock held, so a memoized function may call
/// itself, or other memoized functions, for other keys. A call that would wait for itself (the
/// body asking for its own key) panics with a message instead of deadlocking (and counts a
/// miss, as any call that finds no result does). If the body
/// panics, the panic reaches its caller and nothing is cached.
///
/// # What it does not take
///
/// Methods (`self`), generic functions, `impl Trait` anywhere in an argument's or the result's
/// type (`&impl AsRef<str>`, `Vec<impl Display>`), `&mut` arguments, `async`, `const` and
/// `unsafe` functions, destructuring patterns and `_` in the arguments, and results or key
/// arguments that borrow (`-> &'a str`, `Cow<'a, str>`: the cache is a `static`) are refused at
/// compile time, each with a message saying what to write instead.
///
/// Nor does it go on an associated function, one in an `impl` block, even without `self`. The
/// function calls its accessor, `<name>_cache()`, by that name, which inside an `impl` block
/// would have to be `Self::<name>_cache()`; an attribute cannot see which of the two it is
/// in, so the compiler's error is what shows, such as "cannot find function `<name>_cache` in this
/// scope" (`tests/ui/associated_fn.rs`). Memoize a free function and call it from the
/// associated one.
#[proc_macro_attribute]
pub fn memoize(attr: TokenStream, item: TokenStream) -> TokenStream {
    let options = match syn::parse::<options::Options>(attr) {
        Ok(options) => options,
        Err(e) => return with_item(e, item),
    };
    let function = match syn::parse::<syn::ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let e = syn::Error::new(
                proc_macro2::Span::call_site(),
                "#[memoize] goes on a free function: `fn name(args) -> Output { ... }`",
            );
            return with_item(e, item);
        }
    };
    match expand::expand(options, function) {
        Ok(tokens) => tokens.into(),
        Err(e) => with_item(e, item),
    }
}

/// The error, followed by the item unchanged, so that the one error is all the user sees (no
/// second wave of "cannot find function" errors where the function is called).
fn with_item(error: syn::Error, item: TokenStream) -> TokenStream {
    let mut tokens: TokenStream = error.to_compile_error().into();
    tokens.extend(item);
    tokens
}
