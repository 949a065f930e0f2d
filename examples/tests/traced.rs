//! The `traced` example: two processes on loopback print one call tree
//! under one trace id.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `trace_id` of the first line containing `marker`.
fn trace_id_of(log: &str, marker: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no line with {marker} in:\n{log}"));
    let at = line
        .find("trace_id=")
        .unwrap_or_else(|| panic!("no trace_id in {line:?}"));
    line[at + "trace_id=".len()..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect()
}

#[test]
fn both_processes_print_the_same_trace_id() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_traced"))
        .env("RUST_LOG", "info,netchan=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run traced");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        stderr.read_to_string(&mut log).expect("read the log");
        log
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("traced ran for more than 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = reader.join().expect("reader");
    assert!(status.success(), "traced failed:\n{log}");
    let server = trace_id_of(&log, "process=\"server\"");
    let client = trace_id_of(&log, "asked for my name");
    assert_eq!(server.len(), 32, "{log}");
    assert_eq!(server, client, "one trace across both processes:\n{log}");
    // The client's own call span, in the client process, is the root.
    assert_eq!(
        trace_id_of(&log, "netchan.call{service=\"Greeter\""),
        server,
        "{log}"
    );
}
