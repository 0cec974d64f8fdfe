//! Errors across the crate: how an error and its sources are told in one line.

/// An error and every cause under it, on one line: "a: b: c". Used in warnings so an
/// operator sees why etcd refused (a TLS alert, an unknown CA) and not only that it did.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.ends_with(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}
