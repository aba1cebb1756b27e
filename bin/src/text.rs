//! Small helpers for the commands' human output.

/// `one` when `n` is 1, else `many`: "1 step", "2 steps".
pub(crate) fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}
