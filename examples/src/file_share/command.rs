//! The client's command language: one command a line, words split at
//! spaces, `"..."` or `'...'` around a word with spaces in it.

use std::path::PathBuf;

/// The client's commands, as `help` prints them.
pub const HELP: &str = "\
commands:
  list                           the clients connected, one per line
  read CLIENT PATH [--out FILE]  print a file of CLIENT (or save it to FILE)
  stats                          what the server sees of this connection
  echo TEXT                      print TEXT (marks a point in scripted output)
  help                           this text
  quit                           leave (as does end of input)
quote a word with spaces: read alice \"my notes.txt\"";

/// One line of input, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// An empty line.
    Nothing,
    /// `list`
    List,
    /// `read CLIENT PATH [--out FILE]`
    Read {
        /// Whose file.
        client: String,
        /// The path in that client's shared directory.
        path: String,
        /// Where to save it; `None` prints it.
        out: Option<PathBuf>,
    },
    /// `stats`
    Stats,
    /// `echo TEXT`: the rest of the line, as it is.
    Echo(String),
    /// `help`
    Help,
    /// `quit` or `exit`
    Quit,
}

impl Command {
    /// Understands one line, or says in one line what is wrong with it.
    ///
    /// ```
    /// use examples::file_share::Command;
    /// assert_eq!(Command::parse("list"), Ok(Command::List));
    /// assert_eq!(
    ///     Command::parse("read alice 'my notes.txt' --out copy.txt"),
    ///     Ok(Command::Read {
    ///         client: "alice".into(),
    ///         path: "my notes.txt".into(),
    ///         out: Some("copy.txt".into()),
    ///     }),
    /// );
    /// assert!(Command::parse("read alice").is_err());
    /// assert!(Command::parse("fetch").is_err());
    /// ```
    pub fn parse(line: &str) -> Result<Command, String> {
        let line = line.trim();
        let (verb, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        match verb {
            "" => return Ok(Command::Nothing),
            "echo" => return Ok(Command::Echo(rest.trim_start().to_owned())),
            _ => {}
        }
        let words = split(rest)?;
        let no_arguments = |c: Command| {
            if words.is_empty() {
                Ok(c)
            } else {
                Err(format!("{verb} takes no arguments"))
            }
        };
        match verb {
            "list" => no_arguments(Command::List),
            "stats" => no_arguments(Command::Stats),
            "help" | "?" => no_arguments(Command::Help),
            "quit" | "exit" => no_arguments(Command::Quit),
            "read" => parse_read(words),
            _ => Err(format!("unknown command {verb:?} (try help)")),
        }
    }
}

fn parse_read(words: Vec<String>) -> Result<Command, String> {
    const USAGE: &str = "usage: read CLIENT PATH [--out FILE]";
    let mut out = None;
    let mut positional = Vec::new();
    let mut words = words.into_iter();
    while let Some(w) = words.next() {
        if w == "--out" {
            let file = words
                .next()
                .ok_or_else(|| format!("--out needs a file name; {USAGE}"))?;
            if out.replace(PathBuf::from(file)).is_some() {
                return Err(format!("--out given twice; {USAGE}"));
            }
        } else if let Some(file) = w.strip_prefix("--out=") {
            if out.replace(PathBuf::from(file)).is_some() {
                return Err(format!("--out given twice; {USAGE}"));
            }
        } else {
            positional.push(w);
        }
    }
    match <[String; 2]>::try_from(positional) {
        Ok([client, path]) => Ok(Command::Read { client, path, out }),
        Err(_) => Err(USAGE.to_owned()),
    }
}

/// Words at spaces; quotes group, `\` escapes the next character outside
/// single quotes.
fn split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("a ' is not closed".to_owned()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => w.push(c),
                            None => return Err("a \" is not closed".to_owned()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("a \" is not closed".to_owned()),
                    }
                }
            }
            '\\' => {
                let c = chars.next().ok_or("a \\ ends the line")?;
                word.get_or_insert_with(String::new).push(c);
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::{Command, split};

    #[test]
    fn split_groups_quoted_words_and_keeps_empty_quotes() {
        assert_eq!(
            split(r#"a "b c" 'd e'f g\ h ''"#).unwrap(),
            ["a", "b c", "d ef", "g h", ""]
        );
        assert!(split("'open").is_err());
        assert!(split("\"open").is_err());
        assert!(split("end\\").is_err());
    }

    #[test]
    fn read_takes_out_anywhere_and_once() {
        let want = Command::Read {
            client: "bob".into(),
            path: "x".into(),
            out: Some("y".into()),
        };
        assert_eq!(Command::parse("read --out y bob x").as_ref(), Ok(&want));
        assert_eq!(Command::parse("  read bob x --out=y ").as_ref(), Ok(&want));
        assert!(Command::parse("read bob x --out").is_err());
        assert!(Command::parse("read bob x --out a --out b").is_err());
        assert!(Command::parse("read bob x y").is_err());
    }

    #[test]
    fn other_commands_take_no_arguments_except_echo() {
        assert_eq!(Command::parse(""), Ok(Command::Nothing));
        assert_eq!(Command::parse("quit"), Ok(Command::Quit));
        assert_eq!(Command::parse("exit"), Ok(Command::Quit));
        assert_eq!(Command::parse("help"), Ok(Command::Help));
        assert!(Command::parse("list all").is_err());
        assert_eq!(
            Command::parse("echo  two  words "),
            Ok(Command::Echo("two  words".into()))
        );
        assert_eq!(Command::parse("echo"), Ok(Command::Echo(String::new())));
    }
}
