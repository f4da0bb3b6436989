//! The attribute's options: `#[memoize(capacity = 256, ttl = "2s", policy = lru, ...)]`.
//!
//! Every check that can be made without types is made here, at compile time, and every error
//! says what to write instead.

use proc_macro2::Span;
use std::time::Duration;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, Ident, LitBool, LitInt, LitStr, Token, Type};

/// How many entries the cache holds.
pub(crate) enum Capacity {
    /// At most this many (at least 1).
    Bounded(u64),
    /// As many as are computed (`capacity = unbounded`).
    Unbounded,
}

/// The eviction policy, as the larder crate names it.
pub(crate) enum Policy {
    S3Fifo,
    Lru,
}

/// How the key is built from the arguments.
pub(crate) enum KeySpec {
    /// From all the arguments (no `key` option).
    AllArguments,
    /// `key = <expr>`: one argument or a tuple of them (the key's type is then theirs), or any
    /// other expression (its type is then the compiler's to find).
    Arguments(Expr),
    /// `key: Type = <expr>`: any expression, of the type given.
    Typed(Box<Type>, Expr),
}

pub(crate) struct Options {
    pub(crate) capacity: Capacity,
    pub(crate) ttl: Option<Duration>,
    pub(crate) policy: Option<Policy>,
    pub(crate) key: KeySpec,
    /// `cache_none = false`, with the span of the option for errors.
    pub(crate) cache_none: Option<(bool, Span)>,
}

/// The capacity when none is given: `functools.lru_cache`'s default.
pub(crate) const DEFAULT_CAPACITY: u64 = 128;

const OPTIONS_HELP: &str = "the options are `capacity = 128`, `capacity = unbounded`, \
    `ttl = \"2s\"`, `policy = lru` or `policy = s3fifo`, `key = <expr>`, \
    `key: Type = <expr>` and `cache_none = false`";

const CAPACITY_HELP: &str =
    "write the capacity as a number of entries, `capacity = 256`, or `capacity = unbounded`";

const POLICY_HELP: &str = "write `policy = s3fifo` (the default) or `policy = lru`";

const TTL_HELP: &str = "write the time-to-live as a string: `ttl = \"2s\"`";

const CACHE_NONE_HELP: &str = "write `cache_none = false` (or `true`, the default)";

const KEY_HELP: &str = "write `key = <expr>`, such as `key = (a, b)`, or `key: Type = <expr>`";

impl Parse for Options {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut capacity = None;
        let mut ttl = None;
        let mut policy = None;
        let mut key = None;
        let mut cache_none = None;
        while !input.is_empty() {
            let name: Ident = input.parse().map_err(|e| {
                syn::Error::new(e.span(), format!("expected an option: {OPTIONS_HELP}"))
            })?;
            let duplicate = || {
                syn::Error::new(
                    name.span(),
                    format!("`{name}` is given twice; keep one of them"),
                )
            };
            match name.to_string().as_str() {
                "capacity" => {
                    equals(input, &name, CAPACITY_HELP)?;
                    if capacity.replace(parse_capacity(input)?).is_some() {
                        return Err(duplicate());
                    }
                }
                "ttl" => {
                    equals(input, &name, TTL_HELP)?;
                    let lit: LitStr = input
                        .parse()
                        .map_err(|e| syn::Error::new(e.span(), TTL_HELP))?;
                    let parsed =
                        parse_ttl(&lit.value()).map_err(|why| syn::Error::new(lit.span(), why))?;
                    if ttl.replace(parsed).is_some() {
                        return Err(duplicate());
                    }
                }
                "policy" => {
                    equals(input, &name, POLICY_HELP)?;
                    let p: Ident = input.parse().map_err(|e| {
                        // `policy = "lru"`: the policies are names, as in `larder::Policy::Lru`.
                        let quoted = if input.peek(LitStr) {
                            "the policy is a name, not a string: "
                        } else {
                            ""
                        };
                        syn::Error::new(e.span(), format!("{quoted}{POLICY_HELP}"))
                    })?;
                    let parsed = match p.to_string().as_str() {
                        "lru" => Policy::Lru,
                        "s3fifo" => Policy::S3Fifo,
                        other => {
                            return Err(syn::Error::new(
                                p.span(),
                                format!("unknown policy `{other}`: {POLICY_HELP}"),
                            ))
                        }
                    };
                    if policy.replace(parsed).is_some() {
                        return Err(duplicate());
                    }
                }
                "key" => {
                    let spec = if input.peek(Token![:]) {
                        input.parse::<Token![:]>()?;
                        let ty: Type = input.parse()?;
                        equals(input, &name, "write `key: Type = <expr>`")?;
                        KeySpec::Typed(Box::new(ty), input.parse()?)
                    } else {
                        equals(input, &name, KEY_HELP)?;
                        KeySpec::Arguments(input.parse()?)
                    };
                    if key.replace(spec).is_some() {
                        return Err(duplicate());
                    }
                }
                "cache_none" => {
                    equals(input, &name, CACHE_NONE_HELP)?;
                    let b: LitBool = input
                        .parse()
                        .map_err(|e| syn::Error::new(e.span(), CACHE_NONE_HELP))?;
                    if cache_none.replace((b.value, name.span())).is_some() {
                        return Err(duplicate());
                    }
                }
                "size" | "maxsize" | "max_capacity" => {
                    return Err(syn::Error::new(
                        name.span(),
                        format!("unknown option `{name}`: write `capacity = N`"),
                    ))
                }
                "time_to_live" | "max_age" | "expire" => {
                    return Err(syn::Error::new(
                        name.span(),
                        format!("unknown option `{name}`: write `ttl = \"2s\"`"),
                    ))
                }
                other => {
                    return Err(syn::Error::new(
                        name.span(),
                        format!("unknown option `{other}`: {OPTIONS_HELP}"),
                    ))
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "separate the options with commas: `capacity = 256, ttl = \"2s\"`",
                    )
                })?;
            }
        }
        Ok(Options {
            capacity: capacity.unwrap_or(Capacity::Bounded(DEFAULT_CAPACITY)),
            ttl,
            policy,
            key: key.unwrap_or(KeySpec::AllArguments),
            cache_none,
        })
    }
}

/// Parses the `=` after an option's name. Without one, the error says what to write (`help`),
/// at the name: the parser's own is a bare "expected `=`", which, when the option ends the
/// attribute (`#[memoize(capacity)]`), spans the whole attribute.
fn equals(input: ParseStream<'_>, name: &Ident, help: &str) -> syn::Result<()> {
    match input.parse::<Token![=]>() {
        Ok(_) => Ok(()),
        Err(_) => Err(syn::Error::new(name.span(), help)),
    }
}

fn parse_capacity(input: ParseStream<'_>) -> syn::Result<Capacity> {
    if input.peek(Ident) {
        let word: Ident = input.parse()?;
        return if word == "unbounded" {
            Ok(Capacity::Unbounded)
        } else {
            Err(syn::Error::new(word.span(), CAPACITY_HELP))
        };
    }
    let lit: LitInt = input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), CAPACITY_HELP))?;
    // The capacity is emitted as a `u64`; a literal typed otherwise (`300u8`, which no `u8`
    // holds, or `1i32`) says the writer meant another type, and its suffix would be ignored.
    match lit.suffix() {
        "" | "u64" => {}
        suffix => {
            return Err(syn::Error::new(
                lit.span(),
                format!(
                    "the capacity is a number of entries, a u64, not a `{suffix}`: write \
                     `capacity = {}` without the suffix",
                    lit.base10_digits()
                ),
            ))
        }
    }
    let n: u64 = lit.base10_parse().map_err(|_| {
        syn::Error::new(
            lit.span(),
            "the capacity must be a whole number of entries up to u64::MAX",
        )
    })?;
    if n == 0 {
        return Err(syn::Error::new(
            lit.span(),
            "a capacity of 0 would cache nothing: write `capacity = 1` or more, or remove #[memoize]",
        ));
    }
    Ok(Capacity::Bounded(n))
}

/// The shortest time-to-live: the cache's builder refuses a lifetime shorter than its clock's
/// shortest (`larder_core::Clock::shortest_lifetime`). A memoized function's cache, with a ttl
/// under a second, reads the precise clock, whose lag is the millisecond it truncates, at the
/// write and at the read: 3 ms leaves a value at least 1 ms.
const MIN_TTL: Duration = Duration::from_millis(3);

/// Parses the `ttl` option: a duration (see [`parse_duration`]) of at least 3 ms. Checked
/// here because the cache, built on the first call, could only panic there.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = parse_duration(text)?;
    if ttl < MIN_TTL {
        return Err(format!(
            "a ttl of `{text}` is under 3 ms, the shortest the cache keeps (its clock may lag \
             by 1 ms at a write and at a read, and expiry errs early): write \"3ms\" or more, \
             or remove `ttl`"
        ));
    }
    Ok(ttl)
}

/// Parses a duration such as `"2s"`, `"500ms"` or `"1h30m"`: whole numbers, each followed by a
/// unit (`ns`, `us` or `µs`, `ms`, `s`, `m`, `h`, `d`), summed. It must be more than zero, and
/// at most `Duration::MAX`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let help = "write a duration such as \"2s\", \"500ms\" or \"1h30m\" \
        (units: ns, us or µs, ms, s, m, h, d)";
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(format!("the ttl is empty: {help}"));
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("`{text}` is not a duration: {help}"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` has a number too large: {help}"))?;
        rest = &rest[digits..];
        // By characters, not bytes: `µs` starts with a letter outside ASCII.
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| !c.is_alphabetic())
            .map_or(rest.len(), |(at, _)| at);
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            // The micro sign (U+00B5) and the Greek mu (U+03BC), which look alike.
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "" => return Err(format!("`{text}` needs a unit after {number}: {help}")),
            other => return Err(format!("`{other}` in `{text}` is not a unit: {help}")),
        };
        // In a `u128` of nanoseconds, which no `u64` count of days overflows: a `u64` of them
        // ends at 584 years, far short of the longest `Duration`, which the cache takes.
        let too_long =
            || format!("`{text}` is longer than Duration::MAX (about 584 billion years)");
        let nanos = u128::from(number) * nanos_per_unit;
        let part = u64::try_from(nanos / 1_000_000_000)
            .map(|secs| Duration::new(secs, (nanos % 1_000_000_000) as u32))
            .map_err(|_| too_long())?;
        total = total.checked_add(part).ok_or_else(too_long)?;
    }
    if total.is_zero() {
        return Err(format!(
            "a ttl of zero would expire every value at once: {help}, or remove `ttl`"
        ));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_every_unit_and_sum() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("2s"), Duration::from_secs(2));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1d"), Duration::from_secs(86_400));
        assert_eq!(ok("1m 5s"), Duration::from_secs(65));
        assert_eq!(ok("250us"), Duration::from_micros(250));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
    }

    #[test]
    fn microseconds_parse_with_the_micro_sign_and_the_greek_mu() {
        // Written as escapes, since the two look the same: U+00B5 is the micro sign, U+03BC
        // the Greek small letter mu.
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("1500\u{b5}s"), Duration::from_micros(1500));
        assert_eq!(ok("1500\u{3bc}s"), Duration::from_micros(1500));
        assert_eq!(ok("1ms 500\u{b5}s"), Duration::from_micros(1500));
    }

    /// A ttl may be any length a `Duration` holds, as `CacheBuilder::time_to_live` takes (one
    /// longer than an entry's stamp keeps, about 4,400 years, never ends). One whose count of
    /// nanoseconds passed a `u64` (584 years, or 18,446,744,073,710 ms) was refused as "too
    /// long", with the help for a malformed duration.
    #[test]
    fn ttls_of_more_than_a_u64_of_nanoseconds_parse() {
        let ok = |s: &str| parse_duration(s).unwrap_or_else(|why| panic!("{s:?}: {why}"));
        assert_eq!(ok("365000d"), Duration::from_secs(365_000 * 86_400));
        assert_eq!(
            ok("18446744073710ms"),
            Duration::from_millis(18_446_744_073_710)
        );
        assert_eq!(ok(&format!("{}s", u64::MAX)), Duration::from_secs(u64::MAX));
        assert_eq!(
            ok(&format!("{}s 999999999ns", u64::MAX)),
            Duration::MAX,
            "the longest Duration"
        );
        // Longer than that: refused, saying so.
        for long in [format!("{}s 1s", u64::MAX), format!("{}d", u64::MAX)] {
            let why = parse_duration(&long).unwrap_err();
            assert!(why.contains("Duration::MAX"), "{long:?}: {why}");
        }
    }

    #[test]
    fn ttls_under_three_milliseconds_are_refused() {
        for short in ["500us", "999999ns", "1µs", "2ms", "2999us"] {
            let why = parse_ttl(short).unwrap_err();
            assert!(why.contains("under 3 ms"), "{short:?}: {why}");
        }
        assert_eq!(parse_ttl("3ms"), Ok(Duration::from_millis(3)));
        assert_eq!(parse_ttl("3000us"), Ok(Duration::from_millis(3)));
        assert_eq!(parse_ttl("1s 500us"), Ok(Duration::from_micros(1_000_500)));
        // Malformed ones get the duration's own message.
        assert!(parse_ttl("0s").unwrap_err().contains("zero"));
    }

    /// The error `#[memoize(<options>)]` gives, or `None` if the options parse.
    fn options_error(options: &str) -> Option<String> {
        syn::parse_str::<Options>(options)
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn a_capacity_with_a_suffix_other_than_u64_is_refused() {
        for (options, suffix) in [
            ("capacity = 300u8", "u8"),
            ("capacity = 7u32", "u32"),
            ("capacity = 7usize", "usize"),
            ("capacity = 7i64", "i64"),
        ] {
            let why = options_error(options).unwrap_or_else(|| panic!("{options:?} parsed"));
            assert!(
                why.contains(&format!("not a `{suffix}`")) && why.contains("u64"),
                "{options:?}: {why}"
            );
        }
        for fine in ["capacity = 300", "capacity = 300u64", "capacity = 1_000"] {
            assert_eq!(options_error(fine), None, "{fine:?}");
        }
        match syn::parse_str::<Options>("capacity = 300u64").map(|o| o.capacity) {
            Ok(Capacity::Bounded(300)) => {}
            _ => panic!("`capacity = 300u64` is a capacity of 300"),
        }
    }

    #[test]
    fn malformed_durations_say_what_to_write() {
        for bad in [
            "",
            "2",
            "s",
            "2 parsecs",
            "1.5s",
            "-1s",
            "0s",
            "99999999999999999999s",
        ] {
            let why = parse_duration(bad).unwrap_err();
            assert!(why.contains("\"2s\""), "{bad:?}: {why}");
        }
    }
}
