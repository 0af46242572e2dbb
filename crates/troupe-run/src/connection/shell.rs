//! POSIX shell quoting, in one place: every command line troupe sends is built here,
//! so no module ever glues user strings into a shell command by hand.

use super::{Cmd, CmdProgram, FileAttrs, FileKind, FileStat};

/// Quote one word for a POSIX shell: bare when it is plainly safe, else single quotes.
pub fn quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

pub fn quote_argv<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| quote(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `cd DIR && <env from stdin> && PROGRAM` as one line for the remote login shell.
///
/// Environment values never appear on the line: a command line is readable by every
/// user of the host (`ps`, `/proc/*/cmdline`) for as long as the command runs, and
/// `env {}` is where tokens go. The line holds only the names; the values come first on
/// the command's stdin ([`session_stdin`]), one line each, every byte written as an
/// octal escape, and the shell's own `read` and `printf` builtins (no process, no
/// argv) decode them byte for byte (quotes, newlines, trailing newlines included).
/// `read` on a pipe takes one byte at a time, so the command gets exactly the user's
/// stdin after them. Names must be shell variable names ([`is_env_name`]).
pub fn command_line(cmd: &Cmd) -> String {
    let body = match &cmd.program {
        CmdProgram::Argv(argv) => quote_argv(argv),
        CmdProgram::Script(script) => format!("sh -c {}", quote(script)),
    };
    let mut line = String::new();
    if let Some(dir) = &cmd.cwd {
        line.push_str(&format!("cd {} && ", quote(dir)));
    }
    for (k, _) in &cmd.env {
        // `.` keeps trailing newlines through the command substitution
        line.push_str(&format!(
            "IFS= read -r troupe_v && troupe_v=$(printf \"$troupe_v.\") && export {}=\"${{troupe_v%.}}\" && ",
            quote(k)
        ));
    }
    if !cmd.env.is_empty() {
        line.push_str("unset troupe_v && ");
    }
    line.push_str(&body);
    line
}

/// What the command line of [`command_line`] reads on stdin: the environment values
/// (one line each, every byte as `\ooo`), then the user's stdin. `None` when neither.
pub fn session_stdin(cmd: &Cmd) -> Option<Vec<u8>> {
    if cmd.env.is_empty() {
        return cmd.stdin.clone();
    }
    let mut out = Vec::new();
    for (_, v) in &cmd.env {
        for b in v.bytes() {
            out.extend_from_slice(format!("\\{b:03o}").as_bytes());
        }
        out.push(b'\n');
    }
    out.extend_from_slice(cmd.stdin.as_deref().unwrap_or_default());
    Some(out)
}

/// Whether `name` can be an environment variable of a command: a shell name
/// (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Exit status of the read snippet when the path does not exist (with [`ABSENT_MARK`]
/// on stderr, so a `cat` failing with the same code is not mistaken for absence).
pub const READ_ABSENT_CODE: i32 = 44;
pub const ABSENT_MARK: &str = "troupe: absent";

/// `cat` a file in one round trip, telling "absent" apart from "unreadable".
pub fn read_script(path: &str) -> String {
    let p = quote(path);
    format!("if [ -e {p} ]; then exec cat -- {p}; else echo '{ABSENT_MARK}' >&2; exit {READ_ABSENT_CODE}; fi")
}

/// Whether a read snippet's result means "no such file".
pub fn read_was_absent(exit_code: i32, stderr: &[u8]) -> bool {
    exit_code == READ_ABSENT_CODE && String::from_utf8_lossy(stderr).contains(ABSENT_MARK)
}

/// Facts about a path in ONE round trip (parsed by [`parse_stat`]): `absent`, or
/// `present`, then `RAWMODE_HEX OWNER GROUP SIZE`, then `sha256:HEX` for a readable
/// regular file or `link:TARGET` for a symlink. Needs `stat -c` and `sha256sum`
/// (GNU coreutils or busybox). A final symlink is not followed.
pub fn stat_script(path: &str) -> String {
    let p = quote(path);
    format!(
        "p={p}\n\
         if [ ! -e \"$p\" ] && [ ! -L \"$p\" ]; then echo absent; exit 0; fi\n\
         m=$(stat -c '%f %U %G %s' -- \"$p\") || exit 1\n\
         printf 'present\\n%s\\n' \"$m\"\n\
         if [ -L \"$p\" ]; then printf 'link:'; readlink -- \"$p\"\n\
         elif [ -f \"$p\" ] && [ -r \"$p\" ]; then h=$(sha256sum < \"$p\") && echo \"sha256:${{h%% *}}\"\n\
         fi\n\
         exit 0"
    )
}

/// Parse what [`stat_script`] printed. `Err` carries a description for the caller's
/// error (the output was not what the snippet prints: an exotic `stat`?).
pub fn parse_stat(stdout: &str) -> Result<Option<FileStat>, String> {
    let mut lines = stdout.splitn(3, '\n');
    match lines.next() {
        Some("absent") => return Ok(None),
        Some("present") => {}
        _ => return Err(format!("unexpected stat output: {stdout:?}")),
    }
    let info = lines
        .next()
        .ok_or_else(|| format!("stat output lacks the attribute line: {stdout:?}"))?;
    let f: Vec<&str> = info.split(' ').collect();
    let [raw, owner, group, size] = f.as_slice() else {
        return Err(format!("unexpected stat attribute line {info:?}"));
    };
    let raw = u32::from_str_radix(raw, 16).map_err(|_| format!("bad raw mode {raw:?} in stat output"))?;
    let size = size
        .parse::<u64>()
        .map_err(|_| format!("bad size {size:?} in stat output"))?;
    let kind = kind_of(raw);
    let rest = lines.next().unwrap_or("");
    let mut sha256 = None;
    let mut link_target = None;
    if let Some(t) = rest.strip_prefix("link:") {
        link_target = Some(t.strip_suffix('\n').unwrap_or(t).to_string());
    } else if let Some(h) = rest.strip_prefix("sha256:") {
        let h = h.trim();
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("bad sha256 {h:?} in stat output"));
        }
        sha256 = Some(h.to_string());
    }
    Ok(Some(FileStat {
        kind,
        mode: raw & 0o7777,
        owner: owner.to_string(),
        group: group.to_string(),
        size,
        sha256,
        link_target,
    }))
}

/// Where the bytes of a [`write_script`] come from.
#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    /// The command's stdin (any bytes, any size): these bytes. The script checks that
    /// exactly they arrived before it renames anything, because a stdin that ends
    /// early (troupe killed, the connection lost) looks to `cat` like a normal end.
    Stdin(&'a [u8]),
    /// Inside the script itself, for text without NUL bytes: needs no stdin, so it can
    /// run in the host's control shell (see `connection::control`). Nothing to verify:
    /// a script cut off in transit ends inside an open quote and never runs.
    Inline(&'a str),
}

/// Whether `data` can travel inside a script as [`Content::Inline`]: UTF-8 without NUL
/// bytes (a shell word cannot hold NUL) and not so large that the command line, quoted
/// twice, gets unwieldy.
pub fn inline_text(data: &[u8]) -> Option<&str> {
    const MAX_INLINE: usize = 256 * 1024;
    if data.len() > MAX_INLINE || data.contains(&0) {
        return None;
    }
    std::str::from_utf8(data).ok()
}

/// The kind of file a raw `st_mode` (as `stat -c %f` prints it) says.
pub fn kind_of(raw: u32) -> FileKind {
    match raw & 0o170000 {
        0o100000 => FileKind::File,
        0o040000 => FileKind::Directory,
        0o120000 => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

/// What the temp files of writes to the file named `name` start with, in the same
/// directory: `.NAME.troupe-tmp.`, then the writing shell's pid and a random part.
/// Recognisable as troupe's and as belonging to that one file, so a later write of the
/// same path can remove what an interrupted one left.
pub fn temp_prefix(name: &str) -> String {
    format!(".{name}.troupe-tmp.")
}

/// Replace `path` atomically in ONE round trip: a new temp file in the same directory
/// (so `mv` is a rename), owner/group/mode from `attrs` or else copied from the file
/// being replaced (new files get the umask default), `sync`, `mv -f`, `sync` of the
/// directory. The temp file is removed on any failure or signal.
///
/// Content from stdin is renamed into place only when the temp file has exactly the
/// size and SHA-256 of what was sent (both computed here, checked on the host): a
/// troupe killed mid-transfer or a dropped connection ends `cat`'s input early, and a
/// truncated file must never replace a good one. A temp file whose shell was killed
/// before its trap could remove it ([`temp_prefix`] names carry that shell's pid) is
/// removed by the next write of the same path.
///
/// Every program started here costs the host a fork and exec on every changed file,
/// so the shell's builtins do what they can: the temp file is created exclusively by
/// the shell (`set -C`) under a random name, and a mode without x or special bits is
/// given at creation through the umask instead of a `chmod`.
pub fn write_script(path: &str, attrs: &FileAttrs, content: Content<'_>) -> String {
    let (dir, name) = match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (".", path),
    };
    let slash_dir = if dir == "/" {
        "/".to_string()
    } else {
        format!("{dir}/")
    };
    let prefix = format!("{slash_dir}{}", temp_prefix(name));
    // Stale temp files: a pid (the number after the prefix) that no longer runs. An
    // unreadable or odd name is no writer's any more either. `kill -0` is refused for
    // another user's live process, so `/proc` is asked too.
    let mut s = format!(
        "p={p}\n\
         set -e\n\
         if [ -d \"$p\" ] && [ ! -L \"$p\" ]; then echo \"troupe: $p is a directory\" >&2; exit 1; fi\n\
         for o in {glob}*; do\n\
         [ -e \"$o\" ] || continue\n\
         q=${{o##*.troupe-tmp.}}; q=${{q%%.*}}\n\
         kill -0 \"$q\" 2>/dev/null || [ -d \"/proc/$q\" ] || rm -f -- \"$o\" || :\n\
         done\n\
         t={t}$$.{r:016x}\n",
        p = quote(path),
        glob = quote(&prefix),
        t = quote(&prefix),
        r = rand::random::<u64>(),
    );
    // The mode at creation: exact when the umask can express it, else private until
    // the `chmod` below.
    let umask_gives_mode = matches!(attrs.mode, Some(m) if m & !0o666 == 0);
    match attrs.mode {
        Some(m) if umask_gives_mode => s.push_str(&format!("umask {:03o}\n", 0o777 & !m)),
        Some(_) => s.push_str("umask 077\n"),
        None => s.push_str("if [ -e \"$p\" ]; then umask 077; fi\n"),
    }
    s.push_str(
        "set -C\n\
         : > \"$t\"\n\
         set +C\n\
         trap 'rm -f -- \"$t\"' EXIT\n\
         trap 'exit 1' HUP INT TERM PIPE\n",
    );
    match content {
        Content::Stdin(data) => {
            use sha2::Digest as _;
            let size = data.len();
            let sha = hex::encode(sha2::Sha256::digest(data));
            // The size first: it is cheap, and a cut-off transfer fails it.
            s.push_str(&format!(
                "cat > \"$t\"\n\
                 n=$(stat -c %s -- \"$t\")\n\
                 if [ \"$n\" != {size} ]; then echo \"troupe: $p: $n of {size} bytes arrived (transfer cut off); not replaced\" >&2; exit 1; fi\n\
                 h=$(sha256sum < \"$t\"); h=${{h%% *}}\n\
                 if [ \"$h\" != {sha} ]; then echo \"troupe: $p: what arrived has SHA-256 $h, not {sha}; not replaced\" >&2; exit 1; fi\n"
            ));
        }
        Content::Inline(text) => s.push_str(&format!("printf '%s' {} > \"$t\"\n", quote(text))),
    }
    // Whatever `attrs` leaves open comes from the file being replaced.
    if attrs.owner.is_none() || attrs.group.is_none() {
        s.push_str("if [ -e \"$p\" ]; then chown --reference=\"$p\" -- \"$t\"; fi\n");
    }
    match (&attrs.owner, &attrs.group) {
        (Some(o), Some(g)) => s.push_str(&format!("chown -- {} \"$t\"\n", quote(&format!("{o}:{g}")))),
        (Some(o), None) => s.push_str(&format!("chown -- {} \"$t\"\n", quote(o))),
        (None, Some(g)) => s.push_str(&format!("chgrp -- {} \"$t\"\n", quote(g))),
        (None, None) => {}
    }
    // chmod after chown: chown clears setuid/setgid bits.
    match attrs.mode {
        Some(_) if umask_gives_mode => {}
        Some(mode) => s.push_str(&format!("chmod {mode:o} \"$t\"\n")),
        None => s.push_str("if [ -e \"$p\" ]; then chmod --reference=\"$p\" -- \"$t\"; fi\n"),
    }
    s.push_str(
        "sync -- \"$t\" 2>/dev/null || sync\n\
         mv -f -- \"$t\" \"$p\"\n\
         trap - EXIT\n",
    );
    s.push_str(&format!("sync -- {} 2>/dev/null || true\n", quote(dir)));
    s
}

/// The text sent to the host's control shell to run `cmd` and then report, framed by
/// the request's own `tag`: the tag and the command's exit status on stdout and the tag
/// on stderr, each on a line of its own after a newline of ours (so output without a
/// final newline is kept exactly); `connection::control::Frames` parses it. The command runs in a subshell with stdin from `/dev/null`, so `exit`,
/// `cd`, `umask` or a reader of stdin cannot touch the control shell; a script goes
/// through `eval` of one quoted word, so even a syntax error in it stays inside.
pub fn control_request(cmd: &Cmd, tag: &str) -> String {
    let mut body = String::new();
    if let Some(dir) = &cmd.cwd {
        body.push_str(&format!("cd {} || exit 1; ", quote(dir)));
    }
    for (k, v) in &cmd.env {
        body.push_str(&format!("export {}; ", quote(&format!("{k}={v}"))));
    }
    match &cmd.program {
        CmdProgram::Argv(argv) => body.push_str(&format!("exec {}", quote_argv(argv))),
        CmdProgram::Script(script) => body.push_str(&format!("eval {}", quote(script))),
    }
    format!("( {body}\n) </dev/null; r=$?; printf '\\n{tag} %d\\n' \"$r\"; printf '\\n{tag}\\n' >&2\n")
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
        assert_eq!(
            command_line(&cmd),
            "cd '/tmp/x y' && IFS= read -r troupe_v && troupe_v=$(printf \"$troupe_v.\") && \
             export A=\"${troupe_v%.}\" && unset troupe_v && ls -l 'my dir'"
        );
        assert!(
            !command_line(&cmd).contains("1 2"),
            "values are never on the line"
        );
        assert_eq!(session_stdin(&cmd).unwrap(), b"\\061\\040\\062\n");
        assert_eq!(command_line(&Cmd::script("echo $HOME")), "sh -c 'echo $HOME'");
    }

    #[test]
    fn parses_a_regular_file() {
        let out = format!("present\n81a4 root adm 12\nsha256:{}\n", "ab".repeat(32));
        let st = parse_stat(&out).unwrap().unwrap();
        assert_eq!(st.kind, FileKind::File);
        assert_eq!(st.mode, 0o644);
        assert_eq!(
            (st.owner.as_str(), st.group.as_str(), st.size),
            ("root", "adm", 12)
        );
        assert_eq!(st.sha256.as_deref(), Some("ab".repeat(32).as_str()));
        assert_eq!(st.link_target, None);
    }

    #[test]
    fn parses_directory_symlink_absent_and_setuid() {
        let d = parse_stat("present\n43ed root root 4096\n").unwrap().unwrap();
        assert_eq!((d.kind, d.mode, d.sha256), (FileKind::Directory, 0o1755, None));
        let l = parse_stat("present\na1ff root root 11\nlink:/etc/a b\n")
            .unwrap()
            .unwrap();
        assert_eq!(l.kind, FileKind::Symlink);
        assert_eq!(l.link_target.as_deref(), Some("/etc/a b"));
        assert_eq!(parse_stat("absent\n").unwrap(), None);
        let s = parse_stat("present\n89ed root root 5\n").unwrap().unwrap();
        assert_eq!((s.kind, s.mode), (FileKind::File, 0o4755));
        let fifo = parse_stat("present\n11a4 root root 0\n").unwrap().unwrap();
        assert_eq!(fifo.kind, FileKind::Other);
    }

    #[test]
    fn rejects_output_it_does_not_understand() {
        assert!(parse_stat("").is_err());
        assert!(parse_stat("present\n").is_err());
        assert!(parse_stat("present\nzz root root 1\n").is_err());
        assert!(parse_stat("present\n81a4 root root 1\nsha256:short\n").is_err());
    }

    #[test]
    fn read_absence_needs_code_and_marker() {
        assert!(read_was_absent(READ_ABSENT_CODE, b"troupe: absent\n"));
        assert!(!read_was_absent(READ_ABSENT_CODE, b"cat: x: Permission denied"));
        assert!(!read_was_absent(1, b"troupe: absent\n"));
        assert!(read_script("/etc/my file").contains("'/etc/my file'"));
    }

    #[test]
    fn write_script_quotes_and_orders_chown_before_chmod() {
        let attrs = FileAttrs {
            mode: Some(0o4755),
            owner: Some("etcd".into()),
            group: Some("my grp".into()),
        };
        let s = write_script("/etc/kubernetes/a b.yaml", &attrs, Content::Stdin(b""));
        assert!(s.contains("p='/etc/kubernetes/a b.yaml'"), "{s}");
        assert!(s.contains("t='/etc/kubernetes/.a b.yaml.troupe-tmp.'$$."), "{s}");
        assert!(s.contains("chown -- 'etcd:my grp' \"$t\""), "{s}");
        assert!(s.find("chown --").unwrap() < s.find("chmod 4755").unwrap(), "{s}");
        assert!(s.contains("umask 077\n"), "private until the chmod\n{s}");
        assert!(
            !s.contains("--reference"),
            "owner, group and mode all given: nothing to copy\n{s}"
        );
        let keep = write_script(
            "/etc/a",
            &FileAttrs {
                owner: Some("etcd".into()),
                ..FileAttrs::default()
            },
            Content::Stdin(b""),
        );
        assert!(
            keep.contains("chown --reference") && keep.contains("chmod --reference"),
            "{keep}"
        );
        // The cleanup trap is set once the temp file is ours, dropped after the
        // rename: no `rm` after a good write, never an `rm` of somebody else's file.
        assert!(s.find("trap 'rm").unwrap() > s.find("set +C").unwrap(), "{s}");
        assert!(s.find("trap - EXIT").unwrap() > s.find("mv -f").unwrap(), "{s}");
        assert!(
            write_script("/x", &FileAttrs::default(), Content::Stdin(b"")).contains("t=/.x.troupe-tmp.$$.")
        );
        assert!(
            write_script("x", &FileAttrs::default(), Content::Stdin(b"")).contains("t=./.x.troupe-tmp.$$.")
        );
    }

    #[test]
    fn write_script_gives_plain_modes_through_the_umask() {
        let attrs = FileAttrs {
            mode: Some(0o640),
            ..FileAttrs::default()
        };
        let s = write_script("/etc/a", &attrs, Content::Inline("it's\n"));
        assert!(s.contains("umask 137\n"), "{s}");
        assert!(!s.contains("chmod"), "{s}");
        assert!(s.contains(r"printf '%s' 'it'\''s"), "{s}");
        assert!(!s.contains("cat >"), "{s}");
        assert!(!s.contains("mktemp"), "{s}");
        // Two scripts never share a temp name.
        assert_ne!(
            write_script("/etc/a", &attrs, Content::Stdin(b"")),
            write_script("/etc/a", &attrs, Content::Stdin(b""))
        );
    }

    #[test]
    fn inline_text_takes_only_small_text_without_nul() {
        assert_eq!(inline_text(b"key = 1\n"), Some("key = 1\n"));
        assert_eq!(inline_text(b"a\0b"), None);
        assert_eq!(inline_text(&[0xff, 0xfe]), None);
        assert_eq!(inline_text(&vec![b'x'; 300 * 1024]), None);
    }

    #[test]
    fn control_request_contains_the_command_and_frames_its_answer() {
        let mut cmd = Cmd::script("echo 'hi'; exit 3");
        cmd.cwd = Some("/tmp/a b".into());
        cmd.env = vec![("A".into(), "1 2".into())];
        let r = control_request(&cmd, "N0NCE");
        assert!(
            r.starts_with("( cd '/tmp/a b' || exit 1; export 'A=1 2'; eval "),
            "{r}"
        );
        assert!(r.contains(") </dev/null; r=$?;"), "{r}");
        assert!(r.ends_with("printf '\\nN0NCE\\n' >&2\n"), "{r}");
        assert!(control_request(&Cmd::argv(["ls", "a b"]), "N").starts_with("( exec ls 'a b'\n)"));
    }
}
