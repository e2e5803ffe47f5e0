//! Strong ETags over a resource's version: `"7"`.

pub fn format(version: i64) -> String {
    format!("\"{version}\"")
}

pub fn parse(value: &str) -> Option<i64> {
    value.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}
