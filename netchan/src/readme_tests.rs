//! The README's Rust blocks read as plain programs a user can paste: no
//! rustdoc-hidden lines (GitHub shows them as text), each with its `main`.
//! `readme` in lib.rs compiles and runs them as doc tests.

const README: &str = include_str!("../../README.md");

/// The README's Rust blocks (what rustdoc tests: an untagged fence, or one
/// tagged `rust`), each with the line number of its opening fence.
fn rust_blocks() -> Vec<(usize, Vec<&'static str>)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, bool, Vec<&str>)> = None;
    for (i, line) in README.lines().enumerate() {
        let Some(tag) = line.trim_start().strip_prefix("```") else {
            if let Some((_, _, body)) = &mut open {
                body.push(line);
            }
            continue;
        };
        match open.take() {
            Some((start, true, body)) => blocks.push((start, body)),
            Some((_, false, _)) => {}
            None => {
                let lang = tag.split(',').next().unwrap_or("").trim();
                open = Some((i + 1, lang.is_empty() || lang == "rust", Vec::new()));
            }
        }
    }
    assert!(open.is_none(), "README.md ends inside a code block");
    blocks
}

#[test]
fn readme_has_rust_blocks() {
    assert!(rust_blocks().len() >= 3);
}

#[test]
fn readme_rust_blocks_have_no_hidden_lines() {
    for (start, body) in rust_blocks() {
        for line in body {
            let t = line.trim_start();
            assert!(
                t != "#" && !t.starts_with("# "),
                "README.md block at line {start} has a rustdoc-hidden line, shown as text \
                 on GitHub: {line:?}"
            );
        }
    }
}

#[test]
fn readme_rust_blocks_are_complete_programs() {
    for (start, body) in rust_blocks() {
        assert!(
            body.iter().any(|l| l.contains("async fn main()")),
            "README.md block at line {start} has no `async fn main()`"
        );
    }
}
