use std::time::{Duration, Instant};

/// What an [`eventually`] check returns: `bool`, or `Result<(), String>` whose error says what
/// the check saw instead, for the message if time runs out.
pub trait Outcome {
    fn into_result(self) -> Result<(), String>;
}

impl Outcome for bool {
    fn into_result(self) -> Result<(), String> {
        if self { Ok(()) } else { Err(String::new()) }
    }
}

impl Outcome for Result<(), String> {
    fn into_result(self) -> Result<(), String> {
        self
    }
}

/// Polls `check` until it holds; panics with `what` (and what the check last saw, if it says)
/// once `timeout` has passed.
pub fn eventually<O: Outcome>(what: &str, timeout: Duration, mut check: impl FnMut() -> O) {
    let deadline = Instant::now() + timeout;
    loop {
        match check().into_result() {
            Ok(()) => return,
            Err(seen) if Instant::now() > deadline => {
                if seen.is_empty() {
                    panic!("timed out waiting until {what}");
                }
                panic!("timed out waiting until {what}; last seen: {seen}");
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `text` parsed as JSON (what `kubectl -o json` printed); panics, showing it, if it is not.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}
