//! Test access to the captured real-OpenZFS outputs in `tests/fixtures/`
//! (`<case>.cmd`, `.stdout`, `.stderr`, `.status`; see the README there).

use std::path::PathBuf;

/// One captured command run.
#[derive(Debug, Clone)]
pub(crate) struct Fixture {
    /// The argv, program first.
    pub(crate) args: Vec<String>,
    /// Its stdout.
    pub(crate) stdout: String,
    /// Its stderr.
    pub(crate) stderr: String,
    /// Its exit status.
    pub(crate) status: i32,
}

impl Fixture {
    /// Loads a case; panics (it is a test) if a file is missing.
    pub(crate) fn load(case: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let read = |ext: &str| {
            let path = dir.join(format!("{case}.{ext}"));
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        Self {
            args: read("cmd").lines().map(str::to_owned).collect(),
            stdout: read("stdout"),
            stderr: read("stderr"),
            status: read("status").trim().parse().unwrap(),
        }
    }

    /// The arguments from index `n` on (0 is the program).
    pub(crate) fn args_after(&self, n: usize) -> Vec<String> {
        self.args[n..].to_vec()
    }
}

/// Asserts that every line of `text` occurs, whole, in the outputs of `tests/probes/` (real
/// OpenZFS output captured by the scripts there).
pub(crate) fn assert_probed(text: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/probes");
    let probes: String = ["errors-1.out", "errors-2.out"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap())
        .collect();
    for line in text.lines() {
        assert!(
            probes.lines().any(|l| l == line),
            "not in tests/probes: {line:?}"
        );
    }
}
