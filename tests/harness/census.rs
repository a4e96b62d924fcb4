//! A census of the NATS messages one phase of the bench cost, by connection and subject,
//! read from nats-server's protocol trace (`HENVIS_TEST_NATS_TRACE=1`, docs/PERFORMANCE.md
//! "What a referral costs nats-server, message by message"). The trace slows the server
//! by an order of magnitude: the census counts messages, never speed.

use std::{collections::BTreeMap, path::Path, time::SystemTime};

/// Whether the test nats-servers trace every protocol message.
pub fn tracing() -> bool {
    std::env::var_os("HENVIS_TEST_NATS_TRACE").is_some()
}

/// Messages per unit between `from` and `to`: `(direction, client, subject pattern)` →
/// count, where direction is `in` (the client published it) or `out` (the server sent it
/// to the client), client the connection's name without the library prefix, and the
/// subject pattern has its ids replaced (`<id>`, `<hex>`, `<n>`; every reply inbox is
/// `_INBOX`, every acknowledgement `$JS.ACK.<stream>.<consumer>`).
pub fn count(log: &Path, from: SystemTime, to: SystemTime) -> anyhow::Result<BTreeMap<(String, String, String), u64>> {
    let from = micros(from);
    let to = micros(to);
    let text = std::fs::read(log)?;
    let mut counts = BTreeMap::new();
    for line in text.split(|b| *b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let Some((at, direction, client, subject)) = parse(line) else {
            continue;
        };
        if at < from || at > to {
            continue;
        }
        *counts
            .entry((direction.to_owned(), client.to_owned(), pattern(subject)))
            .or_insert(0) += 1;
    }
    Ok(counts)
}

/// A Markdown table of `counts` divided by `per`, largest first, rows under 0.05 left out
/// (their sum is its own row).
pub fn markdown(counts: &BTreeMap<(String, String, String), u64>, per: usize, unit: &str) -> String {
    use std::fmt::Write as _;
    let per = per.max(1) as f64;
    let total: u64 = counts.values().sum();
    let mut rows: Vec<_> = counts.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut by_client: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for ((d, c, _), n) in counts {
        *by_client.entry((c, d)).or_insert(0) += n;
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nNATS messages per {unit}, from nats-server's trace: {:.1} in all\n",
        total as f64 / per
    );
    let _ = writeln!(s, "| client | published (in) | received (out) |");
    let _ = writeln!(s, "| --- | ---: | ---: |");
    let clients: std::collections::BTreeSet<&str> = by_client.keys().map(|(c, _)| *c).collect();
    for c in clients {
        let get = |d: &str| by_client.get(&(c, d)).copied().unwrap_or(0) as f64 / per;
        let _ = writeln!(s, "| {c} | {:.2} | {:.2} |", get("in"), get("out"));
    }
    let _ = writeln!(s, "\n| per {unit} | direction | client | subject |");
    let _ = writeln!(s, "| ---: | --- | --- | --- |");
    let mut rest = 0;
    for ((d, c, subject), n) in rows {
        if (*n as f64 / per) < 0.05 {
            rest += n;
            continue;
        }
        let _ = writeln!(s, "| {:.2} | {d} | {c} | `{subject}` |", *n as f64 / per);
    }
    if rest > 0 {
        let _ = writeln!(s, "| {:.2} | | | every other subject |", rest as f64 / per);
    }
    s
}

fn micros(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The time (µs since the epoch, UTC), the direction, the client's name and the subject of
/// a published or sent message, from a trace line such as
/// `[pid] 2026/11/30 06:18:47.500341 [TRC] 127.0.0.1:53666 - cid:100 - "v0.51.0:rust:henvis-ngo" - "<user>" - <<- [HPUB subject reply …]`.
fn parse(line: &str) -> Option<(i64, &'static str, &str, &str)> {
    let rest = line.strip_prefix('[')?.split_once("] ")?.1;
    let (date, rest) = rest.split_once(' ')?;
    let (clock, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("[TRC] ")?;
    let (direction, message) = if let Some((_, m)) = rest.split_once(" - <<- [") {
        ("in", m)
    } else if let Some((_, m)) = rest.split_once(" - ->> [") {
        ("out", m)
    } else {
        return None;
    };
    let (verb, args) = message.split_once(' ')?;
    if !matches!(verb, "PUB" | "HPUB" | "MSG" | "HMSG") {
        return None;
    }
    let subject = args.split([' ', ']']).next()?;
    let client = rest
        .split(" - \"")
        .nth(1)
        .and_then(|c| c.split('"').next())
        .unwrap_or("");
    let client = client.rsplit(':').next().unwrap_or(client);
    Some((at(date, clock)?, direction, client, subject))
}

/// `2026/11/30` and `06:18:47.500341` (UTC) as µs since the epoch.
fn at(date: &str, clock: &str) -> Option<i64> {
    let mut d = date.split('/').map(|p| p.parse::<i32>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let date = time::Date::from_calendar_date(
        y,
        time::Month::try_from(u8::try_from(m).ok()?).ok()?,
        u8::try_from(day).ok()?,
    )
    .ok()?;
    let (hms, frac) = clock.split_once('.')?;
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    let frac: i64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    let midnight = date.midnight().assume_utc().unix_timestamp();
    Some((midnight + h * 3600 + min * 60 + s) * 1_000_000 + frac)
}

/// `subject` with its ids replaced, so one kind of message counts under one pattern.
fn pattern(subject: &str) -> String {
    if subject.starts_with("_INBOX") {
        return "_INBOX".into();
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    if subject.starts_with("$JS.ACK.") && tokens.len() > 3 {
        return tokens[..4].join(".");
    }
    tokens
        .iter()
        .map(|t| {
            let hex = |c: char| c.is_ascii_hexdigit();
            if t.len() == 36 && t.chars().all(|c| hex(c) || c == '-') && t.matches('-').count() == 4 {
                "<id>"
            } else if t.len() >= 32 && t.chars().all(hex) {
                "<hex>"
            } else if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
                "<n>"
            } else {
                t
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_line_gives_its_time_direction_client_and_subject() {
        let line = r#"[6679] 2026/11/30 06:18:47.500341 [TRC] 127.0.0.1:53666 - cid:100 - "v0.51.0:rust:henvis-ngo" - "HENVIS/user:henvis://service/ngo" - <<- [HPUB henvis.in.ngo.suspected_victim_reported.a8afd95e-20a9-4b9d-af7d-934f53666368 _INBOX_service_ngo.Avf 120 560]"#;
        let (at, d, c, s) = parse(line).unwrap();
        assert_eq!((d, c), ("in", "henvis-ngo"));
        assert_eq!(at, 1_796_019_527_500_341);
        assert_eq!(pattern(s), "henvis.in.ngo.suspected_victim_reported.<id>");
        let out = r#"[6679] 2026/11/30 06:18:47.5 [TRC] 127.0.0.1:1 - cid:7 - "v0.51.0:rust:henvis-router" - ->> [MSG _INBOX.abc.def 1 2]"#;
        let (at, d, c, s) = parse(out).unwrap();
        assert_eq!(
            (at % 1_000_000, d, c, pattern(s).as_str()),
            (500_000, "out", "henvis-router", "_INBOX")
        );
        assert!(parse(r#"[1] 2026/11/30 06:18:47.5 [TRC] 127.0.0.1:1 - cid:7 - "x" - <<- [SUB a.b 1]"#).is_none());
        assert_eq!(pattern("$JS.ACK.OUT.inbox-x.1.2.3.4.5.6"), "$JS.ACK.OUT.inbox-x");
        assert_eq!(
            pattern("$KV.henvis_idempotency.ngo-a.f90045df20d4118cc10a7f8af729dfc1a258cdccda211b2bd97313a552f3aaaa"),
            "$KV.henvis_idempotency.ngo-a.<hex>"
        );
    }
}
