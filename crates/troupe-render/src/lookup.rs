//! `lookup(NAME, TERM, ...)` and `query(NAME, TERM, ...)`: Ansible's lookups, run on
//! the controller while a template renders: `file` (a controller file's text), `env`
//! (an environment variable), `pipe` (a shell command's output) and `password` (a
//! random password generated once and kept in a 0600 file).
//!
//! Strict like the rest of troupe: a missing file, an unset variable without
//! `default=`, a failing command or an unknown lookup is an error naming it, never an
//! empty string. Passwords read or generated here are handed to the secret sink the
//! engine installs ([`crate::Renderer::on_secret`]), so its masking hides them in
//! output.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use minijinja::value::{Kwargs, Rest};
use minijinja::{Environment, Error, Value};
use rand::RngExt as _;

use crate::filters::invalid;

/// Called with every secret a lookup produces.
pub type SecretSink = Arc<dyn Fn(&str) + Send + Sync>;

/// What the lookups need from the engine: where a task's files are, and where secrets go.
#[derive(Default)]
pub(crate) struct Lookups {
    /// Base folders of the task, most specific first (each holding `files/`).
    pub(crate) dirs: RwLock<Vec<PathBuf>>,
    pub(crate) on_secret: RwLock<Option<SecretSink>>,
}

/// One password file is created at a time in this process.
static PASSWORD_LOCK: Mutex<()> = Mutex::new(());

const KNOWN: &str = "file, env, pipe, password";
const DEFAULT_LENGTH: usize = 20;

pub(crate) fn register(env: &mut Environment<'static>, lookups: &Arc<Lookups>) {
    let l = lookups.clone();
    env.add_function(
        "lookup",
        move |name: &str, terms: Rest<String>, kwargs: Kwargs| {
            let wantlist: Option<bool> = kwargs.get("wantlist")?;
            let out = run(&l, name, &terms, &kwargs)?;
            kwargs.assert_all_used()?;
            Ok(if wantlist.unwrap_or(false) {
                Value::from(out)
            } else {
                Value::from(out.join(","))
            })
        },
    );
    for fname in ["query", "q"] {
        let l = lookups.clone();
        env.add_function(fname, move |name: &str, terms: Rest<String>, kwargs: Kwargs| {
            let out = run(&l, name, &terms, &kwargs)?;
            kwargs.assert_all_used()?;
            Ok(Value::from(out))
        });
    }
}

fn run(l: &Lookups, name: &str, terms: &[String], kwargs: &Kwargs) -> Result<Vec<String>, Error> {
    match name {
        "file" => {
            let rstrip: Option<bool> = kwargs.get("rstrip")?;
            let lstrip: Option<bool> = kwargs.get("lstrip")?;
            terms
                .iter()
                .map(|t| {
                    let path = find(l, t)?;
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        invalid(format!("lookup('file'): cannot read {}: {e}", path.display()))
                    })?;
                    let text = if rstrip.unwrap_or(true) {
                        text.trim_end()
                    } else {
                        &text
                    };
                    let text = if lstrip.unwrap_or(false) {
                        text.trim_start()
                    } else {
                        text
                    };
                    Ok(text.to_string())
                })
                .collect()
        }
        "env" => {
            let default: Option<String> = kwargs.get("default")?;
            terms
                .iter()
                .map(|t| match std::env::var(t) {
                    Ok(v) => Ok(v),
                    Err(_) => default.clone().ok_or_else(|| {
                        invalid(format!(
                            "lookup('env'): `{t}` is not set on the controller; give `default=` to allow that"
                        ))
                    }),
                })
                .collect()
        }
        "pipe" => terms
            .iter()
            .map(|t| {
                let out = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(t)
                    .stdin(std::process::Stdio::null())
                    .output()
                    .map_err(|e| invalid(format!("lookup('pipe'): cannot run sh: {e}")))?;
                if !out.status.success() {
                    return Err(invalid(format!(
                        "lookup('pipe'): `{t}` failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim_end()
                    )));
                }
                Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
            })
            .collect(),
        "password" => {
            let length: Option<usize> = kwargs.get("length")?;
            let chars: Option<String> = kwargs.get("chars")?;
            terms
                .iter()
                .map(|t| {
                    let pw = password(l, t, length, chars.as_deref())?;
                    if let Some(sink) = l.on_secret.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
                        sink(&pw);
                    }
                    Ok(pw)
                })
                .collect()
        }
        other => Err(invalid(format!(
            "lookup: unknown lookup `{other}`; troupe has {KNOWN}"
        ))),
    }
}

/// A controller file named by a task: absolute as is, else `DIR/files/NAME` then
/// `DIR/NAME` for each of the task's folders (as `copy src` is found).
fn find(l: &Lookups, name: &str) -> Result<PathBuf, Error> {
    let p = Path::new(name);
    if p.is_absolute() {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(invalid(format!(
                "lookup('file'): {name} does not exist on the controller"
            )))
        };
    }
    let dirs = l.dirs.read().unwrap_or_else(|e| e.into_inner());
    let candidates: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|d| [d.join("files").join(name), d.join(name)])
        .collect();
    candidates.iter().find(|c| c.is_file()).cloned().ok_or_else(|| {
        let looked: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
        invalid(format!(
            "lookup('file'): `{name}` not found on the controller (looked at {})",
            if looked.is_empty() {
                "no folder: give an absolute path".to_string()
            } else {
                looked.join(", ")
            }
        ))
    })
}

/// The characters of a named set, or the literal text.
fn charset(spec: Option<&str>) -> Result<Vec<char>, Error> {
    let Some(spec) = spec else {
        // Ansible's default: letters, digits and `.,:-_`
        return Ok(('a'..='z')
            .chain('A'..='Z')
            .chain('0'..='9')
            .chain(".,:-_".chars())
            .collect());
    };
    let mut out = Vec::new();
    for part in spec.split(',') {
        match part {
            "ascii_letters" => out.extend(('a'..='z').chain('A'..='Z')),
            "ascii_lowercase" => out.extend('a'..='z'),
            "ascii_uppercase" => out.extend('A'..='Z'),
            "digits" => out.extend('0'..='9'),
            "hexdigits" => out.extend(('0'..='9').chain('a'..='f').chain('A'..='F')),
            "punctuation" => out.extend("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".chars()),
            literal => out.extend(literal.chars()),
        }
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err(invalid("lookup('password'): `chars` names no characters"));
    }
    Ok(out)
}

/// `lookup('password', 'PATH length=N chars=SETS')`: the password kept in PATH,
/// generated (and written with mode 0600) the first time.
fn password(l: &Lookups, term: &str, length: Option<usize>, chars: Option<&str>) -> Result<String, Error> {
    let mut words = term.split_whitespace();
    let path = words
        .next()
        .ok_or_else(|| invalid("lookup('password') needs a path"))?;
    let (mut length, mut chars) = (length, chars.map(str::to_string));
    for w in words {
        match w.split_once('=') {
            Some(("length", n)) => {
                length = Some(
                    n.parse()
                        .map_err(|_| invalid(format!("lookup('password'): length `{n}` is not a number")))?,
                )
            }
            Some(("chars", c)) => chars = Some(c.to_string()),
            _ => {
                return Err(invalid(format!(
                    "lookup('password'): unknown option `{w}`; troupe has length= and chars="
                )));
            }
        }
    }
    let length = length.unwrap_or(DEFAULT_LENGTH);
    if length == 0 {
        return Err(invalid("lookup('password'): length must be at least 1"));
    }
    let set = charset(chars.as_deref())?;
    let generate = || {
        let mut rng = rand::rng();
        (0..length)
            .map(|_| set[rng.random_range(0..set.len())])
            .collect::<String>()
    };
    if path == "/dev/null" {
        return Ok(generate());
    }
    let p = Path::new(path);
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        let dirs = l.dirs.read().unwrap_or_else(|e| e.into_inner());
        dirs.first().map_or_else(|| p.to_path_buf(), |d| d.join(p))
    };
    let _guard = PASSWORD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let read = |p: &Path| -> Result<String, Error> {
        let text = std::fs::read_to_string(p)
            .map_err(|e| invalid(format!("lookup('password'): cannot read {}: {e}", p.display())))?;
        // Ansible's files may carry ` salt=...` after the password.
        let first = text.lines().next().unwrap_or("");
        let pw = first.split(" salt=").next().unwrap_or("").to_string();
        if pw.is_empty() {
            return Err(invalid(format!("lookup('password'): {} is empty", p.display())));
        }
        Ok(pw)
    };
    if p.exists() {
        return read(&p);
    }
    if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            invalid(format!(
                "lookup('password'): cannot create {}: {e}",
                parent.display()
            ))
        })?;
    }
    let pw = generate();
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)
    {
        Ok(f) => f,
        // another troupe made it in between: use that one
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return read(&p),
        Err(e) => {
            return Err(invalid(format!(
                "lookup('password'): cannot create {}: {e}",
                p.display()
            )));
        }
    };
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| writeln!(f, "{pw}"))
        .and_then(|()| f.sync_all())
        .map_err(|e| invalid(format!("lookup('password'): cannot write {}: {e}", p.display())))?;
    Ok(pw)
}
