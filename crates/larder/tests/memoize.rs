//! `#[larder::memoize]`: parity with Python's `functools.lru_cache`, the options, the key, what
//! is cached for each return type, and single flight.
//!
//! Each test memoizes its own functions, so each has fresh caches whatever order tests run in.

use larder::{memoize, Cache, Policy};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

#[test]
fn fib_31_matches_python_lru_cache_info() {
    // Python: @lru_cache(maxsize=256) over the naive recursive fib, fib(31), cache_info() ->
    // CacheInfo(hits=29, misses=32, maxsize=256, currsize=32).
    #[memoize(capacity = 256)]
    fn fib(n: u64) -> u64 {
        if n < 2 {
            n
        } else {
            fib(n - 1) + fib(n - 2)
        }
    }
    assert_eq!(fib(31), 1_346_269);
    let info = fib_cache().stats();
    assert_eq!(
        (info.hits, info.misses, info.capacity, info.len),
        (29, 32, 256, 32)
    );
    // cache_clear(), then cache_info() -> CacheInfo(hits=0, misses=0, maxsize=256, currsize=0).
    fib_cache_clear();
    let info = fib_cache().stats();
    assert_eq!(
        (info.hits, info.misses, info.capacity, info.len),
        (0, 0, 256, 0)
    );
    assert_eq!(fib(31), 1_346_269);
    assert_eq!(fib_cache().len(), 32, "computed again after the clear");
}

#[test]
fn an_lru_cache_smaller_than_the_recursion_matches_python_lru_cache_info() {
    // Python: @lru_cache(maxsize=8), fib(25), cache_info() ->
    // CacheInfo(hits=23, misses=26, maxsize=8, currsize=8): each fib(n - 2) is still cached
    // when fib(n) asks for it, one computation per argument. So with maxsize=2, where
    // fib(20) gives CacheInfo(hits=344, misses=1657, maxsize=2, currsize=2). Each result is
    // loaded, not inserted, and must get the grace a new entry has under CLOCK: without it,
    // the hand evicted fib(n - 1)'s result before fib(n) could read it (35 misses, and 2,542).
    #[memoize(capacity = 8, policy = lru)]
    fn fib(n: u64) -> u64 {
        if n < 2 {
            n
        } else {
            fib(n - 1) + fib(n - 2)
        }
    }
    assert_eq!(fib(25), 75_025);
    let info = fib_cache().stats();
    assert_eq!(
        (info.hits, info.misses, info.capacity, info.len),
        (23, 26, 8, 8)
    );

    // Python: fib(25) misses 26 times at maxsize=3 and at 4 too. CLOCK's single bit misses
    // more there (the figures the attribute's docs give).
    #[memoize(capacity = 3, policy = lru)]
    fn three(n: u64) -> u64 {
        if n < 2 {
            n
        } else {
            three(n - 1) + three(n - 2)
        }
    }
    #[memoize(capacity = 4, policy = lru)]
    fn four(n: u64) -> u64 {
        if n < 2 {
            n
        } else {
            four(n - 1) + four(n - 2)
        }
    }
    assert_eq!((three(25), four(25)), (75_025, 75_025));
    assert_eq!(
        (three_cache().stats().misses, four_cache().stats().misses),
        (46, 40)
    );

    #[memoize(capacity = 2, policy = lru)]
    fn tiny(n: u64) -> u64 {
        if n < 2 {
            n
        } else {
            tiny(n - 1) + tiny(n - 2)
        }
    }
    assert_eq!(tiny(20), 6_765);
    let info = tiny_cache().stats();
    assert_eq!(
        (info.hits, info.misses, info.capacity, info.len),
        (344, 1657, 2, 2)
    );
}

#[test]
fn cache_clear_zeroes_the_counters_where_clear_keeps_them() {
    #[memoize]
    fn double(n: u64) -> u64 {
        n * 2
    }
    double(1);
    double(1);
    double_cache().clear();
    let s = double_cache().stats();
    assert_eq!(
        (s.hits, s.misses, s.len),
        (1, 1, 0),
        "clear() keeps the counters"
    );
    double(1);
    double_cache_clear();
    let s = double_cache().stats();
    assert_eq!((s.hits, s.misses, s.len), (0, 0, 0));

    // The same beside an accessor that returns `&dyn MemoCache`.
    #[memoize(key = word.to_lowercase())]
    fn lower(word: &str) -> String {
        word.to_lowercase()
    }
    lower("A");
    lower("a");
    lower_cache_clear();
    let s = lower_cache().stats();
    assert_eq!((s.hits, s.misses, s.len), (0, 0, 0));
}

/// As in Python's `cache_info()`, every call counts one hit or one miss, so `hits + misses`
/// is the number of calls: a call whose body fails or panics is a miss, as one that raises is
/// in Python, and so is a call the body makes for its own key, which panics rather than wait
/// for itself. That one counted nothing: a body that caught its panic made five calls, four
/// counted.
#[test]
fn every_call_counts_a_hit_or_a_miss_as_in_cache_info() {
    #[memoize]
    fn countdown(n: u64) -> u64 {
        if n == 0 {
            // Its own key, still loading: panics, and the body goes on without it.
            std::panic::catch_unwind(|| countdown(0)).unwrap_or(100)
        } else {
            countdown(n - 1) + 1
        }
    }
    assert_eq!(countdown(2), 102);
    assert_eq!(countdown(2), 102);
    let s = countdown_cache().stats();
    assert_eq!(
        (s.hits, s.misses),
        (1, 4),
        "countdown(2), (1), (0), (0) from inside (0), then (2) again"
    );

    #[memoize]
    fn checked(n: u64) -> Result<u64, String> {
        assert_ne!(n, 7, "seven panics");
        if n == 0 {
            Err("zero".into())
        } else {
            Ok(n)
        }
    }
    assert!(checked(0).is_err());
    assert!(checked(0).is_err(), "an error is not cached");
    assert!(std::panic::catch_unwind(|| checked(7)).is_err());
    assert_eq!(checked(1), Ok(1));
    assert_eq!(checked(1), Ok(1));
    let s = checked_cache().stats();
    assert_eq!((s.hits, s.misses), (1, 4), "five calls");
}

#[test]
fn recursion_deep_and_wide_completes() {
    #[memoize(capacity = unbounded)]
    fn fib(n: u64) -> u128 {
        if n < 2 {
            u128::from(n)
        } else {
            fib(n - 1) + fib(n - 2)
        }
    }
    assert_eq!(fib(150), 9_969_216_677_189_303_386_214_405_760_200);
    assert_eq!(fib_cache().len(), 151);
    assert_eq!(fib_cache().capacity(), u64::MAX);
}

#[test]
fn options_reach_the_cache() {
    #[memoize]
    fn plain(n: u32) -> u32 {
        n
    }
    #[memoize(capacity = 1000, ttl = "1h30m", policy = lru)]
    fn tuned(n: u32) -> u32 {
        n
    }
    assert_eq!(plain(1) + tuned(2), 3);
    assert_eq!(plain_cache().capacity(), 128, "lru_cache's default");
    assert_eq!(plain_cache().policy(), Policy::S3Fifo);
    assert_eq!(plain_cache().time_to_live(), None);
    assert_eq!(tuned_cache().capacity(), 1000);
    assert_eq!(tuned_cache().policy(), Policy::Lru);
    assert_eq!(
        tuned_cache().time_to_live(),
        Some(Duration::from_secs(5400))
    );
    // The entry lives: its time left is at most the ttl.
    let left = tuned_cache().ttl(&2).expect("cached, not expired");
    assert!(left <= Duration::from_secs(5400));
}

#[test]
fn a_ttl_in_microseconds_reaches_the_cache() {
    #[memoize(ttl = "3500µs")]
    fn brief(n: u32) -> u32 {
        n
    }
    assert_eq!(brief(1), 1);
    // The cache keeps lifetimes to the millisecond, rounded down.
    assert_eq!(brief_cache().time_to_live(), Some(Duration::from_millis(3)));
}

/// A ttl longer than an entry's stamp keeps (about 4,400 years) reaches the cache, whose
/// results then never expire, as a `time_to_live` that long does. It did not compile: past a
/// `u64` of nanoseconds (584 years) the attribute refused it as "too long".
#[test]
fn a_ttl_of_ten_thousand_years_reaches_the_cache_and_never_ends() {
    #[memoize(ttl = "3652500d")]
    fn kept(n: u32) -> u32 {
        n
    }
    assert_eq!(kept(1), 1);
    assert_eq!(kept_cache().time_to_live(), Some(Duration::MAX));
    assert_eq!(kept_cache().ttl(&1), Some(Duration::MAX));
}

#[test]
fn a_bounded_cache_evicts() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    #[memoize(capacity = 10)]
    fn square(n: u64) -> u64 {
        CALLS.fetch_add(1, Ordering::Relaxed);
        n * n
    }
    for n in 0..1000 {
        assert_eq!(square(n), n * n);
        assert!(square_cache().len() <= 10);
    }
    assert_eq!(CALLS.load(Ordering::Relaxed), 1000);
    assert!(square_cache().stats().evictions >= 990);
}

#[test]
fn the_key_is_every_argument_with_references_owned() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    #[memoize]
    fn describe(name: &str, bytes: &[u8], times: u32, tag: String) -> String {
        CALLS.fetch_add(1, Ordering::Relaxed);
        format!("{name}:{}:{times}:{tag}", bytes.len())
    }
    assert_eq!(describe("a", b"xyz", 2, "t".into()), "a:3:2:t");
    assert_eq!(describe("a", b"xyz", 2, "t".into()), "a:3:2:t");
    assert_eq!(describe("a", b"xyz", 3, "t".into()), "a:3:3:t");
    assert_eq!(CALLS.load(Ordering::Relaxed), 2);
    // A `&str` is keyed as a `String`, a `&[u8]` as a `Vec<u8>`.
    let key: (String, Vec<u8>, u32, String) = ("a".into(), b"xyz".to_vec(), 2, "t".into());
    assert_eq!(describe_cache().get(&key).as_deref(), Some("a:3:2:t"));
}

#[test]
fn more_arguments_than_a_hashable_tuple_holds_are_grouped() {
    #[memoize]
    #[allow(clippy::too_many_arguments)]
    fn sum13(
        a: u8,
        b: u8,
        c: u8,
        d: u8,
        e: u8,
        f: u8,
        g: u8,
        h: u8,
        i: u8,
        j: u8,
        k: u8,
        l: u8,
        m: u8,
    ) -> u32 {
        [a, b, c, d, e, f, g, h, i, j, k, l, m]
            .iter()
            .map(|&x| u32::from(x))
            .sum()
    }
    assert_eq!(sum13(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13), 91);
    assert_eq!(sum13(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13), 91);
    assert_eq!(sum13(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14), 92);
    let s = sum13_cache().stats();
    assert_eq!((s.hits, s.misses), (1, 2));
    let key = ((1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12), (13,));
    assert_eq!(sum13_cache().get(&key), Some(91));
}

#[test]
fn arguments_may_have_the_names_the_expansion_uses() {
    #[memoize]
    fn lookup(key: &str, cache: u32) -> String {
        format!("{key}{cache}")
    }
    assert_eq!(lookup("k", 1), "k1");
    assert_eq!(lookup("k", 1), "k1");
    assert_eq!(lookup_cache().stats().hits, 1);
}

#[test]
fn an_argument_may_have_the_name_of_the_accessor() {
    #[memoize]
    fn scale(n: u32, scale_cache: u32, scale_cache_clear: u32) -> u32 {
        n * scale_cache + scale_cache_clear
    }
    assert_eq!(scale(2, 3, 1), 7);
    assert_eq!(scale(2, 3, 1), 7);
    assert_eq!(scale_cache().stats().hits, 1);
    assert_eq!(scale_cache().get(&(2, 3, 1)), Some(7));
    scale_cache_clear();
    assert_eq!(scale_cache().len(), 0);
}

#[test]
fn one_argument_is_the_key_itself_and_none_is_unit() {
    #[memoize]
    fn double(n: u64) -> u64 {
        n * 2
    }
    #[memoize]
    fn answer() -> u64 {
        42
    }
    double(21);
    answer();
    assert_eq!(double_cache().get(&21), Some(42));
    assert_eq!(answer_cache().get(&()), Some(42));
}

#[test]
fn key_can_name_some_arguments_or_be_any_expression() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    #[memoize(key = user)]
    fn greeting(user: u64, request_id: u64) -> String {
        CALLS.fetch_add(1, Ordering::Relaxed);
        format!("hello {user} (first asked by {request_id})")
    }
    assert_eq!(greeting(7, 1), "hello 7 (first asked by 1)");
    assert_eq!(
        greeting(7, 2),
        "hello 7 (first asked by 1)",
        "request_id is not in the key"
    );
    assert_eq!(CALLS.load(Ordering::Relaxed), 1);
    assert!(greeting_cache().contains_key(&7));

    #[memoize(key = (b, a))]
    fn pair(a: u8, b: &str, _c: bool) -> usize {
        usize::from(a) + b.len()
    }
    assert_eq!(pair(1, "ab", true), 3);
    assert_eq!(pair_cache().get(&("ab".to_string(), 1)), Some(3));

    #[memoize(key = (a,))]
    fn single_tuple(a: u8) -> u8 {
        a
    }
    single_tuple(9);
    assert_eq!(single_tuple_cache().get(&(9,)), Some(9));

    #[memoize(key: String = word.to_lowercase())]
    fn shout(word: &str) -> String {
        word.to_uppercase()
    }
    assert_eq!(shout("Hello"), "HELLO");
    assert_eq!(shout("hELLO"), "HELLO");
    assert_eq!(shout_cache().len(), 1, "both spellings share one key");
    assert_eq!(shout_cache().get("hello").as_deref(), Some("HELLO"));
}

#[test]
fn a_key_tuple_of_arguments_and_expressions_leaves_the_body_its_arguments() {
    // `name` is cloned into the key and the body still has it; `n + 1` is used as written.
    #[memoize(key = (name, n + 1))]
    fn label(name: String, n: u32) -> String {
        format!("{name}{n}")
    }
    assert_eq!(label("a".to_string(), 1), "a1");
    assert_eq!(label("a".to_string(), 1), "a1");
    assert_eq!(label_cache().stats().hits, 1);
    let typed = label_cache()
        .as_any()
        .downcast_ref::<Cache<(String, u32), String>>()
        .expect("keyed by (String, u32)");
    assert_eq!(typed.get(&("a".to_string(), 2)).as_deref(), Some("a1"));

    // A reference argument enters as its owned form, as it does in any other key.
    #[memoize(key = (prefix, n * 2))]
    fn tag(prefix: &str, n: u32) -> String {
        format!("{prefix}{n}")
    }
    assert_eq!(tag("x", 3), "x3");
    let typed = tag_cache()
        .as_any()
        .downcast_ref::<Cache<(String, u32), String>>()
        .expect("keyed by (String, u32)");
    assert_eq!(typed.get(&("x".to_string(), 6)).as_deref(), Some("x3"));
}

#[test]
fn a_typed_key_takes_the_arguments_it_names_as_an_untyped_key_does() {
    // `name` alone: a `&str` argument enters the key as its owned `String`.
    #[memoize(key: String = name)]
    fn greet(name: &str, punctuation: char) -> String {
        format!("hello {name}{punctuation}")
    }
    assert_eq!(greet("ann", '!'), "hello ann!");
    assert_eq!(
        greet("ann", '?'),
        "hello ann!",
        "punctuation is not in the key"
    );
    assert_eq!(greet_cache().get("ann").as_deref(), Some("hello ann!"));

    // `owner` in a tuple: a `String` argument is cloned into the key, so the body still owns
    // it; `n + 1` is used as written.
    #[memoize(key: (String, u32) = (owner, n + 1))]
    fn label(owner: String, n: u32) -> String {
        format!("{owner}{n}")
    }
    assert_eq!(label("a".to_string(), 1), "a1");
    assert_eq!(label("a".to_string(), 1), "a1");
    assert_eq!(label_cache().stats().hits, 1);
    assert_eq!(
        label_cache().get(&("a".to_string(), 2)).as_deref(),
        Some("a1")
    );
}

#[test]
fn a_typed_key_of_a_static_reference_holds_the_argument_itself() {
    // Where the key's type is a reference, a `&'static` argument enters as itself, not as its
    // owned copy (a `String`, which is no `&'static str`).
    #[memoize(key: &'static str = name)]
    fn greet(name: &'static str) -> String {
        format!("hello {name}")
    }
    assert_eq!(greet("ann"), "hello ann");
    assert_eq!(greet("ann"), "hello ann");
    let typed: &Cache<&'static str, String> = greet_cache();
    assert_eq!(typed.stats().hits, 1);
    assert_eq!(typed.get("ann").as_deref(), Some("hello ann"));

    // So in a tuple type, place by place: `n` is cloned into its `u32`.
    #[memoize(key: (&'static [u8], u32) = (bytes, n))]
    fn weighted(bytes: &'static [u8], n: u32) -> u32 {
        bytes.iter().map(|&b| u32::from(b) * n).sum()
    }
    assert_eq!(weighted(b"ab", 2), 390);
    assert_eq!(weighted(b"ab", 2), 390);
    assert_eq!(weighted_cache().stats().hits, 1);
    assert_eq!(weighted_cache().get(&(&b"ab"[..], 2)), Some(390));

    // A borrowed argument cannot be a `&'static` key; what the attribute says to write instead,
    // the owned type, keys by its owned copy.
    #[memoize(key: Vec<u8> = bytes)]
    fn checksum(bytes: &[u8]) -> u32 {
        bytes.iter().map(|&b| u32::from(b)).sum()
    }
    assert_eq!(checksum(&[1, 2]), 3);
    assert_eq!(checksum_cache().get(&vec![1, 2]), Some(3));
}

#[test]
fn key_can_be_any_expression_without_its_type() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    #[memoize(capacity = 64, key = word.to_lowercase())]
    fn whisper(word: &str) -> String {
        CALLS.fetch_add(1, Ordering::Relaxed);
        word.to_lowercase()
    }
    // Before the first call there is no cache yet, and the accessor says so.
    let info = whisper_cache();
    assert_eq!((info.len(), info.capacity(), info.stats().hits), (0, 64, 0));
    assert!(info
        .as_any()
        .downcast_ref::<Cache<String, String>>()
        .is_none());

    assert_eq!(whisper("Hello"), "hello");
    assert_eq!(whisper("HELLO"), "hello");
    assert_eq!(
        CALLS.load(Ordering::Relaxed),
        1,
        "both spellings share one key"
    );
    let info = whisper_cache().stats();
    assert_eq!(
        (info.hits, info.misses, info.len, info.capacity),
        (1, 1, 1, 64)
    );
    let typed = whisper_cache()
        .as_any()
        .downcast_ref::<Cache<String, String>>()
        .expect("the cache, keyed by the expression's type");
    assert_eq!(typed.get("hello").as_deref(), Some("hello"));
    whisper_cache().clear();
    assert!(whisper_cache().is_empty());
}

#[test]
fn a_raw_identifier_names_the_function_and_not_its_accessor() {
    #[memoize(key = x.to_string())]
    fn r#match(x: u32) -> u32 {
        x + 1
    }
    #[memoize]
    fn r#type(x: u32) -> u32 {
        x * 2
    }
    assert_eq!(r#match(1), 2);
    assert_eq!(r#match(1), 2);
    assert_eq!(match_cache().stats().hits, 1);
    assert_eq!(r#type(3), 6);
    assert_eq!(type_cache().get(&3), Some(6));
}

#[test]
fn names_that_differ_only_in_case_have_caches_of_their_own() {
    // Each keeps its cache in a hidden static named after it, which upper-cased names would
    // make one name, defined twice.
    #![allow(non_snake_case)]
    #[memoize(key = n.to_string())]
    fn userId(n: u32) -> u32 {
        n
    }
    #[memoize(key = n.to_string())]
    fn userid(n: u32) -> u32 {
        n + 1
    }
    assert_eq!((userId(1), userid(1)), (1, 2));
    assert_eq!((userId(1), userid(1)), (1, 2));
    assert_eq!(
        (userId_cache().stats().hits, userid_cache().stats().hits),
        (1, 1)
    );
    assert_eq!((userId_cache().len(), userid_cache().len()), (1, 1));
}

/// Writes a memoized function through `macro_rules!`, whose `$t:ty` hands each type to the
/// attribute wrapped in an invisible group.
macro_rules! memoized {
    ($name:ident($arg:ident: $arg_ty:ty) -> $output:ty $body:block) => {
        #[memoize]
        fn $name($arg: $arg_ty) -> $output $body
    };
}

#[test]
fn a_reference_type_from_macro_rules_is_keyed_owned() {
    memoized!(length(text: &str) -> usize { text.len() });
    assert_eq!(length("abc"), 3);
    assert_eq!(length_cache().get("abc"), Some(3), "keyed as a String");
}

#[test]
fn a_result_type_from_macro_rules_caches_only_ok() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    memoized!(checked(n: u32) -> Result<u32, String> {
        CALLS.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            Err("zero".to_string())
        } else {
            Ok(n)
        }
    });
    assert!(checked(0).is_err());
    assert!(checked(0).is_err());
    assert_eq!(checked(4), Ok(4));
    assert_eq!(checked(4), Ok(4));
    assert_eq!(CALLS.load(Ordering::Relaxed), 3, "each Err recomputed");
    assert_eq!(
        checked_cache().get(&4),
        Some(4),
        "the cache holds the Ok value"
    );
}

#[test]
fn a_result_caches_only_ok() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    #[memoize]
    fn parse(text: &str) -> Result<u64, std::num::ParseIntError> {
        CALLS.fetch_add(1, Ordering::Relaxed);
        let n = text.trim().parse::<u64>()?; // `?` returns from the function, as written
        Ok(n * 10)
    }
    assert_eq!(parse("4"), Ok(40));
    assert_eq!(parse("4"), Ok(40));
    assert!(parse("x").is_err());
    assert!(parse("x").is_err());
    assert_eq!(
        CALLS.load(Ordering::Relaxed),
        3,
        "one Ok cached, each Err recomputed"
    );
    assert_eq!(parse_cache().len(), 1);

    // An alias with one argument, and an error type that is neither Clone nor shareable.
    #[memoize]
    fn read(n: u32) -> std::io::Result<u32> {
        if n == 0 {
            return Err(std::io::Error::other("zero"));
        }
        Ok(n)
    }
    assert_eq!(read(0).unwrap_err().to_string(), "zero");
    assert_eq!(read(5).unwrap(), 5);
    assert_eq!(read_cache().get(&5), Some(5));
    assert_eq!(read_cache().get(&0), None);
}

#[test]
fn a_result_alias_without_arguments_caches_only_ok() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    // `std::fmt::Result` names neither `T` nor `E`: it is still a `Result`.
    #[memoize]
    fn render(n: u32) -> std::fmt::Result {
        if CALLS.fetch_add(1, Ordering::Relaxed) == 0 {
            return Err(std::fmt::Error);
        }
        let _ = n;
        Ok(())
    }
    assert_eq!(render(1), Err(std::fmt::Error));
    assert_eq!(render(1), Ok(()), "the Err was not cached");
    assert_eq!(render(1), Ok(()));
    assert_eq!(CALLS.load(Ordering::Relaxed), 2, "the Ok was cached");
    assert_eq!(
        render_cache().get(&1),
        Some(()),
        "the cache holds the Ok value"
    );
}

#[test]
fn a_result_error_need_not_be_send_sync_or_static() {
    // The error goes back only to the caller whose call produced it: a `Box<dyn Error>` (not
    // `Send`, not `Sync`) is enough.
    #[memoize]
    fn parse(text: &str) -> Result<u32, Box<dyn std::error::Error>> {
        Ok(text.trim().parse::<u32>()?)
    }
    assert_eq!(parse(" 7").unwrap(), 7);
    assert_eq!(
        parse("x").unwrap_err().to_string(),
        "invalid digit found in string"
    );
    assert_eq!(parse_cache().get(" 7"), Some(7));
    assert_eq!(parse_cache().len(), 1, "the Err is not cached");

    // Nor `'static`: an error may borrow an argument.
    #[memoize]
    fn non_empty<'a>(text: &'a str) -> Result<usize, &'a str> {
        if text.is_empty() {
            Err(text)
        } else {
            Ok(text.len())
        }
    }
    assert_eq!(non_empty("abc"), Ok(3));
    assert_eq!(non_empty(""), Err(""));
}

#[test]
fn an_option_caches_none_unless_told_not_to() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    static CALLS_SOME: AtomicUsize = AtomicUsize::new(0);
    #[memoize]
    fn lookup(n: u32) -> Option<u32> {
        CALLS.fetch_add(1, Ordering::Relaxed);
        n.is_multiple_of(2).then_some(n)
    }
    #[memoize(cache_none = false)]
    fn lookup_some(n: u32) -> Option<u32> {
        CALLS_SOME.fetch_add(1, Ordering::Relaxed);
        n.is_multiple_of(2).then_some(n)
    }
    for _ in 0..3 {
        assert_eq!(lookup(1), None);
        assert_eq!(lookup(2), Some(2));
        assert_eq!(lookup_some(1), None);
        assert_eq!(lookup_some(2), Some(2));
    }
    assert_eq!(
        CALLS.load(Ordering::Relaxed),
        2,
        "None is cached by default"
    );
    assert_eq!(
        CALLS_SOME.load(Ordering::Relaxed),
        4,
        "None computed each time"
    );
    assert_eq!(lookup_cache().get(&1), Some(None));
    assert_eq!(lookup_some_cache().get(&2), Some(2));
    assert_eq!(lookup_some_cache().get(&1), None);
}

#[test]
fn concurrent_callers_with_equal_arguments_compute_once() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    static GATE: Barrier = Barrier::new(2);
    #[memoize]
    fn slow(n: u64) -> u64 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        // Hold the load open until the main thread has seen the other callers start.
        GATE.wait();
        n + 1
    }
    let threads = 8;
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                slow(5)
            })
        })
        .collect();
    // One of them is loading; give the others time to queue up behind it, then let it finish.
    while CALLS.load(Ordering::SeqCst) == 0 {
        thread::yield_now();
    }
    for _ in 0..1000 {
        thread::yield_now();
    }
    GATE.wait();
    for h in handles {
        assert_eq!(h.join().unwrap(), 6);
    }
    assert_eq!(
        CALLS.load(Ordering::SeqCst),
        1,
        "every caller got the one result"
    );
    let s = slow_cache().stats();
    assert_eq!((s.misses, s.hits), (1, threads as u64 - 1));
}

#[test]
fn the_body_keeps_its_return_mut_arguments_and_attributes() {
    /// Documented, and the doc stays on the function.
    #[memoize]
    #[inline]
    pub fn collatz_steps(mut n: u64) -> u32 {
        let mut steps = 0;
        while n != 1 {
            if n == 0 {
                return 0; // an early return is the function's result
            }
            n = if n.is_multiple_of(2) {
                n / 2
            } else {
                3 * n + 1
            };
            steps += 1;
        }
        steps
    }
    assert_eq!(collatz_steps(27), 111);
    assert_eq!(collatz_steps(0), 0);
    assert_eq!(collatz_steps_cache().get(&27), Some(111));
}

#[test]
fn an_inner_attribute_of_the_body_stays_in_the_body() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    #[memoize]
    fn halve(n: u32) -> u32 {
        #![allow(unused_variables)]
        let unused = n; // allowed by the inner attribute, which still applies
        CALLS.fetch_add(1, Ordering::Relaxed);
        n / 2
    }
    assert_eq!(halve(8), 4);
    assert_eq!(halve(8), 4);
    assert_eq!(CALLS.load(Ordering::Relaxed), 1);
    assert_eq!(halve_cache().get(&8), Some(4));
}

#[test]
fn a_panicking_body_caches_nothing_and_the_next_call_runs_again() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    #[memoize]
    fn fragile(n: u32) -> u32 {
        if CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("first call fails");
        }
        n
    }
    let first = std::panic::catch_unwind(|| fragile(3));
    assert!(first.is_err());
    assert_eq!(fragile_cache().len(), 0);
    assert_eq!(fragile(3), 3);
    assert_eq!(CALLS.load(Ordering::SeqCst), 2);
}
