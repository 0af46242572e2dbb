//! POSIX shell quoting, in one place: every command line troupe sends is built here,
//! so no module ever glues user strings into a shell command by hand.

use super::{Cmd, CmdProgram};

/// Quote one word for a POSIX shell: bare when it is plainly safe, else single quotes.
pub fn quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

pub fn quote_argv<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter().map(|a| quote(a.as_ref())).collect::<Vec<_>>().join(" ")
}

/// `cd DIR && env K=V ... PROGRAM` as one line for the remote login shell.
pub fn command_line(cmd: &Cmd) -> String {
    let body = match &cmd.program {
        CmdProgram::Argv(argv) => quote_argv(argv),
        CmdProgram::Script(script) => format!("sh -c {}", quote(script)),
    };
    let mut line = String::new();
    if let Some(dir) = &cmd.cwd {
        line.push_str(&format!("cd {} && ", quote(dir)));
    }
    if !cmd.env.is_empty() {
        line.push_str("env ");
        for (k, v) in &cmd.env {
            line.push_str(&quote(&format!("{k}={v}")));
            line.push(' ');
        }
    }
    line.push_str(&body);
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(quote("/etc/kubernetes"), "/etc/kubernetes");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn command_line_applies_cwd_and_env() {
        let mut cmd = Cmd::argv(["ls", "-l", "my dir"]);
        cmd.cwd = Some("/tmp/x y".into());
        cmd.env = vec![("A".into(), "1 2".into())];
        assert_eq!(command_line(&cmd), "cd '/tmp/x y' && env 'A=1 2' ls -l 'my dir'");
        assert_eq!(command_line(&Cmd::script("echo $HOME")), "sh -c 'echo $HOME'");
    }
}
